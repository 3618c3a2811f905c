#!/usr/bin/env bash
# Benchmarks, on release builds; each prints its figures.
#   hack/bench.sh store      keys/s of the embedded and the etcd store (needs etcd on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  store) cargo bench --locked -p baton-store --bench store ;;
  *)
    echo "usage: hack/bench.sh store" >&2
    exit 2
    ;;
esac
