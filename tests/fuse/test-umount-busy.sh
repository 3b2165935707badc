#!/usr/bin/env bash
# test-umount-busy.sh (weft only): `weft umount` of a mount that is in use
# exits 1 with a message saying it is busy, and leaves the mount working: once
# because a process has its cwd inside, once because a process holds a file
# open. When the process is gone, `weft umount` succeeds, the mount point is a
# plain directory again and the daemon exits.
source "$(dirname "$0")/lib.sh"
fuse_begin umount-busy
need_weft "unmounting a busy weft mount"
fuse_share busy
mkdir "$MNT/d"
printf 'still here\n' >"$MNT/f"
daemon=$FUSE_DAEMON_PID

cwd_is() { [ "$(readlink "/proc/$1/cwd")" = "$2" ]; }
fd_is() { [ "$(readlink "/proc/$1/fd/$2")" = "$3" ]; }

busy_check() { # busy_check WHAT
    run_capture "$WEFT" umount "$MNT"
    [ "$FUSE_RC" = 1 ] || fail "$1: weft umount of a busy mount exited $FUSE_RC, expected 1" \
        "(stdout: $FUSE_OUT; stderr: $FUSE_ERR)"
    assert_contains "$FUSE_ERR" busy "$1: weft umount's error message"
    fuse_log "$1: weft umount said: $FUSE_ERR"
    fuse_mounted "$MNT" || fail "$1: the mount is gone after a refused unmount"
    assert_file_content "$MNT/f" $'still here\n' "$1: the mount still works after a refused unmount"
    pid_alive "$daemon" || fail "$1: the daemon exited after a refused unmount"
}

# A process whose cwd is in the mount (a holder: killed below, not a wait).
fuse_bg bash -c 'cd "$1" && exec sleep 300' holder "$MNT/d"
holder=$FUSE_BG_PID
wait_until 10 cwd_is "$holder" "$MNT/d" || fail "the holder never entered $MNT/d"
busy_check "a process with its cwd inside"
fuse_stop "$holder"

# A process holding a file open.
fuse_bg bash -c 'exec 3<"$1" && exec sleep 300' holder "$MNT/f"
holder=$FUSE_BG_PID
wait_until 10 fd_is "$holder" 3 "$MNT/f" || fail "the holder never opened $MNT/f"
busy_check "a process holding a file open"
fuse_stop "$holder"

weft_umount "$MNT" "$daemon"
[ -z "$(ls -A "$MNT")" ] || fail "the mount point is not an empty directory after unmount"
fuse_end
