#!/usr/bin/env bash
# Smoke test of an installed weft (the Debian package, as CI installs it):
# a share is created, mounted with weft and with mount(8) (fstab options and
# an fstab line too), written and read back, unmounted; the systemd units
# pass systemd-analyze verify; bash completes weft's commands and shares.
#   packaging/smoke-test.sh
# Needs root, for mount(8). Works in a temporary XDG_DATA_HOME and leaves
# nothing mounted or behind, even when a step fails.
set -euo pipefail

weft=/usr/bin/weft
share=smoke
work=$(mktemp -d /tmp/weft-smoke.XXXXXX)
mnt=$work/mnt
export XDG_DATA_HOME=$work/data
daemon_pid=

step() { printf '\nsmoke: %s\n' "$*"; }
die() {
    echo "smoke: FAILED: $*" >&2
    exit 1
}
mounted() { grep -qF " $mnt " /proc/self/mountinfo; }

# A daemon outlives umount(8) by the moment it takes to commit and close the
# share; the next mount must wait for that (weft umount waits by itself).
wait_daemon_gone() {
    local tries
    for ((tries = 0; tries < 100; tries++)); do
        if [ -z "$daemon_pid" ] || ! kill -0 "$daemon_pid" 2>/dev/null; then
            daemon_pid=
            return 0
        fi
        sleep 0.1
    done
    echo "smoke: weft daemon $daemon_pid still running 10 s after its unmount" >&2
    return 1
}

note_daemon() {
    mounted || die "$mnt is not mounted"
    daemon_pid=$("$weft" status "$share" --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
    [ -n "$daemon_pid" ] || die "weft status does not show $share mounted"
}

cleanup() {
    local rc=$?
    if mounted; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    fi
    wait_daemon_gone || rc=1
    rm -rf "$work"
    if [ "$rc" -eq 0 ]; then
        echo "smoke: all passed"
    else
        echo "smoke: failed (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || die "run as root: mount(8) needs it"
[ -x "$weft" ] || die "$weft is not installed"
mkdir "$mnt"

step "weft --help and init"
"$weft" --help >/dev/null
"$weft" init "$share" --device-name smoke-host

step "weft mount, write, read, weft umount"
"$weft" mount "$share" "$mnt"
note_daemon
echo "written through weft mount" >"$mnt/hello.txt"
[ "$(cat "$mnt/hello.txt")" = "written through weft mount" ] || die "read back differs"
"$weft" log "$mnt/hello.txt"
"$weft" umount "$mnt"
mounted && die "still mounted after weft umount"
daemon_pid=

step "mount -t fuse.weft: the file survived, write another, umount(8)"
mount -t fuse.weft "$share" "$mnt"
note_daemon
grep -F " $mnt " /proc/self/mountinfo
[ "$(cat "$mnt/hello.txt")" = "written through weft mount" ] || die "file lost across remount"
echo "written through mount(8)" >"$mnt/second.txt"
umount "$mnt"
wait_daemon_gone || die "the daemon outlived its unmount"

step "mount -t fuse.weft with fstab options mount(8) and systemd consume"
mount -t fuse.weft -o noauto,_netdev,nofail,x-systemd.automount,defaults,nosuid,nodev \
    "$share" "$mnt"
note_daemon
[ "$(cat "$mnt/second.txt")" = "written through mount(8)" ] || die "read back differs"
umount "$mnt"
wait_daemon_gone || die "the daemon outlived its unmount"

step "mount -t fuse.weft -o ro: writes are refused"
mount -t fuse.weft -o ro "$share" "$mnt"
note_daemon
grep -F " $mnt " /proc/self/mountinfo | grep -q ' ro[, ]' || die "not mounted read-only"
if (echo nope >"$mnt/third.txt") 2>/dev/null; then die "a read-only mount took a write"; fi
"$weft" umount "$mnt"
daemon_pid=

step "an /etc/fstab line (mount -T FILE, so the real fstab is left alone)"
printf '%s %s fuse.weft noauto,x-systemd.automount,_netdev,allow_other 0 0\n' \
    "$share" "$mnt" >"$work/fstab"
mount -T "$work/fstab" "$mnt"
note_daemon
grep -F " $mnt " /proc/self/mountinfo | grep -q allow_other || die "allow_other not passed on"
[ "$(cat "$mnt/hello.txt")" = "written through weft mount" ] || die "read back differs"
umount "$mnt"
wait_daemon_gone || die "the daemon outlived its unmount"

step "an option weft cannot honour is refused, and nothing is mounted"
if mount -t fuse.weft -o noexec "$share" "$mnt" 2>"$work/err"; then
    die "mount -o noexec succeeded"
fi
cat "$work/err"
mounted && die "a refused mount left $mnt mounted"

step "systemd-analyze verify the installed units"
mapfile -t units < <(dpkg -L weft | grep -E '/systemd/(system|user)/[^/]+\.service$')
[ ${#units[@]} -eq 2 ] || die "expected 2 units in the package, found: ${units[*]}"
# It checks Documentation=man: pages with man(1) when there is one.
man_check=--man=yes
command -v man >/dev/null || man_check=--man=no
for unit in "${units[@]}"; do
    case $unit in
    */user/*@.service)
        # A template is verified through an instance; a user manager needs a
        # runtime directory even to verify.
        instance=${unit%@.service}@$share.service
        mkdir -p "$work/runtime"
        echo "verify --user $instance"
        XDG_RUNTIME_DIR=$work/runtime systemd-analyze --user "$man_check" verify "$instance"
        ;;
    *)
        echo "verify $unit"
        systemd-analyze "$man_check" verify "$unit"
        ;;
    esac
done

step "bash completion: commands and share names"
completions=$(
    bash -c '
        source /usr/share/bash-completion/bash_completion
        _completion_loader weft
        try() { COMP_LINE="$*" COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<<"$*"
            COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _weft; echo "${COMPREPLY[*]}"; }
        try weft mo
        try weft mount sm
    '
)
echo "$completions"
[ "$completions" = $'mount\nsmoke' ] || die "expected completions 'mount' and 'smoke'"
