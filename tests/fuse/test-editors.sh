#!/usr/bin/env bash
# test-editors.sh: the ways editors and tools save a file. Each save must leave
# the new content, no stray files, and (weft) keep the file's node id and add
# a version to `weft log` (DESIGN.md, "Atomic save"):
#   in place (O_TRUNC), vim -es (its default rename-and-write, backupcopy=yes,
#   and 'backup' keeping file~), sed -i, write-temp-and-rename (shell and the
#   fsync'ed random-name way of glib/LibreOffice), emacs-style backup rename
#   (file -> file~, write file; keep or delete file~), unlink and recreate,
#   and several saves in a row. git checkout is in test-git.sh.
source "$(dirname "$0")/lib.sh"
fuse_begin editors
need_cmd sed
# vim-tiny saves the same way (see the README); prefer the full vim.
vim=$(command -v vim || command -v vim.tiny || true)
[ -n "$vim" ] || skip "vim is not installed (see packaging/install-deps.sh)"
fuse_share editors

ORIGINAL=$'line one\nline two\nline three\n'

# prepare NAME: a directory NAME holding file.txt with ORIGINAL, committed.
prepare() {
    mkdir "$MNT/$1"
    printf '%s' "$ORIGINAL" >"$MNT/$1/file.txt"
    if weft_mode; then
        wait_until 10 versions_above "$MNT/$1/file.txt" 0 ||
            fail "$1: a new file has no version in weft log 10 s after close"
    fi
}

# edit_check WHAT FILE EXPECTED_CONTENT EXPECTED_LISTING CMD...: runs the save
# CMD, then checks the file's content, the directory's entries (sorted, space
# separated) and, on weft, the node id and a new version of the right size.
edit_check() {
    local what=$1 file=$2 expected=$3 listing=$4
    shift 4
    local node_before='' versions_before='' node_after size text versions_after
    if weft_mode; then
        wait_until 10 weft_settled "$file" || fail "$what: the last write to $file never committed"
        read -r node_before versions_before < <(weft_log_fields "$file" node count)
    fi
    if ! "$@"; then
        check_fail "$what: the save failed: $*"
        return
    fi
    check_file_content "$file" "$expected" "$what" || return
    check_eq "$listing" "$(ls -A "$(dirname "$file")" | sort | tr '\n' ' ' | sed 's/ $//')" \
        "$what: entries of $(dirname "$file")" || true
    if ! weft_mode; then
        fuse_log "$what: content and entries ok (node and version checks need weft)"
        return 0
    fi
    if ! wait_until 10 versions_above "$file" "$versions_before"; then
        node_after=$(weft_node "$file")
        check_fail "$what: weft log shows no new version (still $versions_before) 10 s after the" \
            "save; node before $node_before, now $node_after"
        return
    fi
    read -r node_after size text versions_after < <(
        weft_log_fields "$file" node newest.size newest.text count
    )
    check_eq "$node_before" "$node_after" "$what: node id of $file (a save must keep it)" || true
    check_eq "${#expected}" "$size" "$what: size of the newest version" || true
    check_eq true "$text" "$what: the newest version of a text file is text" || true
    fuse_log "$what: ok (node $node_after, versions $versions_before -> $versions_after)"
}

vim_edit() { # vim_edit FILE [VIM-SETTINGS]: :%s/two/2/ and :wq, no vimrc
    "$vim" -es -N -i NONE -u NONE --cmd 'set backupskip=' ${2:+--cmd "set $2"} \
        -c '%s/two/2/' -c 'wq' "$1"
}
temp_rename() { # temp_rename FILE TEXT: write FILE.tmp, rename it over FILE
    printf '%s' "$2" >"$1.tmp" && mv -f "$1.tmp" "$1"
}
emacs_backup() { # emacs_backup FILE TEXT keep|delete
    mv "$1" "$1~" && printf '%s' "$2" >"$1" && if [ "$3" = delete ]; then rm "$1~"; fi
}
unlink_recreate() {
    rm "$1" && printf '%s' "$2" >"$1"
}
overwrite() {
    printf '%s' "$2" >"$1"
}

EDITED=$'line one\nline 2\nline three\n'
NEW=$'line one\nline two, edited\nline three\nline four\n'

prepare in-place
edit_check "in place (O_TRUNC)" "$MNT/in-place/file.txt" "$NEW" file.txt \
    overwrite "$MNT/in-place/file.txt" "$NEW"

prepare vim-default
edit_check "vim -es (default: rename to file~, write, delete file~)" \
    "$MNT/vim-default/file.txt" "$EDITED" file.txt vim_edit "$MNT/vim-default/file.txt"

prepare vim-copy
edit_check "vim -es, backupcopy=yes (copy to file~, overwrite in place)" \
    "$MNT/vim-copy/file.txt" "$EDITED" file.txt vim_edit "$MNT/vim-copy/file.txt" backupcopy=yes

prepare vim-backup
edit_check "vim -es, backup (rename to file~, write, keep file~)" \
    "$MNT/vim-backup/file.txt" "$EDITED" "file.txt file.txt~" \
    vim_edit "$MNT/vim-backup/file.txt" 'backup backupcopy=no'
check_file_content "$MNT/vim-backup/file.txt~" "$ORIGINAL" "vim backup file" || true

prepare sed
edit_check "sed -i" "$MNT/sed/file.txt" "$EDITED" file.txt sed -i 's/two/2/' "$MNT/sed/file.txt"

prepare temp-rename
edit_check "write temp, rename over" "$MNT/temp-rename/file.txt" "$NEW" file.txt \
    temp_rename "$MNT/temp-rename/file.txt" "$NEW"

prepare atomic-save
edit_check "random-named temp, fsync, rename over, fsync dir (glib, LibreOffice)" \
    "$MNT/atomic-save/file.txt" "$NEW" file.txt fsutil atomic-save "$MNT/atomic-save/file.txt" "$NEW"

prepare emacs-keep
edit_check "emacs-style: rename to file~, write file, keep file~" "$MNT/emacs-keep/file.txt" \
    "$NEW" "file.txt file.txt~" emacs_backup "$MNT/emacs-keep/file.txt" "$NEW" keep
check_file_content "$MNT/emacs-keep/file.txt~" "$ORIGINAL" "emacs backup file" || true

prepare emacs-delete
edit_check "emacs-style: rename to file~, write file, delete file~" \
    "$MNT/emacs-delete/file.txt" "$NEW" file.txt \
    emacs_backup "$MNT/emacs-delete/file.txt" "$NEW" delete

prepare unlink-recreate
edit_check "unlink and recreate" "$MNT/unlink-recreate/file.txt" "$NEW" file.txt \
    unlink_recreate "$MNT/unlink-recreate/file.txt" "$NEW"

prepare repeated
for round in 1 2 3 4 5; do
    edit_check "save $round of 5 in a row (temp-rename, vim, sed -i in turn)" \
        "$MNT/repeated/file.txt" "$NEW$round"$'\n' file.txt \
        temp_rename "$MNT/repeated/file.txt" "$NEW$round"$'\n'
    edit_check "  then vim" "$MNT/repeated/file.txt" "$NEW$round"$'\n'"vim $round"$'\n' file.txt \
        "$vim" -es -N -i NONE -u NONE --cmd 'set backupskip=' -c "\$s/\$/\\rvim $round/" -c wq \
        "$MNT/repeated/file.txt"
    edit_check "  then sed -i" "$MNT/repeated/file.txt" "$NEW$round"$'\n'"sed $round"$'\n' file.txt \
        sed -i "s/^vim $round\$/sed $round/" "$MNT/repeated/file.txt"
done
fuse_end
