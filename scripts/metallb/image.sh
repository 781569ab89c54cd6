#!/usr/bin/env bash
# scripts/metallb/image.sh: MetalLB's controller and speaker images, built from the binaries that
# scripts/metallb/build.sh makes from Go modules (a test-rig peer: nothing of MetalLB goes into the
# repo). Both binaries are static, so each image is scratch + the binary as its entrypoint, named
# as MetalLB's own manifest (config/manifests/metallb-native.yaml of the module) refers to them:
# quay.io/metallb/{controller,speaker}:<version>. Cached as docker-archive tarballs under
# $METALXDP_CACHE/images/; stdout gets `<name> <reference> <tarball>` per image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${METALXDP_CACHE:-/var/cache/metalxdp}
IMAGES=$CACHE/images
DRIVER="${METALXDP_STORAGE_DRIVER:-overlay}"
VERSION=$(cat "$here/VERSION")
BIN=$(bash "$here/build.sh")
key=$(basename "$BIN")
say() { printf '[metallb-image] %s\n' "$*" >&2; }
command -v buildah >/dev/null || { say "buildah is missing: apt-get install buildah (scripts/setup.sh)"; exit 1; }
mkdir -p "$IMAGES"
exec 9>"$IMAGES/.lock"
flock 9
STORE=(--root "$IMAGES/storage-$DRIVER" --runroot "/run/metalxdp/buildah-$DRIVER" --storage-driver "$DRIVER")
B() { buildah "${STORE[@]}" "$@"; }

for name in controller speaker; do
    ref="quay.io/metallb/$name:$VERSION"
    tar="$IMAGES/metallb-$name-$key.tar"
    if [[ ! -s "$tar" ]]; then
        start=$SECONDS
        c=$(B from --quiet scratch)
        mnt=$(B mount "$c")
        install -m 0755 "$BIN/$name" "$mnt/$name"
        mkdir -p "$mnt/tmp" "$mnt/etc" && chmod 1777 "$mnt/tmp"
        printf 'root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$mnt/etc/passwd"
        B umount "$c" >/dev/null
        B config --entrypoint "[\"/$name\"]" --stop-signal TERM "$c"
        B commit --quiet --rm "$c" "$ref" >/dev/null
        rm -f "$tar.tmp"
        B push --quiet "$ref" "docker-archive:$tar.tmp:$ref" >/dev/null
        mv "$tar.tmp" "$tar"
        say "$name: built $ref -> $tar ($(stat -c %s "$tar") bytes, $((SECONDS - start)) s)"
    else
        say "$name: cached $ref -> $tar"
    fi
    echo "$name $ref $tar"
done
