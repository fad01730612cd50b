#!/usr/bin/env bash
# Mutation testing (cargo-mutants) of the security and delivery core, one
# module at a time, each with the tests that cover it: the module's unit
# tests and the integration modules docs/testing.md names for its claims.
#
#   bash scripts/mutants.sh                 # every module (hours on 2 cores)
#   bash scripts/mutants.sh signature guard # some modules
#   bash scripts/mutants.sh --list          # the mutants, without running them
#   MUTANTS_ARGS="--in-diff my.diff" bash scripts/mutants.sh redact
#
# Results: mutants-out/<module>/mutants.out (missed.txt and timeout.txt: the
# survivors of both passes; caught.txt and unviable.txt: the last pass's
# only); the module's counts are the last line printed for it. A missed
# mutant is either killed by a better test or listed, with the reason it is
# equivalent, in docs/testing.md ("Mutation testing"). Not part of .ci/run:
# each mutant rebuilds the test binaries (about a minute on 2 cores). With
# CARGO_TARGET_DIR set, the mutated copies build there: the dependencies
# built for the tests are reused instead of a cold build per module.
# cargo-mutants runs $CARGO (or cargo): on a shared machine, CARGO=a wrapper
# that takes a lock serialises its builds with the others' (then raise the
# timeouts, MUTANTS_ARGS).
set -euo pipefail
cd "$(dirname "$0")/.."

MUTANTS_VERSION=27.0.0
if ! cargo install --list 2>/dev/null | grep -q "^cargo-mutants v${MUTANTS_VERSION}:"; then
  echo "==> installing cargo-mutants ${MUTANTS_VERSION}"
  cargo install cargo-mutants --version "${MUTANTS_VERSION}" --locked
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# tests/it starts tansu for some of the modules below.
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
install_tansu

# module -> file, and the test filters (unit tests of the lib and the
# integration binary `it`, both filtered by these substrings).
declare -A FILE=(
  [signature]=src/signature.rs
  [guard]=src/guard.rs
  [redact]=src/redact.rs
  [offsets]=src/source/offsets.rs
  [reload]=src/mapping/reload.rs
  [report]=src/report.rs
  [summary]=src/report/summary.rs
  [bounded-read]=src/http.rs
)
declare -A FILTERS=(
  [signature]="signature vectors::incoming vectors::outgoing security::"
  [guard]="guard:: security_edges:: security::"
  [redact]="redact:: security:: security_edges:: pipeline::s12 claims_polling::polling_logs logs::"
  [offsets]="offsets:: kafka_mock::"
  [reload]="reload::"
  [report]="report:: report_path:: pipeline:: run_logs:: security_edges::the_replay_window_fails_closed"
  [summary]="report:: report_path:: pipeline:: polling:: security_edges::the_replay_window_fails_closed security:: kafka_mock::a_panic"
  [bounded-read]="http:: security::a_long_answer_is_cut_at_the_cap security::an_answer_of_exactly_the_cap"
)
# Only the bounded read of src/http.rs.
declare -A RE=([bounded-read]="read_bounded")
ORDER=(signature guard reload bounded-read offsets redact report summary)

list=false
modules=()
for a in "$@"; do
  case "$a" in
    --list) list=true ;;
    *) [ -n "${FILE[$a]:-}" ] || { echo "unknown module $a (one of: ${ORDER[*]})" >&2; exit 2; }
       modules+=("$a") ;;
  esac
done
[ ${#modules[@]} -gt 0 ] || modules=("${ORDER[@]}")

for m in "${modules[@]}"; do
  # One module: the config's files minus the others (`--file` would add to
  # the config's examine_globs, not narrow them).
  # shellcheck disable=SC2206
  args=(--output "mutants-out/$m" --profile mutants ${MUTANTS_ARGS:-})
  for other in "${ORDER[@]}"; do
    [ "${FILE[$other]}" = "${FILE[$m]}" ] || args+=(--exclude "${FILE[$other]}")
  done
  [ -n "${RE[$m]:-}" ] && args+=(--re "${RE[$m]}")
  if $list; then
    cargo-mutants mutants --list "${args[@]}"
    continue
  fi
  echo "==> mutants of ${FILE[$m]} (tests: ${FILTERS[$m]})"
  mkdir -p "mutants-out/$m"
  start=$(date +%s)
  # Two passes: the unit tests alone (a mutant rebuilds only the lib's test
  # binary), then the integration tests for the mutants the first pass did
  # not catch (--iterate skips the caught ones).
  # shellcheck disable=SC2086
  cargo-mutants mutants "${args[@]}" -- --lib -- ${FILTERS[$m]} || true
  out="mutants-out/$m/mutants.out"
  count() { if [ -f "$out/$1.txt" ]; then wc -l < "$out/$1.txt"; else echo 0; fi; }
  total=$(cat "$out/caught.txt" "$out/missed.txt" "$out/timeout.txt" "$out/unviable.txt" 2>/dev/null | wc -l)
  unit_caught=$(count caught)
  unviable=$(count unviable)
  echo "==> $m, unit tests: $total tried, $unit_caught caught, $unviable unviable"
  it_caught=0
  if [ $(( $(count missed) + $(count timeout) )) -gt 0 ]; then
    # The second pass rewrites caught.txt, missed.txt, timeout.txt and
    # unviable.txt with its own mutants only; its previously_caught.txt
    # lists the first pass's caught AND unviable mutants (cargo-mutants
    # skips both), so it is not a count of caught mutants.
    # shellcheck disable=SC2086
    cargo-mutants mutants "${args[@]}" --iterate -- --lib --test it -- ${FILTERS[$m]} || true
    it_caught=$(count caught)
    unviable=$(( unviable + $(count unviable) ))
  fi
  echo "==> $m: $(( $(date +%s) - start )) s; $total tried; $(( unit_caught + it_caught )) caught ($unit_caught by the unit tests, $it_caught more by the integration tests); $(count missed) missed, $(count timeout) timeout, $unviable unviable"
done
