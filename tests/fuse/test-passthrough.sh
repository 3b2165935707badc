#!/usr/bin/env bash
# test-passthrough.sh: opens of a file whose working copy is replaced while it
# is held open. With FUSE passthrough the kernel takes one backing file per
# inode, so an open after the replacement cannot be passed through to the new
# working copy while the old one is still open: it must still see the new
# content (weft serves it through the daemon), and writes through it must
# land. Also: a file open for reading and for writing at once, and the
# content after every handle is closed. Without passthrough (older kernel,
# -o nopassthrough) the same must hold.
source "$(dirname "$0")/lib.sh"
fuse_begin passthrough
need_weft
fuse_share pt

f=$MNT/notes.txt
printf 'one\n' >"$f"
wait_until 10 versions_above "$f" 0 || fail "no version of $f 10 s after it was written"
v1=$(weft_newest "$f" version)
sleep 1 # a save right after another merges into its version
printf 'two\n' >"$f"
wait_until 10 weft_settled "$f" || fail "the second write to $f never committed"

# Hold the file open, then put version one back: a new working copy.
exec 3<"$f"
assert_eq $'two' "$(head -n 1 <&3)" "read through the held descriptor"
assert_status 0 "weft restore" "$WEFT" restore "$f" --version "$v1"
assert_file_content "$f" $'one\n' "a new open after weft restore, while the old one is held"
printf 'three\n' >>"$f"
assert_file_content "$f" $'one\nthree\n' "an append through a new open, the old one still held"
exec 3<&-
assert_file_content "$f" $'one\nthree\n' "after the held descriptor closed"
wait_until 10 weft_settled "$f" || fail "the append to $f never committed"
assert_eq 4 "$(weft_versions "$f")" "versions: one, two, the restore, the append"

# A reader and a writer at once: the reader sees what the writer wrote.
exec 4<>"$MNT/both.bin"
printf 'abc' >&4
assert_eq abc "$(cat "$MNT/both.bin")" "a second open sees the first one's write"
exec 4>&-
wait_until 10 weft_settled "$MNT/both.bin" || fail "both.bin never committed"

# weft status says what serves file data, and why not passthrough when it is not.
assert_status 0 "weft status pt" "$WEFT" status pt
status_text=$FUSE_OUT
assert_status 0 "weft status pt --json" "$WEFT" status pt --json
mode=$(printf '%s' "$FUSE_OUT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["shares"][0]["file_data"])') ||
    fail "weft status --json has no file_data: $FUSE_OUT"
if [[ ${WEFT_TEST_MOUNT_OPTIONS:-} == *nopassthrough* ]]; then
    assert_eq daemon "$mode" "file_data with -o nopassthrough"
    assert_contains "$status_text" "through the daemon: the mount was asked not to use FUSE passthrough" \
        "weft status with -o nopassthrough"
elif [ "$mode" = passthrough ]; then
    assert_contains "$status_text" "file data: straight to the working copies" "weft status, passthrough"
else
    assert_eq daemon "$mode" "file_data: passthrough or daemon"
    assert_contains "$status_text" "file data: through the daemon: " "weft status says why not passthrough"
fi

# After a remount the same content (what was passed through reached the working copies).
weft_umount "$MNT"
weft_mount pt "$MNT"
assert_file_content "$f" $'one\nthree\n' "$f after a remount"
assert_eq abc "$(cat "$MNT/both.bin")" "both.bin after a remount"
fuse_end
