#!/usr/bin/env bash
# test-git.sh: git on the mount. init, add, commit, status (clean after each
# commit), branches and checkout back and forth (content, deleted and added
# files, the executable bit, a symlink), stash, checkout -- FILE, gc, fsck
# --strict, and clones from and onto the mount compared with diff -r. On
# weft, checkout (which unlinks and recreates the files it changes) must keep
# each file's node id and add a version (DESIGN.md, "Atomic save"). git falls
# back to rename when link() fails, so weft's EPERM for hard links is fine.
source "$(dirname "$0")/lib.sh"
fuse_begin git
need_cmd git
fuse_share git

repo=$MNT/repo
g() {
    git -C "$repo" -c gc.auto=0 -c core.autocrlf=false "$@"
}
assert_clean() {
    local status
    status=$(g status --porcelain --untracked-files=all)
    assert_eq "" "$status" "git status --porcelain after $1"
}
# versions_now FILE: the version count once pending commits have landed.
versions_now() {
    wait_until 10 weft_settled "$1" || fail "the last write to $1 never committed"
    weft_versions "$1"
}
# node_check WHAT FILE NODE VERSIONS: FILE kept NODE and gained a version.
node_check() {
    weft_mode || return 0
    local node
    if ! wait_until 10 versions_above "$2" "$4"; then
        node=$(weft_node "$2")
        fail "$1: no new version of $2 in weft log (still $4) 10 s after the checkout;" \
            "node before $3, now $node"
    fi
    assert_eq "$3" "$(weft_node "$2")" "$1: node id of $2 (checkout must keep it)"
    fuse_log "$1: $2 kept node $3, versions $4 -> $(weft_versions "$2")"
}

mkdir "$repo"
g init -q -b main
mkdir -p "$repo/src" "$repo/bin"
printf '# weft test repo\n\nversion one\n' >"$repo/README.md"
printf 'int main(void)\n{\n    return 0;\n}\n' >"$repo/src/main.c"
head -c 100000 /dev/urandom >"$repo/bin/data.bin"
printf '#!/bin/sh\necho hi\n' >"$repo/run.sh"
chmod +x "$repo/run.sh"
ln -s README.md "$repo/link"
: >"$repo/empty"
g add -A
g commit -q -m "one"
assert_clean "the first commit"
g fsck --full --strict --no-progress

readme_v1=$(cat "$repo/README.md")
readme_node='' readme_versions=''
if weft_mode; then
    readme_node=$(weft_node "$repo/README.md")
fi

g checkout -q -b feature
printf 'version two\n' >>"$repo/README.md"
printf '/* more */\n' >>"$repo/src/main.c"
rm "$repo/empty"
printf 'added on feature\n' >"$repo/new.txt"
chmod -x "$repo/run.sh"
g add -A
g commit -q -m "two"
assert_clean "the second commit"
readme_v2=$(cat "$repo/README.md")

if weft_mode; then
    readme_versions=$(versions_now "$repo/README.md")
fi
g checkout -q main
assert_clean "checkout main"
assert_eq "$readme_v1" "$(cat "$repo/README.md")" "README.md after checkout main"
[ ! -e "$repo/new.txt" ] || fail "new.txt still there after checkout main"
[ -e "$repo/empty" ] || fail "empty not restored by checkout main"
[ -x "$repo/run.sh" ] || fail "run.sh lost its executable bit on checkout main"
assert_eq README.md "$(readlink "$repo/link")" "symlink after checkout"
node_check "checkout main" "$repo/README.md" "$readme_node" "$readme_versions"

if weft_mode; then
    readme_versions=$(versions_now "$repo/README.md")
fi
g checkout -q feature
assert_clean "checkout feature"
assert_eq "$readme_v2" "$(cat "$repo/README.md")" "README.md after checkout feature"
[ ! -x "$repo/run.sh" ] || fail "run.sh still executable after checkout feature"
node_check "checkout feature" "$repo/README.md" "$readme_node" "$readme_versions"

# stash, and checkout -- FILE (git rewrites the file)
printf 'uncommitted\n' >>"$repo/README.md"
g stash -q
assert_eq "$readme_v2" "$(cat "$repo/README.md")" "README.md after git stash"
g stash pop -q
assert_eq "$readme_v2"$'\n'uncommitted "$(cat "$repo/README.md")" "README.md after git stash pop"
if weft_mode; then
    readme_versions=$(versions_now "$repo/README.md")
fi
g checkout -q -- README.md
assert_clean "checkout -- README.md"
node_check "checkout -- README.md" "$repo/README.md" "$readme_node" "$readme_versions"

assert_eq 2 "$(g rev-list --count HEAD)" "commits on feature"
g gc -q
g fsck --full --strict --no-progress
assert_clean "git gc"

# clone off the mount, and onto it
git clone -q "$repo" "$FUSE_TMP/clone"
git -C "$FUSE_TMP/clone" checkout -q feature
diff -r --no-dereference --exclude=.git "$repo" "$FUSE_TMP/clone" ||
    fail "a clone of the repo on the mount differs from its work tree"
git clone -q "$FUSE_TMP/clone" "$MNT/clone2"
git -C "$MNT/clone2" fsck --full --strict --no-progress
diff -r --no-dereference --exclude=.git "$FUSE_TMP/clone" "$MNT/clone2" ||
    fail "a clone made onto the mount differs from its origin"
fuse_end
