#!/usr/bin/env bash
# test-harness.sh: the test harness itself (lib.sh) cleans up however a test
# ends. A stand-in test (harness-child.sh) mounts a FUSE file system whose
# daemon detached (weft, or bindfs in native mode) and leaves a process with
# its cwd in it; then it is ended four ways: as meson ends a test that timed
# out (SIGTERM to its process group, SIGKILL 0.5 s later), SIGKILL of the
# test shell alone (the reaper cleans up), SIGINT to the group (Ctrl-C), and
# a failed check. Each time: nothing mounted, no process left, temp dir gone.
source "$(dirname "$0")/lib.sh"
fuse_begin harness
if weft_mode; then
    child_mode=weft
else
    command -v bindfs >/dev/null || skip "native mode needs bindfs for a FUSE mount to clean up"
    child_mode=bindfs
fi

# child_fail HOW MESSAGE: fail, showing what the child and the reaper said.
child_fail() {
    printf -- '--- log of the %s child:\n' "$1" >&2
    cat "$FUSE_TMP/log/child-$1.log" >&2 || true
    printf -- '--- end of %s/weft-test-reaper.log:\n' "${TMPDIR:-/tmp}" >&2
    tail -n 20 "${TMPDIR:-/tmp}/weft-test-reaper.log" >&2 2>/dev/null || true
    fail "$1: $2"
}

run_child() { # run_child HOW: start, wait for the marker, end it HOW, check
    local how=$1 marker=$FUSE_TMP/marker-$1 child child_tmp child_mnt status=0
    local action=block
    [ "$how" = fail ] && action=fail
    # A background job of a script starts with SIGINT ignored; a test run from
    # a terminal has it at default, so restore that.
    setsid env --default-signal=INT bash "$FUSE_LIB_DIR/harness-child.sh" "$child_mode" \
        "$marker" "$action" >"$FUSE_TMP/log/child-$how.log" 2>&1 </dev/null &
    child=$!
    wait_until 60 test -e "$marker" || child_fail "$how" "the child test never got its mount up"
    read -r child_tmp child_mnt <"$marker"
    fuse_mounted "$child_mnt" || child_fail "$how" "child's mount is not there"
    case $how in
    fail) touch "$marker.go" ;;
    meson-timeout)
        kill -TERM -- "-$child"
        wait_until 0.5 pid_gone "$child" 2>/dev/null || kill -KILL -- "-$child" 2>/dev/null || true
        ;;
    sigkill-shell) kill -KILL "$child" ;;
    sigint) kill -INT -- "-$child" ;;
    esac
    if ! wait_until 30 pid_gone "$child"; then
        kill -KILL -- "-$child" 2>/dev/null
        child_fail "$how" "the child test did not end within 30 s"
    fi
    wait "$child" || status=$?
    [ "$how" != fail ] || [ "$status" = 1 ] || child_fail "$how" "the failing child exited $status, expected 1"
    no_mount() { ! fuse_mounted "$child_mnt"; }
    no_tmp() { [ ! -e "$child_tmp" ]; }
    no_procs() { [ -z "$(fuse_tagged_pids "$child_tmp")" ]; }
    wait_until 60 no_mount || child_fail "$how" "$child_mnt is still mounted"
    wait_until 30 no_procs || child_fail "$how" "processes left: $(fuse_tagged_pids "$child_tmp")"
    wait_until 30 no_tmp || child_fail "$how" "$child_tmp was not removed"
    fuse_log "$how: child exited $status; mount, processes and temp dir all gone"
}

run_child meson-timeout
run_child sigkill-shell
run_child sigint
run_child fail
fuse_end
