#!/usr/bin/env bash
# test-remount.sh (weft only): unmount and mount again; every entry must come
# back the same: type, mode, owner, size, mtime, content, symlink target,
# device numbers, user xattrs, and inode number. Twice, with changes between
# (a rename, an edit, a delete, a new file), and node ids kept.
source "$(dirname "$0")/lib.sh"
fuse_begin remount
need_weft "unmount and mount a weft share again"
fuse_share re

mkdir -p "$MNT/dir/sub/deep" "$MNT/empty"
printf 'text file\n' >"$MNT/dir/text.txt"
head -c 300000 /dev/urandom >"$MNT/dir/sub/binary.bin"
: >"$MNT/empty-file"
printf '#!/bin/sh\n' >"$MNT/exec.sh"
chmod 0755 "$MNT/exec.sh"
printf 'secret\n' >"$MNT/private"
chmod 0600 "$MNT/private"
chown 1000:1000 "$MNT/private"
ln -s dir/text.txt "$MNT/link"
ln -s nowhere "$MNT/dangling"
mkfifo "$MNT/fifo"
mknod "$MNT/null-dev" c 1 3
printf 'ünïcödé\n' >"$MNT/dir/名前.txt"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.color", b"blue")' "$MNT/dir/text.txt"
touch -d '2001-02-03 04:05:06.789' "$MNT/dir/sub/deep"
touch -h -d '2002-01-01 00:00:00' "$MNT/link"
printf 'deleted\n' >"$MNT/gone"
rm "$MNT/gone"
node_text=$(weft_node "$MNT/dir/text.txt")

# The manifest is taken once commits have landed; ctime is compared but
# differences are only reported (weft keeps mtime, mode and xattrs as
# registers; ext4 would keep ctime too).
cycle() { # cycle N
    local before=$FUSE_TMP/manifest-$1-before.json after=$FUSE_TMP/manifest-$1-after.json
    fsutil manifest "$MNT" --inodes >"$before"
    weft_umount "$MNT"
    [ -z "$(ls -A "$MNT")" ] || fail "cycle $1: the mount point is not empty while unmounted"
    weft_mount re "$MNT"
    fsutil manifest "$MNT" --inodes >"$after"
    fsutil compare "$before" "$after" --ignore ctime_ns ||
        fail "cycle $1: the tree differs after a remount (see above)"
    fsutil compare "$before" "$after" >/dev/null 2>&1 ||
        fuse_log "note: some ctimes changed across the remount (not a failure)"
    assert_eq "$node_text" "$(weft_node "$MNT/dir/text.txt")" "cycle $1: node id of text.txt"
    [ ! -e "$MNT/gone" ] || fail "cycle $1: a deleted file came back"
}
cycle 1

mv "$MNT/dir/sub" "$MNT/moved-sub"
printf 'edited\n' >>"$MNT/dir/text.txt"
rm "$MNT/empty-file"
printf 'new\n' >"$MNT/new.txt"
cycle 2
fuse_end
