#!/usr/bin/env bash
# test-append.sh: two processes appending to one file at once with O_APPEND,
# one write(2) per record (records of varying length with a checksum): the
# file must be exactly as long as all records, and no record torn, lost,
# duplicated or out of its writer's order. Then two shells appending lines
# with >> (an open per line). On weft the newest version has the full size.
source "$(dirname "$0")/lib.sh"
fuse_begin append
n=${WEFT_TEST_APPEND_N:-5000}
fuse_share append
f=$MNT/log.txt

fuse_bg fsutil append-writer "$f" A "$n"
writer_a=$FUSE_BG_PID
fuse_bg fsutil append-writer "$f" B "$n"
writer_b=$FUSE_BG_PID
wait "$writer_a" || fail "writer A failed"
wait "$writer_b" || fail "writer B failed"
fsutil append-verify "$f" "$n" A B || fail "concurrent O_APPEND records"

lines=${WEFT_TEST_APPEND_LINES:-1000}
g=$MNT/shell.txt
shell_appender() { # shell_appender TAG
    local i
    for ((i = 0; i < lines; i++)); do
        echo "$1-$i-0123456789abcdefghijklmnopqrstuvwxyz" >>"$g"
    done
}
fuse_bg shell_appender X
appender_x=$FUSE_BG_PID
fuse_bg shell_appender Y
appender_y=$FUSE_BG_PID
wait "$appender_x" || fail "shell appender X failed"
wait "$appender_y" || fail "shell appender Y failed"
assert_eq $((2 * lines)) "$(wc -l <"$g")" "lines appended by two shells"
bad=$(grep -cvE '^[XY]-[0-9]+-0123456789abcdefghijklmnopqrstuvwxyz$' "$g" || true)
assert_eq 0 "$bad" "torn lines appended by two shells"
for tag in X Y; do
    assert_eq "$(seq -f "$tag-%.0f" 0 $((lines - 1)) | tr '\n' ' ')" \
        "$(grep "^$tag-" "$g" | cut -d- -f1,2 | tr '\n' ' ')" "order of $tag's lines"
done

if weft_only "the version of the appended file"; then
    size=$(stat -c %s "$f")
    wait_until 10 versions_above "$f" 0 || fail "no version of log.txt"
    newest_size() { [ "$(weft_newest "$f" size 2>/dev/null)" = "$size" ]; }
    wait_until 10 newest_size || fail "newest version of log.txt: size $(weft_newest "$f" size), file $size"
fi
fuse_end
