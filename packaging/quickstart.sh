#!/usr/bin/env bash
# weft quick start on Debian 12.
#   packaging/quickstart.sh          install dependencies, build, run the main job
#   packaging/quickstart.sh test     install dependencies, build, run the whole test suite
# The build goes to ./build (release-like: -O2 with assertions).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
case "$mode" in
run | test) ;;
-h | --help)
    sed -n '2,5p' "$0"
    exit 0
    ;;
*)
    echo "quickstart: unknown mode '$mode' (use: run, test)" >&2
    exit 2
    ;;
esac

bash packaging/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build
fi
ninja -C build

if [ "$mode" = test ]; then
    # Every suite but the benchmarks: unit, fuse, sync, fault, fuzz (corpus replay).
    exec meson test -C build --no-suite bench --print-errorlogs
fi

# The main job. Until the mount lands this is the tree-CRDT demo: build a
# 10,000-node tree, move things around, fork two replicas, merge them.
echo
echo "== weft-bench-tree: the directory-tree CRDT on 10,000 nodes =="
./build/tests/bench/weft-bench-tree
