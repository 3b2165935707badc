#!/usr/bin/env bash
# test-cli.sh (weft only): the weft command's contract. --help and CMD --help
# exit 0; usage errors exit 2 and runtime errors 1, each with a message on
# stderr; shares live under $XDG_DATA_HOME/weft/NAME; status --json is JSON;
# log --json has the documented shape (node: 32 hex digits; versions newest
# first, with version, ISO-8601 time, author, size, text); restore brings an
# old version back as the file's content, keeping its node.
source "$(dirname "$0")/lib.sh"
fuse_begin cli
need_weft "the weft command"

assert_status 0 "weft --help" "$WEFT" --help
for word in init mount umount status log restore; do
    assert_contains "$FUSE_OUT" "$word" "weft --help lists '$word'"
done
for cmd in init mount umount status log restore; do
    assert_status 0 "weft $cmd --help" "$WEFT" "$cmd" --help
    [ -n "$FUSE_OUT" ] || fail "weft $cmd --help printed nothing on stdout"
done

usage_error() { # usage_error ARGS...: exit 2 with a message
    run_capture "$WEFT" "$@"
    [ "$FUSE_RC" = 2 ] || fail "weft $*: exited $FUSE_RC, expected 2 (usage error); stderr: $FUSE_ERR"
    [ -n "$FUSE_ERR" ] || fail "weft $*: a usage error without a message on stderr"
}
runtime_error() { # runtime_error ARGS...: exit 1 with a message
    run_capture "$WEFT" "$@"
    [ "$FUSE_RC" = 1 ] || fail "weft $*: exited $FUSE_RC, expected 1 (runtime error); stderr: $FUSE_ERR"
    [ -n "$FUSE_ERR" ] || fail "weft $*: a runtime error without a message on stderr"
    fuse_log "weft $*: $FUSE_ERR"
}
usage_error
usage_error no-such-command
usage_error init
usage_error mount
usage_error mount onlyname
usage_error umount
usage_error log
usage_error restore "$FUSE_TMP"
usage_error mount --no-such-option x "$FUSE_TMP"

mkdir "$FUSE_TMP/nowhere"
runtime_error mount no-such-share "$FUSE_TMP/nowhere"
runtime_error umount "$FUSE_TMP/nowhere"
runtime_error log "$FUSE_TMP/nowhere"

fuse_share cli
[ -d "$XDG_DATA_HOME/weft/cli" ] || fail "weft init cli made no $XDG_DATA_HOME/weft/cli"
assert_status 0 "weft status" "$WEFT" status
assert_status 0 "weft status --json" "$WEFT" status --json
printf '%s' "$FUSE_OUT" | fsutil json-check - || fail "weft status --json is not JSON: $FUSE_OUT"

f=$MNT/notes.txt
printf 'first\n' >"$f"
wait_until 10 versions_above "$f" 0 || fail "no first version of notes.txt"
printf 'second, longer\n' >"$f"
wait_until 10 versions_above "$f" 1 || fail "no second version of notes.txt"
weft_log_json "$f" >"$FUSE_TMP/log.json"
assert_eq 15 "$(fsutil log-field "$FUSE_TMP/log.json" newest.size)" "newest version's size"
assert_eq 6 "$(fsutil log-field "$FUSE_TMP/log.json" oldest.size)" "oldest version's size"
assert_eq true "$(fsutil log-field "$FUSE_TMP/log.json" newest.text)" "notes.txt is text"
assert_status 0 "weft log (text)" "$WEFT" log "$f"
[ -n "$FUSE_OUT" ] || fail "weft log printed nothing"

node=$(weft_node "$f")
first=$(fsutil log-field "$FUSE_TMP/log.json" size=6)
versions=$(weft_versions "$f")
assert_status 0 "weft restore --version $first" "$WEFT" restore "$f" --version "$first"
assert_file_content "$f" $'first\n' "notes.txt after weft restore of the first version"
assert_eq "$node" "$(weft_node "$f")" "node id after weft restore"
wait_until 10 versions_above "$f" $((versions - 1)) || true
run_capture "$WEFT" restore "$f" --version no-such-version
[ "$FUSE_RC" != 0 ] && [ -n "$FUSE_ERR" ] ||
    fail "weft restore of an unknown version: exit $FUSE_RC, stderr '$FUSE_ERR' (expected an error)"
assert_file_content "$f" $'first\n' "notes.txt after a failed restore"
fuse_end
