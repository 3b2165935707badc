#!/usr/bin/env bash
# test-bigfile.sh: a 1 GiB file of pseudo-random data written (fill.c: 1 MiB
# writes like dd bs=1M, then fsync) and read back in one pass each way, with
# equal sha256 (the expected one from hashing the same seeded stream). On weft the
# read comes after an unmount and a remount, so it cannot come from the page
# cache, and `weft log` must show a binary version of the full size.
# WEFT_TEST_BIG_MIB sets the size (meson sets 256 for sanitizer builds).
source "$(dirname "$0")/lib.sh"
fuse_begin bigfile
mib=${WEFT_TEST_BIG_MIB:-${WEFT_TEST_BIG_MIB_DEFAULT:-1024}}
bytes=$((mib * 1024 * 1024))
fuse_share big
# the mount's working copy, its chunks and some slack
free_kib=$(df -Pk "$FUSE_TMP" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -gt $((mib * 1024 * 3)) ] ||
    skip "needs $((mib * 3)) MiB free under $FUSE_TMP, has $((free_kib / 1024)) MiB"

rate() { # rate START: MiB/s since START
    awk "BEGIN { t = $(now_s) - $1; printf \"%.2f s, %.0f MiB/s\", t, $mib / t }"
}
fill=$(helper fill)
want=$("$fill" "$mib" 7 - | fsutil sha256 -)
start=$(now_s)
"$fill" "$mib" 7 "$MNT/big.bin"
fuse_log "wrote $mib MiB: $(rate "$start")"
assert_eq "$bytes" "$(stat -c %s "$MNT/big.bin")" "size of big.bin"

if weft_only "remount before reading (cold cache), and the version in weft log"; then
    wait_until 120 versions_above "$MNT/big.bin" 0 ||
        fail "no version of big.bin in weft log 120 s after close"
    assert_eq "$bytes" "$(weft_newest "$MNT/big.bin" size)" "size of the newest version of big.bin"
    assert_eq false "$(weft_newest "$MNT/big.bin" text)" "random data is not text"
    weft_umount "$MNT"
    weft_mount big "$MNT"
fi
start=$(now_s)
got=$(fsutil sha256 "$MNT/big.bin")
fuse_log "read $mib MiB: $(rate "$start")"
assert_eq "$want" "$got" "sha256 of big.bin read back"
rm "$MNT/big.bin"
fuse_end
