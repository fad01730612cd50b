#!/usr/bin/env bash
# The end-to-end load benchmark in one command: builds the release agent,
# then runs every scenario (S1-S8) three times on each broker, tansu and
# librdkafka's mock cluster (its own process, over TCP; rows "S1-mock"…;
# S5 and S6 on tansu only: their backlogs exceed the mock's 5 MiB/partition),
# with the fake Port API and target on 127.0.0.1, prints the tables side by
# side and writes JSON (target/bench/load-<unix time>.json;
# benches/results/last.json for a standard full run). Options go to the
# harness, e.g.
#
#   scripts/bench.sh --scenarios s1,s7 --runs 2000 --repeat 1
#   scripts/bench.sh --scenarios s1 --broker mock     # one broker only
#   scripts/bench.sh --help
#
# The micro-benchmarks are separate: cargo bench --bench micro
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
install_packages
install_tansu

echo "==> cargo build --release"
cargo build --release --locked
# Both brokers unless --broker is given.
args=("$@")
case " $* " in
*" --broker "* | *" --broker="*) ;;
*) args=(--broker tansu,mock "${args[@]}") ;;
esac
echo "==> cargo bench --bench load -- ${args[*]}"
exec cargo bench --locked --bench load -- "${args[@]}"
