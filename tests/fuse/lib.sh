# tests/fuse/lib.sh: setup, cleanup, waiting and assertions shared by the FUSE
# integration tests (and by tests/bench/fs-bench). Sourced, never run.
#
# A test does:
#
#     source "$(dirname "$0")/lib.sh"
#     fuse_begin posix            # temp dir, traps, reaper; picks weft or native mode
#     fuse_share s                # $MNT: a live weft mount of share "s", or a plain dir
#     ...                         # checks
#     fuse_end                    # exit 0, or 1 if a soft check failed
#
# Modes. WEFT_TEST_NATIVE=1 runs every test against a plain directory, to prove
# the test's own logic; weft-only checks (node identity, remount, kill -9 of the
# daemon, busy unmount) are skipped and say so. Otherwise $WEFT must name the
# weft binary (meson passes it); without it the test exits 77 (skip).
#
# Cleanup. Every exit path (success, failure, set -e, INT, TERM) runs the EXIT
# trap, which kills what the test started, unmounts every mount it made (`weft
# umount`, then `fusermount3 -u`, then a lazy unmount), stops the daemons and
# removes the temp dir. meson's timeout sends SIGTERM to the test's process
# group and SIGKILL half a second later, which can cut the trap short; so
# fuse_begin also starts a reaper in its own session that waits (on a pidfd)
# for the test shell to die and then runs the same teardown. Processes are
# found by a tag every child inherits (WEFT_TEST_TAG in their environment), so
# a daemon that detached into its own session is found too.
#
# Environment knobs: WEFT, WEFT_TEST_NATIVE, WEFT_TEST_KEEP=1 (keep the temp
# dir), TMPDIR (where temp dirs go), WEFT_FUSE_BUILD_DIR (the C helpers),
# WEFT_TEST_MOUNT_OPTIONS (passed to every `weft mount` as -o, e.g.
# nopassthrough to test file data served through the daemon).

set -Eeuo pipefail
shopt -s inherit_errexit

FUSE_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
FUSE_FAILURES=0
FUSE_BG_PIDS=()
FUSE_MOUNT_SEQ=0

# ---------------------------------------------------------------------------
# messages and assertions

fuse_log() {
    printf '# %s\n' "$*" >&2
}

# fail MESSAGE: the test fails now.
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# skip MESSAGE: the whole test is skipped (meson shows SKIP).
skip() {
    printf 'SKIP: %s\n' "$*" >&2
    exit 77
}

# check_fail MESSAGE: a soft failure; the test goes on and fuse_end exits 1.
check_fail() {
    printf 'FAIL: %s\n' "$*" >&2
    FUSE_FAILURES=$((FUSE_FAILURES + 1))
}

# assert_eq EXPECTED GOT WHAT / check_eq (soft)
assert_eq() {
    [ "$1" == "$2" ] || fail "$3: expected '$1', got '$2'"
}
check_eq() {
    if [ "$1" == "$2" ]; then
        return 0
    fi
    check_fail "$3: expected '$1', got '$2'"
    return 1
}
assert_ne() {
    [ "$1" != "$2" ] || fail "$3: expected something other than '$1'"
}

# assert_contains HAYSTACK NEEDLE WHAT: case-insensitive substring.
assert_contains() {
    local haystack=${1,,} needle=${2,,}
    [[ $haystack == *"$needle"* ]] || fail "$3: expected text containing '$2', got '$1'"
}

# assert_file_content FILE EXPECTED WHAT: compares the whole content (exactly,
# including a trailing newline if EXPECTED has one).
assert_file_content() {
    local got
    got=$(cat "$1" && printf x) || fail "$3: cannot read $1"
    got=${got%x}
    [ "$got" == "$2" ] || fail "$3: $1: expected content $(printf '%q' "$2"), got $(printf '%q' "$got")"
}
check_file_content() {
    local got
    if ! got=$(cat "$1" && printf x); then
        check_fail "$3: cannot read $1"
        return 1
    fi
    got=${got%x}
    if [ "$got" != "$2" ]; then
        check_fail "$3: $1: expected content $(printf '%q' "$2"), got $(printf '%q' "$got")"
        return 1
    fi
}

# assert_status EXPECTED WHAT CMD...: runs CMD, which must exit EXPECTED. Its
# stdout and stderr are kept in $FUSE_OUT and $FUSE_ERR.
FUSE_OUT=
FUSE_ERR=
FUSE_RC=0
run_capture() {
    local out_file=$FUSE_TMP/.state/out err_file=$FUSE_TMP/.state/err
    FUSE_RC=0
    "$@" >"$out_file" 2>"$err_file" || FUSE_RC=$?
    FUSE_OUT=$(cat "$out_file")
    FUSE_ERR=$(cat "$err_file")
}
assert_status() {
    local expected=$1 what=$2
    shift 2
    run_capture "$@"
    if [ "$FUSE_RC" != "$expected" ]; then
        printf '%s\n' "--- stdout of: $*" "$FUSE_OUT" "--- stderr:" "$FUSE_ERR" >&2
        fail "$what: '$*' exited $FUSE_RC, expected $expected"
    fi
}

# wait_until SECONDS CMD [ARG...]: polls CMD (every 10 ms, backing off to 200
# ms) until it succeeds; returns 1 and says what it waited for if it does not
# within SECONDS (may have a fraction: 0.5). Use as `wait_until 10 cond || fail "..."`.
wait_until() {
    local seconds=$1 micros whole frac
    shift
    if [[ $seconds == *.* ]]; then
        whole=${seconds%.*} frac=${seconds#*.}000000
        micros=$((${whole:-0} * 1000000 + 10#${frac:0:6}))
    else
        micros=$((seconds * 1000000))
    fi
    local now=${EPOCHREALTIME/./} delay=0.01
    local deadline=$((now + micros))
    while :; do
        if "$@"; then
            return 0
        fi
        now=${EPOCHREALTIME/./}
        if ((now >= deadline)); then
            printf '# wait_until: gave up after %ss waiting for: %s\n' "$seconds" "$*" >&2
            return 1
        fi
        sleep "$delay"
        case $delay in
        0.01) delay=0.02 ;;
        0.02) delay=0.05 ;;
        0.05) delay=0.1 ;;
        *) delay=0.2 ;;
        esac
    done
}

# now_s: seconds since the epoch with microseconds, for timing.
now_s() {
    printf '%s' "$EPOCHREALTIME"
}

# ---------------------------------------------------------------------------
# modes

weft_mode() {
    [ "$FUSE_MODE" = weft ]
}

# weft_only WHAT: true in weft mode; in native mode says WHAT is skipped.
weft_only() {
    if weft_mode; then
        return 0
    fi
    fuse_log "skipped in native mode: $*"
    return 1
}

# need_weft WHAT: the whole test needs a weft mount; skip it in native mode.
need_weft() {
    weft_mode || skip "native mode (WEFT_TEST_NATIVE=1): $*"
}

# need_cmd CMD...: skip unless every CMD is installed.
need_cmd() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || skip "'$cmd' is not installed (see packaging/install-deps.sh)"
    done
}

# helper NAME: path of a C helper built by meson (tests/fuse/NAME).
helper() {
    local dir=${WEFT_FUSE_BUILD_DIR:-}
    if [ -z "$dir" ] || [ ! -x "$dir/$1" ]; then
        fail "C helper '$1' not found: run through meson, or set WEFT_FUSE_BUILD_DIR=<build>/tests/fuse"
    fi
    printf '%s/%s' "$dir" "$1"
}

# fsutil ARGS...: the Python helper (tree generator, manifests, log parsing).
fsutil() {
    python3 "$FUSE_LIB_DIR/fsutil.py" "$@"
}

# ---------------------------------------------------------------------------
# processes and mounts

# fuse_mounted DIR: DIR is a mount point (stale or live), per mountinfo. Does
# not stat DIR, which would fail on a stale FUSE mount.
fuse_mounted() {
    awk -v dir="$1" '$5 == dir { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# fuse_mounts_under DIR: every mount point at or below DIR, deepest first.
fuse_mounts_under() {
    awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print length($5) "\t" $5 }' \
        /proc/self/mountinfo | sort -rn | cut -f2-
}

# pid_alive PID: running (a zombie counts as gone).
pid_alive() {
    local state
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
pid_gone() {
    ! pid_alive "$1"
}

# fuse_tagged_pids TMP: processes whose environment carries this test's tag.
fuse_tagged_pids() {
    local tag="WEFT_TEST_TAG=$1" file pid files matches
    # The list is made before grep starts, so grep never lists itself. A
    # process's environ file shows the environment it was started with, so the
    # test shell itself (which exported the tag later) is not listed either.
    files=(/proc/[0-9]*/environ)
    matches=$(grep -lzxF -- "$tag" "${files[@]}" 2>/dev/null) || true
    for file in $matches; do
        pid=${file#/proc/}
        pid=${pid%/environ}
        if [ "$pid" != "$$" ] && [ "$pid" != "$BASHPID" ] && pid_alive "$pid"; then
            echo "$pid"
        fi
    done
}

# fuse_bg CMD...: runs CMD in the background; its pid is $FUSE_BG_PID; it is
# killed and reaped at exit if still running.
FUSE_BG_PID=
fuse_bg() {
    "$@" &
    FUSE_BG_PID=$!
    FUSE_BG_PIDS+=("$FUSE_BG_PID")
}

# fuse_tree PID: PID and its descendants, children first (a job running a
# shell function is a subshell whose program is its child).
fuse_tree() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        fuse_tree "$child"
    done
    echo "$1"
}

# fuse_kill_tree SIGNAL PID: signals PID and all its descendants.
fuse_kill_tree() {
    local pid
    for pid in $(fuse_tree "$2"); do
        kill "-$1" "$pid" 2>/dev/null || true
    done
}

# fuse_stop PID: kills a background job (and what it started) and reaps it.
fuse_stop() {
    local tree
    tree=$(fuse_tree "$1")
    fuse_kill_tree TERM "$1"
    tree_gone() {
        local pid
        for pid in $tree; do
            pid_gone "$pid" || return 1
        done
    }
    if ! wait_until 5 tree_gone; then
        for pid in $tree; do
            kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    wait "$1" 2>/dev/null || true
}

fuse_track_mount() {
    echo "$1" >>"$FUSE_TMP/.state/mounts"
}
fuse_track_daemon() {
    echo "$1" >>"$FUSE_TMP/.state/daemons"
}

# fuse_daemon_pid NAME: the pid of the mount daemon of share NAME.
fuse_daemon_pid() {
    local file=$XDG_DATA_HOME/weft/$1/mount.pid pid
    [ -r "$file" ] || fail "no $file while share '$1' is mounted (the daemon must write its pid there)"
    pid=$(head -n 1 "$file" | tr -d '[:space:]')
    [[ $pid =~ ^[0-9]+$ ]] || fail "$file holds '$pid', expected a pid"
    printf '%s' "$pid"
}

# weft_mount NAME DIR: mounts share NAME on DIR. `weft mount` must return only
# once the mount is live. Its output (and the daemon's, which inherits it) goes
# to $FUSE_TMP/log/mount-N.log and is printed if the test fails; it is also
# kept in $FUSE_MOUNT_OUTPUT. Sets $FUSE_DAEMON_PID.
FUSE_MOUNT_OUTPUT=
FUSE_DAEMON_PID=
weft_mount() {
    local name=$1 dir=$2 log rc=0
    FUSE_MOUNT_SEQ=$((FUSE_MOUNT_SEQ + 1))
    log=$FUSE_TMP/log/mount-$FUSE_MOUNT_SEQ.log
    fuse_track_mount "$dir"
    timeout -k 5 60 "$WEFT" mount "$name" "$dir" ${WEFT_TEST_MOUNT_OPTIONS:+-o "$WEFT_TEST_MOUNT_OPTIONS"} \
        >"$log" 2>&1 </dev/null || rc=$?
    # Only what `weft mount` itself printed before returning; the daemon may
    # go on writing to the same file.
    FUSE_MOUNT_OUTPUT=$(cat "$log")
    if [ "$rc" != 0 ]; then
        printf '%s\n' "--- output of weft mount $name $dir:" "$FUSE_MOUNT_OUTPUT" >&2
        fail "weft mount $name $dir exited $rc"
    fi
    fuse_mounted "$dir" || fail "weft mount $name $dir exited 0 but $dir is not a mount point"
    FUSE_DAEMON_PID=$(fuse_daemon_pid "$name")
    pid_alive "$FUSE_DAEMON_PID" || fail "daemon pid $FUSE_DAEMON_PID (from mount.pid) is not running"
    fuse_track_daemon "$FUSE_DAEMON_PID"
    stat "$dir" >/dev/null || fail "weft mount returned but stat $dir fails"
}

# weft_umount DIR: unmounts cleanly; the daemon must exit within 15 s.
weft_umount() {
    local dir=$1 pid=${2:-$FUSE_DAEMON_PID}
    assert_status 0 "weft umount" timeout -k 5 60 "$WEFT" umount "$dir"
    ! fuse_mounted "$dir" || fail "weft umount $dir exited 0 but $dir is still a mount point"
    if [ -n "$pid" ]; then
        wait_until 15 pid_gone "$pid" || fail "daemon $pid still running 15 s after weft umount"
    fi
}

# fuse_bindfs_mount SRC DIR: a bindfs mount (the reference FUSE file system of
# fs-bench and of the harness test), run in the foreground as a tracked daemon.
fuse_bindfs_mount() {
    local src=$1 dir=$2 pid
    FUSE_MOUNT_SEQ=$((FUSE_MOUNT_SEQ + 1))
    fuse_track_mount "$dir"
    bindfs -f "$src" "$dir" >"$FUSE_TMP/log/bindfs-$FUSE_MOUNT_SEQ.log" 2>&1 </dev/null &
    pid=$!
    fuse_track_daemon "$pid"
    wait_until 20 fuse_mounted "$dir" ||
        fail "bindfs $src $dir did not mount: $(cat "$FUSE_TMP/log/bindfs-$FUSE_MOUNT_SEQ.log")"
    FUSE_DAEMON_PID=$pid
}

# fuse_share NAME: makes $MNT, the directory under test: share NAME mounted
# by weft, or a plain directory in native mode.
MNT=
fuse_share() {
    local name=$1
    MNT=$FUSE_TMP/mnt-$name
    mkdir -p "$MNT"
    if weft_mode; then
        assert_status 0 "weft init $name" "$WEFT" init "$name"
        weft_mount "$name" "$MNT"
        fuse_log "weft mount of share '$name' on $MNT (daemon $FUSE_DAEMON_PID): $(fuse_mount_options "$MNT")"
    else
        fuse_log "native directory $MNT ($(stat -f -c %T "$MNT"))"
    fi
}

# fuse_mount_options DIR: the mount's fs type and options (both option fields
# of mountinfo), e.g. "fuse.weft rw,nosuid,nodev,relatime,user_id=0,...".
fuse_mount_options() {
    awk -v dir="$1" '$5 == dir { for (i = 7; $i != "-"; i++); print $(i + 1), $6 "," $(i + 3) }' \
        /proc/self/mountinfo | tail -1
}

# ---------------------------------------------------------------------------
# weft log

# weft_log_json PATH: `weft log PATH --json`, checked to be one JSON object of
# the documented shape (fsutil.py log-check says what is wrong).
weft_log_json() {
    local out=$FUSE_TMP/.state/log.json
    "$WEFT" log "$1" --json >"$out" || fail "weft log $1 --json exited $?"
    fsutil log-check "$out" >&2 || fail "weft log $1 --json: output is not of the documented shape"
    cat "$out"
}

# weft_node PATH: the node id (32 hex digits) of PATH.
weft_node() {
    weft_log_json "$1" | fsutil log-field - node
}

# weft_versions PATH: how many versions `weft log` lists.
weft_versions() {
    weft_log_json "$1" | fsutil log-field - count
}

# weft_newest PATH FIELD: a field (version, time, author, size, text) of the
# newest version.
weft_newest() {
    weft_log_json "$1" | fsutil log-field - "newest.$2"
}

# weft_log_fields PATH FIELD...: several fields from one `weft log --json`,
# space separated, e.g. `read -r node count < <(weft_log_fields f node count)`.
weft_log_fields() {
    local path=$1
    shift
    weft_log_json "$path" | fsutil log-field - "$@"
}

# weft_settled PATH: the newest version has the file's current size, i.e. the
# last write has been committed (use before counting versions).
weft_settled() {
    local size
    size=$("$WEFT" log "$1" --json 2>/dev/null | fsutil log-field - newest.size 2>/dev/null) || return 1
    [ "$size" = "$(stat -c %s "$1")" ]
}

# versions_above PATH N: true once PATH has more than N versions (commits can
# land just after close returns: FUSE's release is asynchronous).
versions_above() {
    local count
    count=$("$WEFT" log "$1" --json 2>/dev/null | fsutil log-field - count 2>/dev/null) || return 1
    [ "$count" -gt "$2" ]
}

# ---------------------------------------------------------------------------
# begin, end, teardown

# fuse_begin NAME: the mode, then a private temp dir, environment, traps and
# reaper (fuse_init_tmp).
fuse_begin() {
    local name=$1
    FUSE_TEST_NAME=$name
    if [ "${WEFT_TEST_NATIVE:-0}" = 1 ]; then
        FUSE_MODE=native
    elif [ -n "${WEFT:-}" ]; then
        [ -x "$WEFT" ] || fail "WEFT=$WEFT is not an executable"
        [ -c /dev/fuse ] || skip "/dev/fuse is missing: this machine cannot mount FUSE file systems"
        command -v fusermount3 >/dev/null || skip "fusermount3 is missing (apt-get install fuse3)"
        FUSE_MODE=weft
    else
        skip "no weft binary (meson target weft_exe, fs/meson.build, not built yet);" \
            "set WEFT_TEST_NATIVE=1 to run this test against a plain directory"
    fi
    fuse_init_tmp "$name"
    fuse_log "test $name, mode $FUSE_MODE${WEFT:+ (WEFT=$WEFT)}, temp dir $FUSE_TMP"
}

# fuse_init_tmp NAME: the part of fuse_begin that fs-bench uses too: the temp
# dir, the environment, the traps and the reaper.
fuse_init_tmp() {
    local name=$1 base
    command -v python3 >/dev/null || fail "python3 is needed by tests/fuse/fsutil.py"
    base=$(cd "${TMPDIR:-/tmp}" && pwd -P)
    FUSE_TMP=$(mktemp -d "$base/weft-$name.XXXXXX")
    mkdir -p "$FUSE_TMP/.state" "$FUSE_TMP/log" "$FUSE_TMP/data" "$FUSE_TMP/home"
    : >"$FUSE_TMP/.state/mounts"
    : >"$FUSE_TMP/.state/daemons"
    printf '%s\n' "${WEFT:-}" >"$FUSE_TMP/.state/weft"
    FUSE_MAIN_PID=$$

    # The reaper does not carry any test's tag, so no teardown kills it.
    env -u WEFT_TEST_TAG python3 "$FUSE_LIB_DIR/fsutil.py" reaper "$$" "$FUSE_TMP" "$FUSE_LIB_DIR/lib.sh" \
        "$base/weft-test-reaper.log" </dev/null >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
    wait_until 60 test -e "$FUSE_TMP/.state/reaper-ready" ||
        fail "the reaper (tests/fuse/fsutil.py reaper) did not start within 60 s"

    export WEFT_TEST_TAG=$FUSE_TMP
    export XDG_DATA_HOME=$FUSE_TMP/data
    export HOME=$FUSE_TMP/home
    export LC_ALL=C
    # Sanitizer reports of every process the test starts (the daemon too,
    # whose stderr nobody reads) go to files the teardown checks.
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$FUSE_TMP/log/sanitizer"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$FUSE_TMP/log/sanitizer"
    export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=weft-test GIT_AUTHOR_EMAIL=test@weft.invalid
    export GIT_COMMITTER_NAME=weft-test GIT_COMMITTER_EMAIL=test@weft.invalid
    umask 022

    trap 'fuse__exit_trap' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    trap 'fuse__err_trap "$LINENO" "$BASH_COMMAND"' ERR
}

fuse__err_trap() {
    # Only where set -e is about to end the main shell; helpers that fail
    # inside a condition do not get here.
    [ "$BASHPID" = "$FUSE_MAIN_PID" ] || return 0
    printf 'FAIL: line %s: command exited non-zero: %s\n' "$1" "$2" >&2
}

# fuse_end: the test's verdict after its soft checks.
fuse_end() {
    if [ "$FUSE_FAILURES" -gt 0 ]; then
        fail "$FUSE_FAILURES check(s) failed"
    fi
    exit 0 # the EXIT trap cleans up, then says whether the test passed
}

fuse__exit_trap() {
    local status=$? pid
    trap - ERR
    set +e
    [ "$BASHPID" = "$FUSE_MAIN_PID" ] || return "$status"
    cd / || true # the shell's own cwd must not hold a mount busy
    # Reap our own background jobs first, so nothing still holds the mount.
    for pid in "${FUSE_BG_PIDS[@]}"; do
        pid_alive "$pid" && fuse_stop "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$status" != 0 ] && [ "$status" != 77 ]; then
        fuse__print_logs "$FUSE_TMP"
    fi
    if ! fuse__teardown "$FUSE_TMP" trap && [ "$status" = 0 ]; then
        printf 'FAIL: the cleanup found problems (see above)\n' >&2
        status=1
    fi
    if [ "$status" = 0 ] && [ -n "${FUSE_TEST_NAME:-}" ]; then
        fuse_log "test $FUSE_TEST_NAME passed ($FUSE_MODE mode)"
    fi
    exit "$status"
}

fuse__print_logs() {
    local file
    for file in "$1"/log/*.log; do
        [ -s "$file" ] || continue
        printf -- '--- last lines of %s:\n' "${file#"$1"/}" >&2
        tail -n 40 "$file" >&2
    done
}

fuse__session_leader() {
    local sid
    sid=$(sed -E 's/^.*\) \S+ \S+ \S+ (\S+) .*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$sid" = "$1" ]
}

# fuse__unmount DIR WEFT: every way there is, gentlest first. The connection
# of a dead or hung daemon is aborted (if fusectl is mounted) before the lazy
# unmount, so nothing waits on it forever.
fuse__unmount() {
    local dir=$1 weft=$2 conn
    if [ -n "$weft" ] && [ -x "$weft" ]; then
        timeout -k 2 20 "$weft" umount "$dir" >/dev/null 2>&1 && ! fuse_mounted "$dir" && return 0
    fi
    timeout -k 2 10 fusermount3 -u "$dir" >/dev/null 2>&1 && ! fuse_mounted "$dir" && return 0
    timeout -k 2 10 umount "$dir" >/dev/null 2>&1 && ! fuse_mounted "$dir" && return 0
    conn=$(awk -v dir="$dir" '$5 == dir { split($3, d, ":"); print d[2] }' /proc/self/mountinfo | tail -1)
    if [ -n "$conn" ] && [ -w "/sys/fs/fuse/connections/$conn/abort" ]; then
        echo 1 >"/sys/fs/fuse/connections/$conn/abort" 2>/dev/null
    fi
    timeout -k 2 10 fusermount3 -uz "$dir" >/dev/null 2>&1 && ! fuse_mounted "$dir" && return 0
    timeout -k 2 10 umount -l "$dir" >/dev/null 2>&1 && ! fuse_mounted "$dir" && return 0
    return 1
}

# fuse__teardown TMP WHO: stop everything the test under TMP started and
# remove TMP. Shared by the EXIT trap (WHO=trap) and the reaper (WHO=reaper).
# Returns 1 if something had to be forced that a clean test leaves clean (a
# mount or a daemon still there).
fuse__teardown() {
    local tmp=$1 who=$2 weft dir pid problem=0 daemons=() stragglers=()
    [ -d "$tmp/.state" ] || return 0
    weft=$(cat "$tmp/.state/weft" 2>/dev/null)
    mapfile -t daemons <"$tmp/.state/daemons"

    # 1. Everything the test started except its daemons: it may hold a mount
    # busy. A daemon we did not track (it detached: a session leader) is left
    # for after the unmount.
    mapfile -t stragglers < <(fuse_tagged_pids "$tmp")
    for pid in "${stragglers[@]}"; do
        [[ " ${daemons[*]} " == *" $pid "* ]] && continue
        fuse__session_leader "$pid" && continue
        echo "teardown ($who): killing leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
        kill -KILL "$pid" 2>/dev/null
    done

    # 2. Every mount the test made, and anything else mounted under TMP.
    local mounts
    mapfile -t mounts < <(
        tac "$tmp/.state/mounts" 2>/dev/null
        fuse_mounts_under "$tmp"
    )
    for dir in "${mounts[@]}"; do
        [ -n "$dir" ] && fuse_mounted "$dir" || continue
        # A test may well end with its share still mounted: not a problem.
        [ "$who" = trap ] || echo "teardown ($who): unmounting $dir" >&2
        if ! fuse__unmount "$dir" "$weft"; then
            echo "teardown ($who): could not unmount $dir" >&2
            problem=1
        fi
    done

    # 3. The daemons: they should exit once unmounted.
    for pid in "${daemons[@]}"; do
        [ -n "$pid" ] || continue
        if ! wait_until 10 pid_gone "$pid" 2>/dev/null; then
            echo "teardown ($who): daemon $pid did not exit after unmount; killing it" >&2
            problem=1
            kill -TERM "$pid" 2>/dev/null
            wait_until 3 pid_gone "$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done

    # 4. Anything left that carries the tag.
    mapfile -t stragglers < <(fuse_tagged_pids "$tmp")
    for pid in "${stragglers[@]}"; do
        echo "teardown ($who): killing leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
        kill -KILL "$pid" 2>/dev/null
        problem=1
    done

    # 5. Sanitizer reports (ASan, UBSan, LSan) from any process of the test.
    local report
    for report in "$tmp"/log/sanitizer.*; do
        [ -e "$report" ] || continue
        echo "teardown ($who): sanitizer report ${report#"$tmp"/}:" >&2
        head -n 60 "$report" >&2
        problem=1
    done

    # 6. The temp dir, unless something is still mounted in it.
    if [ -n "$(fuse_mounts_under "$tmp")" ]; then
        echo "teardown ($who): $tmp still has mounts; leaving it" >&2
        return 1
    fi
    if [ "${WEFT_TEST_KEEP:-0}" = 1 ]; then
        echo "teardown ($who): keeping $tmp (WEFT_TEST_KEEP=1)" >&2
        rm -rf "$tmp/.state"
    else
        rm -rf --one-file-system "$tmp"
    fi
    return "$problem"
}

# When run as a program (by the reaper): lib.sh teardown TMP
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = teardown ]; then
    set +e
    trap - ERR
    fuse__teardown "$2" reaper
    exit 0
fi
