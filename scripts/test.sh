#!/usr/bin/env bash
# The project's whole test suite, runnable on a fresh machine: installs what
# it needs (jq, the Rust lint components, the deployment validators), then
# runs formatting, clippy, every cargo test and the deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_needed=()
command -v jq >/dev/null 2>&1 || apt_needed+=(jq)
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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked
echo "==> deployment checks"
bash tests/deploy/validate.sh
