#!/usr/bin/env bash
# test-kill9.sh (weft only): kill -9 of the mount daemon. The mount point is
# then stale ("Transport endpoint is not connected"); `weft mount` again must
# clean that up itself, say so, and come back with every byte that was
# fsync'ed before the kill: files and a directory fsync'ed, a rename followed
# by an fsync of its directory, a file fsync'ed and still held open, and a
# stream of records each fsync'ed (all acknowledged ones present). The store
# must open clean: weft status works, weft log works, the mount takes writes,
# and no working copy is left without its file.
source "$(dirname "$0")/lib.sh"
fuse_begin kill9
need_weft "kill -9 of the weft daemon"
fuse_share k9

fsutil write-sync "$MNT/synced.txt" $'fsynced text\n'
mkdir "$MNT/dir"
fsutil write-random "$MNT/dir/synced.bin" 4 >"$FUSE_TMP/synced.sha"
fsutil write-sync "$MNT/dir/before-rename" $'renamed\n'
mv "$MNT/dir/before-rename" "$MNT/dir/after-rename"
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$MNT/dir"
printf 'not synced\n' >"$MNT/unsynced.txt"
fuse_bg fsutil hold-synced "$MNT/held.txt" $'held open\n' "$FUSE_TMP/held.marker"
holder=$FUSE_BG_PID
fuse_bg fsutil acked-writer "$MNT/acked.log" "$FUSE_TMP/acked.ack" 100000
writer=$FUSE_BG_PID
have_acks() { [ "$(wc -l <"$FUSE_TMP/acked.ack" 2>/dev/null || echo 0)" -ge 50 ]; }
wait_until 10 test -e "$FUSE_TMP/held.marker" || fail "the holder did not write held.txt"
wait_until 30 have_acks || fail "the acked writer did not get 50 fsyncs through in 30 s"

# A burst of new files just before the kill: the last of them may be in a
# group of changes not committed yet, which the kill loses, working copies and
# all (the acked writer's fsyncs commit the groups often, so most survive).
mkdir "$MNT/burst"
for i in $(seq 1 200); do printf 'burst %s\n' "$i" >"$MNT/burst/f$i"; done

daemon=$FUSE_DAEMON_PID
kill -9 "$daemon"
wait_until 10 pid_gone "$daemon" || fail "daemon $daemon still alive 10 s after kill -9"
fuse_log "killed daemon $daemon after $(wc -l <"$FUSE_TMP/acked.ack") acknowledged records"
fuse_stop "$writer"
fuse_stop "$holder"
fuse_mounted "$MNT" || fail "the mount point is not listed after the daemon died (expected a stale mount)"
# The root's attributes may still be cached, so ask for something only the
# daemon could answer: a listing, and a name never looked up.
stale_error=$(ls -A "$MNT" 2>&1 >/dev/null || true)
assert_contains "$stale_error" "Transport endpoint is not connected" "ls of the stale mount point"
stale_error=$(stat "$MNT/never-looked-up" 2>&1 >/dev/null || true)
assert_contains "$stale_error" "Transport endpoint is not connected" "lookup in the stale mount point"

weft_mount k9 "$MNT"
fuse_log "weft mount said: $FUSE_MOUNT_OUTPUT"
assert_contains "$FUSE_MOUNT_OUTPUT" stale "weft mount over a stale mount point must say it cleaned it up"
assert_ne "$daemon" "$FUSE_DAEMON_PID" "daemon pid after the remount"

assert_file_content "$MNT/synced.txt" $'fsynced text\n' "fsync'ed file"
assert_eq "$(cat "$FUSE_TMP/synced.sha")" "$(sha256sum <"$MNT/dir/synced.bin" | cut -d' ' -f1)" \
    "sha256 of the fsync'ed binary file"
assert_file_content "$MNT/dir/after-rename" $'renamed\n' "renamed file (directory fsync'ed)"
[ ! -e "$MNT/dir/before-rename" ] || fail "the old name of a renamed file is back"
assert_file_content "$MNT/held.txt" $'held open\n' "file fsync'ed while held open"
fsutil acked-verify "$MNT/acked.log" "$FUSE_TMP/acked.ack" || fail "fsync'ed records lost"
if [ -e "$MNT/unsynced.txt" ]; then
    fuse_log "unsynced.txt survived with $(stat -c %s "$MNT/unsynced.txt") bytes (either way is fine)"
fi

# Every working copy in the store belongs to a file on the mount (nothing was
# deleted): none was left behind by the lost changes.
files_shown=$(find "$MNT" -type f | wc -l)
copies=$(find "$XDG_DATA_HOME/weft/k9/files" -path '*/files/tmp' -prune -o -type f -print | wc -l)
assert_eq "$files_shown" "$copies" "working copies in the store after recovery"
fuse_log "$(find "$MNT/burst" -type f | wc -l) of 200 burst files survived the kill"

assert_status 0 "weft status after recovery" "$WEFT" status
weft_log_json "$MNT/synced.txt" >/dev/null
printf 'after recovery\n' >"$MNT/after.txt"
assert_file_content "$MNT/after.txt" $'after recovery\n' "a write after recovery"
ls -laR "$MNT" >/dev/null
weft_umount "$MNT"
fuse_end
