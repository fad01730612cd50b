#!/usr/bin/env bash
# The project's whole test suite, runnable on a fresh machine: installs what
# it needs (jq, the Rust lint components, the deployment validators), then
# runs formatting, clippy, every cargo test and the deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_needed=()
command -v jq >/dev/null 2>&1 || apt_needed+=(jq)
# librdkafka is built from source by rdkafka-sys (with OpenSSL for SASL_SSL).
for pkg in build-essential pkg-config libssl-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed+=("$pkg")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
  echo "==> installing ${apt_needed[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

if [ ! -d ../shared/vectors ]; then
  echo "error: ../shared/vectors is missing (the golden test vectors live beside this repository)" >&2
  exit 1
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

# tansu: the real Kafka-protocol broker the integration tests start on
# 127.0.0.1. `cargo install` returns at once when this version is installed.
TANSU_VERSION=0.6.0
if ! cargo install --list 2>/dev/null | grep -q "^tansu v${TANSU_VERSION}:"; then
  echo "==> installing tansu ${TANSU_VERSION} (first run only; takes a while)"
  cargo install tansu --version "${TANSU_VERSION}" --locked --no-default-features --features dynostore
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked
echo "==> deployment checks"
bash tests/deploy/validate.sh
