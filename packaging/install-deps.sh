#!/usr/bin/env bash
# Installs every Debian 12 package weft's build, tests and benchmarks need.
# Idempotent; needs root (apt-get). Used by quickstart.sh and .ci/run.
set -euo pipefail

packages=(
    # build
    build-essential meson ninja-build pkg-config clang
    # libraries (see README.md for why each is there)
    libfuse3-dev fuse3 libsodium-dev libuv1-dev libsqlite3-dev
    # tests: trace loading (gzip + JSON), the sqlite3 shell
    zlib1g-dev libcjson-dev sqlite3
    # tests: fuse suite (real programs on the mount; python3 for tests/fuse/fsutil.py;
    # vim, not vim-tiny, which has no /usr/bin/vim) and fs-bench (bindfs as the
    # FUSE reference)
    vim git tar python3 bindfs
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: these packages are missing: ${missing[*]}" >&2
    echo "install-deps: run this script as root (sudo $0) to install them" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
