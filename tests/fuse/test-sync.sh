#!/usr/bin/env bash
# test-sync.sh (weft only): three devices and a relay on 127.0.0.1, each
# device a real mount with its own data directory.
#
#   - A creates a share with the relay; B and C join it by token (weft invite,
#     weft join) and restore it from the relay; a change on any mount shows on
#     the others without polling;
#   - with the relay down, A and B each make one side of every row of the
#     design's concurrency table, and edit one text file with editors' saves
#     (sed -i, write-temp-and-rename); the relay comes back and all three
#     mounts converge to the same tree, with both edits in the text;
#   - B's daemon is killed with SIGKILL in the middle of a sync, remounted,
#     and converges with nothing lost or duplicated;
#   - B syncs with A directly (weft peer add) while the relay is down;
#   - A removes C (weft device remove): B keeps reading A's changes, C reads
#     nothing written after;
#   - D joins from the relay alone (A, B and C unmounted) and its mount equals
#     theirs, history included (D learns the new key from the removal).
source "$(dirname "$0")/lib.sh"
fuse_begin sync
need_weft "sync between weft mounts"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
relay_addr=127.0.0.1:$(free_port)
a_listen=127.0.0.1:$(free_port)
export WEFT_SYNC_BACKOFF_MAX_MS=1000
relay_pid= relay_runs=0
start_relay() {
    relay_runs=$((relay_runs + 1))
    local log=$FUSE_TMP/log/relay-$relay_runs.log
    fuse_bg "$WEFT" relay --listen "$relay_addr" --data "$FUSE_TMP/relay" >"$log" 2>&1
    relay_pid=$FUSE_BG_PID
    wait_until 20 grep -q "listening on" "$log" || fail "the relay did not start (see $log)"
}
stop_relay() {
    fuse_stop "$relay_pid"
}

# dev X CMD...: runs CMD as device X (its own data directory).
dev() {
    local name=$1
    shift
    XDG_DATA_HOME=$FUSE_TMP/dev-$name "$@"
}
declare -A daemon
mount_dev() { # mount_dev X: mounts device X's share ("s" + X) on $FUSE_TMP/mnt-X
    # After a kill -9 the mount point is stale: stat may fail on it (weft mount cleans it up).
    fuse_mounted "$FUSE_TMP/mnt-$1" || mkdir -p "$FUSE_TMP/mnt-$1"
    XDG_DATA_HOME=$FUSE_TMP/dev-$1 weft_mount "s$1" "$FUSE_TMP/mnt-$1"
    daemon[$1]=$FUSE_DAEMON_PID
}
umount_dev() {
    XDG_DATA_HOME=$FUSE_TMP/dev-$1 weft_umount "$FUSE_TMP/mnt-$1" "${daemon[$1]}"
}
join_dev() { # join_dev X TOKEN: device X joins (restores, then mounts) as share "s" + X
    mkdir -p "$FUSE_TMP/mnt-$1" "$FUSE_TMP/dev-$1"
    fuse_track_mount "$FUSE_TMP/mnt-$1"
    dev "$1" timeout -k 5 120 "$WEFT" join "$2" "$FUSE_TMP/mnt-$1" --name "s$1" \
        >"$FUSE_TMP/log/join-$1.log" 2>&1 || {
        cat "$FUSE_TMP/log/join-$1.log" >&2
        fail "weft join on device $1 failed"
    }
    daemon[$1]=$(XDG_DATA_HOME=$FUSE_TMP/dev-$1 fuse_daemon_pid "s$1")
    fuse_track_daemon "${daemon[$1]}"
}
sync_json() { dev "$1" "$WEFT" status "s$1" --json; }
relay_connected() { sync_json "$1" | grep -q '"relay_connected": true'; }

# What a mount shows, as one text: every entry with its type and, for files, a digest.
manifest() {
    (cd "$FUSE_TMP/mnt-$1" && find . -mindepth 1 -printf '%y %p\n' | LC_ALL=C sort |
        while read -r type path; do
            if [ "$type" = f ]; then
                printf '%s %s %s\n' "$type" "$path" "$(sha256sum <"$path" | cut -c1-16)"
            else
                printf '%s %s\n' "$type" "$path"
            fi
        done)
}
same_as() { [ "$(manifest "$1")" = "$(manifest "$2")" ]; }
has() { [ -e "$FUSE_TMP/mnt-$1/$2" ] && [ "$(cat "$FUSE_TMP/mnt-$1/$2")" = "$3" ]; }
converged() { same_as a b && same_as a c; }
wait_converged() {
    if ! wait_until "${1:-60}" converged; then
        diff <(manifest a) <(manifest b) >&2 || true
        diff <(manifest a) <(manifest c) >&2 || true
        fail "the three mounts did not converge: $2"
    fi
}

# ---------------------------------------------------------------------------
# A creates the share; B and C join by token from the relay.
start_relay
dev a "$WEFT" init sa --relay "$relay_addr" --device-name alpha >/dev/null
mount_dev a
A=$FUSE_TMP/mnt-a B=$FUSE_TMP/mnt-b C=$FUSE_TMP/mnt-c
wait_until 20 relay_connected a || fail "device A did not connect to the relay"
mkdir "$A/docs"
printf 'hello\n' >"$A/docs/hello.txt"
head -c 300000 /dev/urandom >"$A/photo.bin"
for i in 1 2 3 4 5; do printf 'line %s\n' "$i"; done >"$A/notes.txt"
token_b=$(dev a "$WEFT" invite sa --device-name beta 2>/dev/null)
token_c=$(dev a "$WEFT" invite sa --device-name gamma 2>/dev/null)
token_d=$(dev a "$WEFT" invite sa --device-name delta 2>/dev/null)
[[ $token_b == weft1-* ]] || fail "weft invite printed no token: '$token_b'"
join_dev b "$token_b"
join_dev c "$token_c"
wait_converged 30 "after B and C joined"
cmp "$A/photo.bin" "$B/photo.bin" || fail "B's photo.bin differs from A's"
fuse_log "B and C joined and restored the share: $(manifest b | wc -l) entries"

# Live changes reach the others through the relay, no polling.
printf 'from b\n' >"$B/docs/from-b.txt"
wait_until 10 has a docs/from-b.txt "from b" || fail "B's new file did not reach A"
wait_until 10 has c docs/from-b.txt "from b" || fail "B's new file did not reach C"

# ---------------------------------------------------------------------------
# Setup for the concurrency table, synced to everyone before the partition.
mkdir "$A/X" "$A/Y" "$A/doomed"
printf 'rename me\n' >"$A/r.txt"
printf 'delete me\n' >"$A/d.txt"
printf 'replace me\n' >"$A/target.txt"
printf 'new version\n' >"$A/source.txt"
head -c 50000 /dev/urandom >"$A/pic.bin"
wait_converged 30 "before the partition"

stop_relay
wait_until 20 eval '! relay_connected a && ! relay_connected b' || fail "devices did not notice the relay is gone"
# Row 1: both mkdir the same path, each with a child.
mkdir "$A/proj" "$B/proj"
printf 'a\n' >"$A/proj/from-a.txt"
printf 'b\n' >"$B/proj/from-b.txt"
# Row 2: both create a file with the same name.
printf 'made on a\n' >"$A/same.txt"
printf 'made on b\n' >"$B/same.txt"
# Row 3: A moves X into Y, B moves Y into X.
mv "$A/X" "$A/Y/X"
mv "$B/Y" "$B/X/Y"
# Row 4: A renames, B edits the same file.
mv "$A/r.txt" "$A/renamed.txt"
printf 'rename me\nedited on b\n' >"$B/r.txt"
# Row 5: A deletes a file, B edits it.
rm "$A/d.txt"
printf 'delete me\nkept by the edit\n' >"$B/d.txt"
# Row 6: A deletes a directory, B creates a file in it.
rmdir "$A/doomed"
printf 'not lost\n' >"$B/doomed/inside.txt"
# Row 7 (one device): rename over an existing file keeps the old content in history.
mv "$A/source.txt" "$A/target.txt"
# Binary conflict: both write their own version of one binary file.
head -c 60000 /dev/urandom >"$A/pic.bin"
head -c 70000 /dev/urandom >"$B/pic.bin"
sha_a=$(sha256sum <"$A/pic.bin" | cut -c1-64) sha_b=$(sha256sum <"$B/pic.bin" | cut -c1-64)
# Editors' saves of one text file, on both sides: sed -i on A, temp-and-rename on B.
sed -i 's/^line 1$/line 1 (sed on a)/' "$A/notes.txt"
sed 's/^line 5$/line 5 (temp+rename on b)/' "$B/notes.txt" >"$B/.notes.tmp"
mv "$B/.notes.tmp" "$B/notes.txt"

start_relay
wait_converged 60 "after the relay came back"
fuse_log "converged after the partition: $(manifest a | wc -l) entries"
ls "$A/proj/from-a.txt" "$A/proj/from-b.txt" >/dev/null || fail "row 1: one proj/ with both children"
conflicts=$(find "$A" -maxdepth 1 -name 'same (conflict *).txt' | wc -l)
[ -f "$A/same.txt" ] && [ "$conflicts" = 1 ] || fail "row 2: same.txt and one conflict copy ($conflicts)"
contents=$(cat "$A/same.txt" "$A"/same\ \(conflict\ *\).txt | sort | tr '\n' '|')
assert_eq "made on a|made on b|" "$contents" "row 2: both versions kept"
{ [ -d "$A/X/Y" ] && [ ! -e "$A/Y" ]; } || { [ -d "$A/Y/X" ] && [ ! -e "$A/X" ]; } ||
    fail "row 3: one move wins, no cycle: $(cd "$A" && find X Y 2>/dev/null | tr '\n' ' ')"
assert_file_content "$A/renamed.txt" $'rename me\nedited on b\n' "row 4: the renamed file carries B's edit"
[ ! -e "$A/r.txt" ] || fail "row 4: r.txt is still there beside renamed.txt"
assert_file_content "$A/d.txt" $'delete me\nkept by the edit\n' "row 5: the edit survives the delete"
assert_file_content "$A/doomed/inside.txt" $'not lost\n' "row 6: B's file in A's deleted directory"
assert_file_content "$A/target.txt" $'new version\n' "row 7: the replaced file"
pics=$(cd "$A" && for f in pic.bin pic\ \(conflict\ *\).bin; do [ -f "$f" ] && sha256sum <"$f" | cut -c1-64; done | sort | tr '\n' ' ')
assert_eq "$(printf '%s\n' "$sha_a" "$sha_b" | sort | tr '\n' ' ')" "$pics" \
    "binary conflict: both versions kept, one as a conflict copy"
[ "$(weft_versions "$A/target.txt")" -ge 2 ] || fail "row 7: target.txt keeps its old content in history"
expected_notes=$'line 1 (sed on a)\nline 2\nline 3\nline 4\nline 5 (temp+rename on b)\n'
for x in a b c; do
    assert_file_content "$FUSE_TMP/mnt-$x/notes.txt" "$expected_notes" "editors' saves merged on $x"
done

# ---------------------------------------------------------------------------
# B's daemon killed in the middle of a sync, then remounted: nothing lost or doubled.
mkdir "$A/many"
for i in $(seq 1 300); do printf 'file %s\n' "$i" >"$A/many/f$i.txt"; done
wait_until 10 test -e "$B/many" || true
kill -9 "${daemon[b]}"
wait_until 10 pid_gone "${daemon[b]}" || fail "B's daemon survived kill -9"
mount_dev b
wait_converged 60 "after B's daemon was killed mid-sync"
assert_eq 300 "$(find "$B/many" -type f | wc -l)" "files in many/ on B after the kill"

# Status reports the relay and no misbehaviour.
status=$(sync_json a)
assert_contains "$status" '"relay_connected": true' "weft status --json on A"
assert_contains "$status" '"records_refused": 0' "weft status --json on A"
assert_contains "$(dev a "$WEFT" status sa)" "relay $relay_addr: connected" "weft status on A"
assert_contains "$status" '"conflicts": 2' "weft status --json on A: same.txt's and pic.bin's conflict copies"
assert_contains "$(dev a "$WEFT" status sa)" "2 conflict copies wait for you" "weft status on A"
all_confirmed() { sync_json a | grep -q '"records_unacked": 0'; }
wait_until 20 all_confirmed || fail "A's records not all confirmed by the relay: $(sync_json a)"

# ---------------------------------------------------------------------------
# Direct sync: A listens from now on (weft peer listen, then a remount); C
# finds A through the relay by itself, B is also told by hand (weft peer add);
# with the relay down, A's change reaches both over direct sessions.
umount_dev a
assert_status 0 "weft peer listen on A" dev a "$WEFT" peer listen sa "$a_listen"
mount_dev a
assert_status 0 "weft peer add on B" dev b "$WEFT" peer add sb "$a_listen"
peer_up() { sync_json b | grep -q '"peers_connected": 1'; }
found_by_relay() { sync_json c | grep -q '"peers_connected": 1'; }
wait_until 20 found_by_relay || fail "C did not find A through the relay: $(sync_json c)"
wait_until 20 peer_up || fail "B did not connect to A directly: $(sync_json b)"
stop_relay
printf 'direct\n' >"$A/direct.txt"
wait_until 10 has b direct.txt "direct" || fail "A's change did not reach B directly"
wait_until 10 has c direct.txt "direct" || fail "A's change did not reach C directly"
start_relay
wait_converged 60 "after the direct session"

# ---------------------------------------------------------------------------
# A removes C: a new key epoch; what A writes after reaches B, never C.
assert_contains "$(dev a "$WEFT" device list sa)" "gamma" "weft device list on A"
assert_status 0 "weft device remove gamma" dev a "$WEFT" device remove sa gamma
assert_contains "$(dev a "$WEFT" device list sa)" "removed" "weft device list after the removal"
printf 'not for gamma\n' >"$A/after-removal.txt"
wait_until 20 has b after-removal.txt "not for gamma" || fail "B did not get A's change after the removal"
sleep 1
[ ! -e "$C/after-removal.txt" ] || fail "the removed device C got a change made after its removal"
umount_dev c

# ---------------------------------------------------------------------------
# D restores from the relay alone: the others are unmounted.
versions_a=$(weft_versions "$A/target.txt")
manifest a >"$FUSE_TMP/manifest-a"
umount_dev a
umount_dev b
join_dev d "$token_d"
D=$FUSE_TMP/mnt-d
diff "$FUSE_TMP/manifest-a" <(manifest d) >&2 || fail "D's restored mount differs from A's"
# Text versions are recorded where they merge, so D's list may hold more; never fewer.
[ "$(weft_versions "$D/target.txt")" -ge "$versions_a" ] ||
    fail "history of target.txt on D: $(weft_versions "$D/target.txt") versions, A had $versions_a"
[ "$(weft_versions "$D/photo.bin")" -ge 1 ] || fail "history of photo.bin on D"
fuse_log "D restored $(wc -l <"$FUSE_TMP/manifest-a") entries and the history from the relay"
umount_dev d
fuse_end
