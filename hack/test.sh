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

# System packages the build and the tests need, checked by the files they use.
hack/prereqs.sh --tests

if ! python3 -c "import helm_python, kubernetes_validate, yaml" >/dev/null 2>&1; then
  step "installing hack/chart-requirements.txt (PyPI)"
  if ! python3 -m pip install -q --disable-pip-version-check -r hack/chart-requirements.txt; then
    echo "hack/test.sh: could not install the PyPI packages of hack/chart-requirements.txt" >&2
    echo "(helm-python-sdk, kubernetes-validate, PyYAML: the Helm chart's checks use them)." >&2
    echo "Install them by hand (python3 -m pip install -r hack/chart-requirements.txt) and run this again." >&2
    exit 1
  fi
fi

step "helm chart: lint, render, validate"
python3 hack/chart.py check

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# The chaos test runs one seed, a different one each run unless BATON_CHAOS_SEED is set; it
# is printed here, so that a run that passed still says which story it told.
export BATON_CHAOS_SEED=${BATON_CHAOS_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000 ))}
echo "chaos seed: $BATON_CHAOS_SEED (replay it: hack/chaos.sh $BATON_CHAOS_SEED)"
started=$SECONDS
cargo test --workspace --locked
echo "tests passed in $((SECONDS - started)) s"
