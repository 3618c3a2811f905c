#!/usr/bin/env bash
# Fuzzes what the API server reads from requests (bodies, patches, selectors, queries,
# validation, group paths, constraints) with many more random cases than CI runs: each case
# must not panic, must finish within 5 s and must allocate at most 256 bytes per byte of input
# (plus 16 MiB). See apiserver/src/fuzz.rs.
#   hack/fuzz.sh            100,000 cases per property
#   hack/fuzz.sh 1000000    as many as you like
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
if ! [[ "$cases" =~ ^[0-9]+$ ]] || [ "$cases" -eq 0 ]; then
  echo "hack/fuzz.sh: the number of cases must be a positive whole number, got '$cases'" >&2
  exit 2
fi
hack/prereqs.sh
echo "fuzzing with $cases cases per property (a failing case is printed, shrunk, with its input)"
started=$SECONDS
BATON_FUZZ_CASES="$cases" cargo test --locked --release -p baton-apiserver --lib fuzz -- --test-threads 2
echo "fuzzed $cases cases per property in $((SECONDS - started)) s"
