#!/usr/bin/env bash
# Benchmarks, on release builds; each prints its figures.
#   hack/bench.sh store      keys/s of the embedded and the etcd store (needs etcd on PATH)
#   hack/bench.sh placement  placements/s: 100,000 instances of mixed apps on 10,000 agents
#   hack/bench.sh plan       plan time of a steady tick (p50, p99; one thread, then all cores) and of a change, at 100,000 instances
#   hack/bench.sh api        writes/s and latency of the API server with 200 watchers (needs etcd)
#   hack/bench.sh status     store writes/min of an agent with 1,000 healthy instances probed every 1 s
#   hack/bench.sh drain      a scheduled drain of 100 of 1,000 agents (5,000 apps) and a defragmentation, in simulated time
#   hack/bench.sh failover   leader changes in 30 min (MINUTES=…) with both cores saturated, default election TTL (needs etcd)
#   hack/bench.sh cluster    etcd + API server + 2 controllers + 10,000 hollow agents: 100,000 instances, a rolling upgrade, failover (SCALE=0.1 for a tenth; needs etcd)
#                            with etcd 3.5 instead of the 3.4 on PATH: PATH="$(hack/etcd-3.5.sh):$PATH" hack/bench.sh cluster
#   hack/bench.sh start      create → first instance Running (p50, p99) over 100 apps with real processes on baton dev
#   hack/bench.sh share      fair shares of 500 tenants (400 bursty, one steady with large instances) and a guarantee reclaimed, in simulated ticks
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  store) cargo bench --locked -p baton-store --bench store ;;
  placement) cargo bench --locked -p baton-controllers --bench placement ;;
  plan) cargo bench --locked -p baton-controllers --bench plan ;;
  api) cargo bench --locked -p baton --bench api ;;
  status) cargo bench --locked -p baton-agent --bench status_writes ;;
  drain) cargo bench --locked -p baton-controllers --bench drain ;;
  share) cargo bench --locked -p baton-controllers --bench share ;;
  failover) cargo bench --locked -p baton --bench failover ;;
  start) cargo bench --locked -p baton --bench start ;;
  cluster) cargo bench --locked -p baton --bench cluster ;;
  *)
    echo "usage: hack/bench.sh store|placement|plan|api|status|drain|share|failover|start|cluster" >&2
    exit 2
    ;;
esac
