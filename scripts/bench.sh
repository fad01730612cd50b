#!/usr/bin/env bash
# The end-to-end load benchmark in one command: builds the release agent,
# then runs every scenario (S1-S7) three times against a tansu broker and
# the fake Port API and target on 127.0.0.1, prints the tables and writes
# JSON (target/bench/load-<unix time>.json; benches/results/last.json for a
# standard full run). Options go to the harness, e.g.
#
#   scripts/bench.sh --scenarios s1,s7 --runs 2000 --repeat 1
#   scripts/bench.sh --help
#
# The micro-benchmarks are separate: cargo bench --bench micro
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# librdkafka is built from source by rdkafka-sys.
apt_needed=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed+=("$pkg")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
  echo "==> installing ${apt_needed[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

# The same broker as the integration tests (scripts/test.sh).
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TANSU_VERSION=0.6.0
if ! command -v tansu >/dev/null 2>&1; then
  echo "==> installing tansu ${TANSU_VERSION} (first run only; takes a while)"
  cargo install tansu --version "${TANSU_VERSION}" --locked --no-default-features --features dynostore
fi

echo "==> cargo build --release"
cargo build --release --locked
echo "==> cargo bench --bench load -- $*"
exec cargo bench --locked --bench load -- "$@"
