#!/usr/bin/env bash
# test-posix.sh: POSIX behaviour of the mount, errno by errno, as ext4 gives it
# (posix_check.c: ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, ENAMETOOLONG,
# EINVAL for a directory moved into itself, EACCES/EPERM by mode bits,
# renameat2 flags, symlinks, fifos and device nodes, times, truncate,
# fallocate, SEEK_DATA/HOLE, user xattrs, flock and POSIX/OFD locks, and
# link() = EPERM on weft).
source "$(dirname "$0")/lib.sh"
fuse_begin posix
fuse_share posix
posix_check=$(helper posix_check)

args=()
if weft_mode; then
    args+=(--links=eperm)
    options=$(fuse_mount_options "$MNT")
    [[ ,${options#* }, == *,default_permissions,* ]] ||
        check_fail "the weft mount lacks default_permissions (options: $options): as root," \
            "mode bits are then not checked by the kernel"
    if [[ ,${options#* }, == *,allow_other,* ]]; then
        args+=(--other-users)
    else
        fuse_log "the weft mount has no allow_other: other uids cannot reach it at all, so" \
            "the checks as uid nobody are skipped (those as root without DAC capabilities run)"
    fi
else
    args+=(--links=allowed --other-users)
fi

mkdir "$MNT/posix"
if ! "$posix_check" "${args[@]}" "$MNT/posix"; then
    check_fail "posix_check: see the FAIL lines above"
fi
# Whatever posix_check left must still be removable and the directory listable.
rm -rf "$MNT/posix" || check_fail "rm -rf of posix_check's tree failed"
[ -z "$(ls -A "$MNT")" ] || check_fail "mount not empty after rm -rf: $(ls -A "$MNT")"
fuse_end
