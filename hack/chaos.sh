#!/usr/bin/env bash
# Runs one chaos seed: a real cluster (etcd, API server, two controllers, three agents, real
# processes) driven by the random actions and faults the seed draws, then the recorded
# history checked against Baton's promises. A failing run prints the seed, every step, every
# violation and the end of every component's log; the same seed replays the same steps.
#
#   hack/chaos.sh SEED [STEPS]     STEPS: how many actions and faults (default 30, ~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: hack/chaos.sh SEED [STEPS]   (SEED and STEPS are whole numbers)"
seed=${1:-}
steps=${2:-30}
if [[ ! $seed =~ ^[0-9]+$ ]]; then
  echo "hack/chaos.sh: SEED must be a whole number, not '${seed}'" >&2
  echo "$usage" >&2
  exit 2
fi
if [[ ! $steps =~ ^[0-9]+$ ]]; then
  echo "hack/chaos.sh: STEPS must be a whole number, not '${steps}'" >&2
  echo "$usage" >&2
  exit 2
fi

hack/prereqs.sh --tests
BATON_CHAOS_SEED=$seed BATON_CHAOS_STEPS=$steps \
  exec cargo test --locked -p baton --test chaos -- --nocapture
