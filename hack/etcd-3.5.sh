#!/usr/bin/env bash
# Fetches etcd 3.5 (Debian 13's etcd-server package, checked against its SHA-256) into
# target/etcd-3.5.16/ and prints the directory that holds its `etcd`, for benchmarks that
# compare it with the etcd 3.4 on PATH (docs/performance.md):
#   PATH="$(hack/etcd-3.5.sh):$PATH" hack/bench.sh cluster
# Nothing is installed system-wide; a second run only prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

version=3.5.16-4
sha256=0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b
url="http://deb.debian.org/debian/pool/main/e/etcd/etcd-server_${version}_amd64.deb"
dir="$PWD/target/etcd-3.5.16"
bin="$dir/usr/bin"

if [ ! -x "$bin/etcd" ]; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "etcd-3.5.sh: fetches the amd64 package; this machine is $(uname -m)" >&2
    exit 1
  fi
  for tool in curl dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || { echo "etcd-3.5.sh: needs $tool" >&2; exit 1; }
  done
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "etcd-3.5.sh: fetching $url" >&2
  if ! curl -fsS --retry 3 -o "$tmp/etcd.deb" "$url"; then
    echo "etcd-3.5.sh: could not fetch $url (is deb.debian.org reachable?)" >&2
    exit 1
  fi
  echo "$sha256  $tmp/etcd.deb" | sha256sum -c --quiet - >&2 || {
    echo "etcd-3.5.sh: $url is not the package this script knows (SHA-256 differs)" >&2
    exit 1
  }
  dpkg-deb -x "$tmp/etcd.deb" "$tmp/root"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir"
  mv "$tmp/root" "$dir"
fi
"$bin/etcd" --version | head -1 >&2
echo "$bin"
