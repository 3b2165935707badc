#!/usr/bin/env bash
# harness-child.sh MODE MARKER ACTION: a stand-in test for test-harness.sh.
# Mounts (a weft share, or a bindfs that detaches like a daemon), starts a
# process with its cwd in the mount, writes its temp dir to MARKER, then
# ACTION: "block" (wait to be killed: a process that holds on, not a wait
# for a condition) or "fail" (a failed assertion, once MARKER.go exists).
source "$(dirname "$0")/lib.sh"
fuse_begin harness-child
mode=$1 marker=$2 action=$3
if [ "$mode" = weft ]; then
    fuse_share child
else
    mkdir -p "$FUSE_TMP/src" "$FUSE_TMP/mnt"
    MNT=$FUSE_TMP/mnt
    fuse_track_mount "$MNT"
    bindfs "$FUSE_TMP/src" "$MNT" # daemonizes, like weft
    fuse_mounted "$MNT" || fail "bindfs did not mount"
fi
printf 'x\n' >"$MNT/file"
fuse_bg bash -c 'cd "$1" && exec sleep 300' holder "$MNT"
printf '%s %s\n' "$FUSE_TMP" "$MNT" >"$marker.tmp"
mv "$marker.tmp" "$marker"
case $action in
block) sleep 300 ;;
fail) # once the harness has seen the mount
    wait_until 60 test -e "$marker.go" || true
    assert_eq expected got "a deliberately failing check"
    ;;
esac
