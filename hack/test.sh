#!/usr/bin/env bash
# Runs every check CI runs, on a fresh Debian/Ubuntu machine too: installs the system
# packages the build and the tests need when they are missing (and the PyPI packages the
# Helm chart's checks use), checks the chart (strict lint, offline render, Kubernetes
# schemas), checks formatting, runs clippy with warnings as errors, and runs every test in
# the workspace (the end-to-end tests start real processes: baton, kubectl, etcd, and the
# instances).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)   # etcd-client's build runs protoc
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)            # the real etcd the store tests start
command -v python3 >/dev/null 2>&1 || missing+=(python3)             # examples/web.yaml serves with python3
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is not on PATH: the end-to-end tests drive Baton with the real kubectl." >&2
  echo "Install it (https://kubernetes.io/docs/tasks/tools/) and run hack/test.sh again." >&2
  exit 1
fi

if ! python3 -c "import helm_python, kubernetes_validate, yaml" >/dev/null 2>&1; then
  step "installing hack/chart-requirements.txt (PyPI)"
  python3 -m pip install -q --disable-pip-version-check -r hack/chart-requirements.txt
fi

step "helm chart: lint, render, validate"
python3 hack/chart.py check

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
started=$SECONDS
cargo test --workspace --locked
echo "tests passed in $((SECONDS - started)) s"
