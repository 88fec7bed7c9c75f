#!/usr/bin/env bash
# Longer fuzzing: runs every property/fuzz test (`fuzz_*`: component bytes,
# capability manifests, HTTP patterns, agent names, wire budgets and grants,
# run input, LLM provider answers, OCI references and manifests) with many
# more cases, round after round with fresh random inputs, until DURATION has
# passed.
# Stops at the first failure; proptest saves the failing input under a
# `proptest-regressions/` directory next to the test, and reruns it first
# from then on: fix the bug and commit that file as its regression test.
#
#   scripts/fuzz.sh [DURATION]        DURATION like 90s, 10m, 2h (default 10m)
#
# Each round runs the parser properties with PARSER_CASES cases each
# (default 50,000) and the component tests, which compile every case, with
# COMPONENT_CASES (default 300); a round takes about half a minute on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10m}
case "$duration" in
  *h) secs=$(( ${duration%h} * 3600 )) ;;
  *m) secs=$(( ${duration%m} * 60 )) ;;
  *s) secs=${duration%s} ;;
  *[!0-9]*|'') echo "fuzz.sh: DURATION must be like 90s, 10m or 2h, not '$duration'" >&2; exit 2 ;;
  *) secs=$duration ;;
esac
case "$secs" in
  ''|*[!0-9]*) echo "fuzz.sh: DURATION must be like 90s, 10m or 2h, not '$duration'" >&2; exit 2 ;;
esac

parser_cases=${PARSER_CASES:-50000}
component_cases=${COMPONENT_CASES:-300}
if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null; fi

# The component tests live in the `warden` test binary; the parser
# properties everywhere else.
components='test(/^fuzz::fuzz_/) & binary(warden)'
parsers="test(/fuzz_/) & !($components)"
run() {
  cargo nextest run --workspace --no-fail-fast --status-level fail --final-status-level fail "$@"
}
echo "fuzz.sh: building once"
cargo nextest run --workspace --no-run >/dev/null
end=$(( SECONDS + secs ))
round=0
while (( SECONDS < end )); do
  round=$(( round + 1 ))
  echo "fuzz.sh: round $round, $(( end - SECONDS )) s left ($parser_cases cases per parser property, $component_cases per component test)"
  PROPTEST_CASES=$parser_cases run -E "$parsers"
  PROPTEST_CASES=$component_cases run -E "$components"
done
echo "fuzz.sh: $round rounds in $duration, no failure"
