#!/usr/bin/env bash
# Builds weft's Debian package from this tree and checks it with lintian.
#   packaging/build-deb.sh [OUTDIR]      leaves weft_*.deb in OUTDIR (default: build-deb-out)
# The build sees the files git knows about as they are on disk, uncommitted
# edits included, but no build directories or other ignored files, so a
# developer's tree and a clean clone in CI build the same package. Outside a
# git checkout it copies the tree minus build*/ and .git.
# Needs the Build-Depends of packaging/debian/control, dpkg-dev and lintian
# (packaging/install-deps.sh installs them all).
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-build-deb-out}")
version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
meson_version=$(sed -n "s/^ *version: '\([^']*\)'.*/\1/p" meson.build | head -1)
if [ "$version" != "$meson_version" ]; then
    echo "build-deb: packaging/debian/changelog says $version but meson.build says" \
        "$meson_version; add a changelog entry (dch -v $meson_version)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/weft-$version
mkdir "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files; a tracked file deleted in
    # the working tree is skipped.
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' file; do
            [ -e "$file" ] || [ -L "$file" ] || continue
            printf '%s\0' "$file"
        done |
        tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$src"
fi
# debian/ has to be at the top of the source tree; the layout keeps it in packaging/.
cp -a packaging/debian "$src/debian"

echo "build-deb: building weft $version in $src"
(
    cd "$src"
    DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}" dpkg-buildpackage -us -uc -b -Jauto
)

changes=$(echo "$work"/weft_"$version"_*.changes)
echo "build-deb: lintian $changes"
# Errors fail the build; warnings and the rest are printed for a person to judge.
lintian --fail-on error "$changes"

mkdir -p "$out"
rm -f "$out"/weft_*.deb
cp "$work"/weft_"$version"_*.deb "$out"/
echo "build-deb: $(echo "$out"/weft_*.deb)"
