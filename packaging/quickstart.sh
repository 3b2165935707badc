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

# The main job: a share called "demo", mounted on ~/weft-demo (or
# $WEFT_DEMO_DIR), ready to use from any program.
share=${WEFT_DEMO_SHARE:-demo}
mountpoint=${WEFT_DEMO_DIR:-$HOME/weft-demo}
weft=$PWD/build/fs/weft
data=${XDG_DATA_HOME:-$HOME/.local/share}/weft
if [ ! -f "$data/$share/store.db" ]; then
    "$weft" init "$share"
fi
mkdir -p "$mountpoint"
if grep -q " $(realpath "$mountpoint") .* - fuse.weft " /proc/self/mountinfo 2>/dev/null; then
    echo "quickstart: $mountpoint is already mounted"
else
    "$weft" mount "$share" "$mountpoint"
fi
cat <<EOF

weft is mounted on $mountpoint. Use it like any folder:
    cd $mountpoint && echo hello > notes.txt && cat notes.txt
    $weft log $mountpoint/notes.txt     # the file's versions
    $weft status                        # shares and where they are mounted
    $weft umount $mountpoint            # unmount (commits what is pending)
Run "$weft --help" for every command.
EOF
