#!/usr/bin/env bash
# The Loop: runs the whole test suite and N chaos seeds, again and again, and writes one
# JSON line per test per run to target/loop/results.jsonl (name, run, seed, pass, seconds,
# first failure line). Every test runs in its own process (cargo-nextest), with its own free
# ports and temporary directories; nothing is retried: a flake is a bug to find.
#
#   hack/loop.sh N [RUNS]    N chaos seeds per run (default 3); RUNS runs (default: until
#                            stopped with Ctrl-C). Seeds are drawn at random and printed.
#   hack/loop-report         turns the lines into target/loop/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: hack/loop.sh N [RUNS]   (N chaos seeds per run; RUNS runs, default until stopped)"
seeds=${1:-3}
runs=${2:-0}
for value in "$seeds" "$runs"; do
  if [[ ! $value =~ ^[0-9]+$ ]]; then
    echo "hack/loop.sh: '$value' is not a whole number" >&2
    echo "$usage" >&2
    exit 2
  fi
done

hack/prereqs.sh --tests
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest (crates.io): the Loop runs every test in its own process"
  cargo install --locked cargo-nextest
fi

out=target/loop
mkdir -p "$out"
results=$out/results.jsonl
junit=target/nextest/loop/junit.xml
random_seed='binary(chaos) and test(=a_random_seed_keeps_every_promise)'
run=$(( $(python3 hack/loop-report --last-run "$results") + 1 ))

echo "==> building the tests"
cargo nextest run --locked --workspace --profile loop --no-run

done_runs=0
while (( runs == 0 || done_runs < runs )); do
  started=$SECONDS
  echo "==> run $run: the suite"
  rm -f "$junit"
  # Failures are recorded, not fatal: the Loop goes on.
  # The suite with the chaos seeds that once failed; the random seeds run next, one by one.
  cargo nextest run --locked --workspace --profile loop -E "not ($random_seed)" >"$out/run-$run.log" 2>&1 || true
  python3 hack/loop-report --lines "$junit" --run "$run" >>"$results"
  for _ in $(seq 1 "$seeds"); do
    seed=$(( (RANDOM << 15 | RANDOM) % 1000000 ))
    echo "==> run $run: chaos seed $seed"
    rm -f "$junit"
    BATON_CHAOS_SEED=$seed cargo nextest run --locked --profile loop -p baton --test chaos -E "$random_seed" \
      >"$out/run-$run-chaos-$seed.log" 2>&1 || true
    python3 hack/loop-report --lines "$junit" --run "$run" --seed "$seed" >>"$results"
  done
  failed=$(python3 hack/loop-report --failures "$results" --run "$run")
  echo "==> run $run done in $((SECONDS - started)) s: $failed"
  run=$((run + 1))
  done_runs=$((done_runs + 1))
done
python3 hack/loop-report "$results"
