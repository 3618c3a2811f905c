#!/usr/bin/env bash
# Benchmarks, on release builds; each prints its figures.
#   hack/bench.sh store      keys/s of the embedded and the etcd store (needs etcd on PATH)
#   hack/bench.sh placement  placements/s: 100,000 instances of mixed apps on 10,000 agents
#   hack/bench.sh api        writes/s and latency of the API server with 200 watchers (needs etcd)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  store) cargo bench --locked -p baton-store --bench store ;;
  placement) cargo bench --locked -p baton-controllers --bench placement ;;
  api) cargo bench --locked -p baton --bench api ;;
  *)
    echo "usage: hack/bench.sh store|placement|api" >&2
    exit 2
    ;;
esac
