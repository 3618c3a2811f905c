#!/usr/bin/env bash
# Builds Baton (release) and runs a whole cluster on this machine: `baton dev`.
# Arguments are passed on, e.g. hack/dev.sh --agents 5 --listen 127.0.0.1:7443
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages the build needs (protoc and its includes, a C compiler, python3 for the
# examples), installed when missing.
hack/prereqs.sh
cargo build --release --locked -p baton
exec target/release/baton dev "$@"
