#!/usr/bin/env bash
# The Loop: runs the whole test suite and N chaos seeds, again and again, and keeps one
# JSON line per test per run (name, run, seed, pass, seconds, first failure line, commit,
# start time). Each finished run is one file, docs/loop/run-NNNN.jsonl.gz, in the repository:
# the record outlives the machine it was made on, so commit it. Every test runs in its own
# process (cargo-nextest), with its own free ports and temporary directories; nothing is
# retried: a flake is a bug to find.
#
#   hack/loop.sh N [RUNS]    N chaos seeds per run (default 3); RUNS runs (default: until
#                            stopped with Ctrl-C). Seeds are drawn at random and printed.
#   hack/loop-report         turns the record into target/loop/report.html.
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
record=docs/loop
mkdir -p "$out" "$record"
junit=target/nextest/loop/junit.xml
random_seed='binary(chaos) and test(=a_random_seed_keeps_every_promise)'
run=$(( $(python3 hack/loop-report --last-run "$record") + 1 ))

echo "==> building the tests"
cargo nextest run --locked --workspace --profile loop --no-run

done_runs=0
while (( runs == 0 || done_runs < runs )); do
  started=$SECONDS
  # The run's lines gather here; the run goes into the record only once it is whole.
  lines=$out/run-$run.jsonl
  rm -f "$lines"
  echo "==> run $run: the suite"
  rm -f "$junit"
  # Failures are recorded, not fatal: the Loop goes on.
  # The suite with the chaos seeds that once failed; the random seeds run next, one by one.
  cargo nextest run --locked --workspace --profile loop -E "not ($random_seed)" >"$out/run-$run.log" 2>&1 || true
  python3 hack/loop-report --lines "$junit" --run "$run" >>"$lines"
  for _ in $(seq 1 "$seeds"); do
    seed=$(( (RANDOM << 15 | RANDOM) % 1000000 ))
    echo "==> run $run: chaos seed $seed"
    rm -f "$junit"
    BATON_CHAOS_SEED=$seed cargo nextest run --locked --profile loop -p baton --test chaos -E "$random_seed" \
      >"$out/run-$run-chaos-$seed.log" 2>&1 || true
    python3 hack/loop-report --lines "$junit" --run "$run" --seed "$seed" >>"$lines"
  done
  python3 hack/loop-report --keep "$lines" --into "$record"
  failed=$(python3 hack/loop-report --failures "$record" --run "$run")
  echo "==> run $run done in $((SECONDS - started)) s: $failed"
  run=$((run + 1))
  done_runs=$((done_runs + 1))
done
python3 hack/loop-report "$record"
