#!/usr/bin/env bash
# Installs every Debian 12 package weft's build, tests and benchmarks need
# (the list is .ci/packages, shared with CI). Idempotent; needs root.
set -euo pipefail

mapfile -t packages < <(grep -v '^#' "$(dirname "$0")/../.ci/packages" | grep -v '^$')

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
