#!/usr/bin/env bash
# Install the Debian 12 packages cista needs to build, test and run its demo.
# Runs apt-get update first; uses sudo when not root.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
PKGS=(
  # build
  make meson ninja-build gcc clang pkg-config clang-format
  libssl-dev libjansson-dev libarchive-dev libzstd-dev zlib1g-dev libyaml-dev libtss2-dev
  libevent-dev libsqlite3-dev libpq-dev libfuse3-dev libisal-dev
  # run: opened with dlopen on first use, not linked (docs/development.md); the -dev package
  # above depends on it, named here for hosts that install only what runs
  libpq5
  # tests: unit, sanitizers, fuzz replay
  libcmocka-dev libclang-rt-14-dev
  # integration peers and test images
  postgresql fuse3 gocryptfs runc crun containerd podman redis-server nginx-light redis-tools
  swtpm swtpm-tools tpm2-tools skopeo umoci busybox-static python3 jq openssl curl zstd gzip tar
  time bc sqlite3
  # benchmarks (bench/, on demand)
  wrk
)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
echo "install-deps: ${#PKGS[@]} packages present"
