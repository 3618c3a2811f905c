#!/usr/bin/env bash
# What the build and the tests need from the system, installed when missing (Debian/Ubuntu).
# Run by hack/dev.sh and hack/test.sh, or on its own: hack/prereqs.sh [--tests].
#
# Each need is checked by the file the build or the tests actually use, not only by a
# binary's presence: protoc alone is not enough, etcd-client's protos import
# google/protobuf/descriptor.proto, which only libprotobuf-dev installs.
#
# Without --tests only what `cargo build` and `baton dev` need is checked (hack/dev.sh);
# with it, also what the tests start (etcd, kubectl).
set -euo pipefail

prereqs_main() {
  local want_tests=0
  [ "${1:-}" = "--tests" ] && want_tests=1

  # need PACKAGE WHY PATH... : the package is missing when none of the paths exists.
  local missing=() reasons=()
  need() {
    local package=$1 why=$2
    shift 2
    local path
    for path in "$@"; do
      if [[ $path == /* ]]; then
        [ -e "$path" ] && return 0
      else
        command -v "$path" >/dev/null 2>&1 && return 0
      fi
    done
    missing+=("$package")
    reasons+=("$package ($why: none of $* found)")
  }

  need protobuf-compiler "etcd-client's build runs protoc" protoc
  need libprotobuf-dev "etcd-client's protos import google/protobuf/descriptor.proto" \
    /usr/include/google/protobuf/descriptor.proto /usr/local/include/google/protobuf/descriptor.proto
  need gcc "crates with C code (ring) build with cc" cc gcc
  need make "the allocator (tikv-jemalloc-sys) builds jemalloc with make" make
  need python3 "examples/web.yaml serves with python3 -m http.server" python3
  if ((want_tests)); then
    need etcd-server "the store and end-to-end tests start a real etcd" etcd
    need bind9-dnsutils "the DNS tests ask the API server's DNS with dig" dig
  fi

  if ((${#missing[@]})); then
    printf '\n==> installing system packages: %s\n' "${missing[*]}"
    printf '    needed: %s\n' "${reasons[@]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      if ! command -v sudo >/dev/null 2>&1; then
        prereqs_fail "not root and no sudo" "${missing[@]}"
        return 1
      fi
      sudo="sudo"
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
      prereqs_fail "apt-get not found (not Debian/Ubuntu)" "${missing[@]}"
      return 1
    fi
    if ! $sudo apt-get update -qq ||
      ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      prereqs_fail "apt-get install failed" "${missing[@]}"
      return 1
    fi
  fi

  # Check again by the same files: a package that installed but did not bring the file
  # (another distribution's layout) must stop here, not three minutes into the build.
  local still=()
  [ -e /usr/include/google/protobuf/descriptor.proto ] ||
    [ -e /usr/local/include/google/protobuf/descriptor.proto ] ||
    still+=("google/protobuf/descriptor.proto (package libprotobuf-dev)")
  command -v protoc >/dev/null 2>&1 || still+=("protoc (package protobuf-compiler)")
  command -v python3 >/dev/null 2>&1 || still+=("python3 (package python3)")
  if ((want_tests)); then
    command -v etcd >/dev/null 2>&1 || still+=("etcd (package etcd-server)")
    command -v dig >/dev/null 2>&1 || still+=("dig (package bind9-dnsutils)")
    if ! command -v kubectl >/dev/null 2>&1; then
      still+=("kubectl: the end-to-end tests drive Baton with the real kubectl; install it from https://kubernetes.io/docs/tasks/tools/")
    fi
  fi
  if ((${#still[@]})); then
    echo "hack/prereqs.sh: still missing after the install step:" >&2
    printf '  - %s\n' "${still[@]}" >&2
    return 1
  fi
}

prereqs_fail() {
  local why=$1
  shift
  echo "hack/prereqs.sh: cannot install $* ($why)." >&2
  echo "Install them by hand (apt-get install -y $*) and run this again." >&2
}

prereqs_main "$@"
