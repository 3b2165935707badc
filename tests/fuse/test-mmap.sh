#!/usr/bin/env bash
# test-mmap.sh: memory-mapped reads and writes (mmap_check.c: a file written
# through a shared mapping reads back with read(2), one page cache for
# mappings and read/write, private mappings do not write, growing a mapped
# file, SIGBUS past the end). On weft the file written through the mapping
# has a version of its size and the same content after a remount.
source "$(dirname "$0")/lib.sh"
fuse_begin mmap
fuse_share mmap
"$(helper mmap_check)" "$MNT" || fail "mmap_check: see the FAIL lines above"
size=$(stat -c %s "$MNT/mapped")
sum=$(sha256sum <"$MNT/mapped")
if weft_only "the mapped file's version and a remount"; then
    wait_until 30 versions_above "$MNT/mapped" 0 || fail "no version of a file written through mmap"
    assert_eq "$size" "$(weft_newest "$MNT/mapped" size)" "size of the newest version of mapped"
    weft_umount "$MNT"
    weft_mount mmap "$MNT"
    assert_eq "$sum" "$(sha256sum <"$MNT/mapped")" "sha256 of mapped after a remount"
fi
fuse_end
