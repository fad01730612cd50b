#!/usr/bin/env bash
# The project's whole test suite, runnable on a fresh machine: installs what
# it needs (jq, the Rust lint components, the deployment validators), then
# runs formatting, clippy, every cargo test and the deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
# jq is the reference of the differential test.
install_packages jq

if [ ! -d ../shared/vectors ]; then
  echo "error: ../shared/vectors is missing (the golden test vectors live beside this repository)" >&2
  exit 1
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

install_tansu

# tests/it/claims_cli.rs runs examples/generate.py, which encrypts with the
# `cryptography` package.
if ! python3 -c 'import cryptography' 2>/dev/null; then
  echo "==> installing the Python cryptography package"
  python3 -m pip install --quiet cryptography ||
    python3 -m pip install --quiet --break-system-packages cryptography
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
# --workspace: the root package and the testkit crate of tests/ and benches/.
# fault-injection: the test build of the binary can abort on a chosen run
# (tests/it/crash_loop.rs); release builds and the image never have it.
echo "==> cargo clippy"
cargo clippy --locked --all-targets --workspace --features port-agent/fault-injection -- -D warnings
echo "==> cargo test"
cargo test --locked --workspace --features port-agent/fault-injection
echo "==> deployment checks"
bash tests/deploy/validate.sh
