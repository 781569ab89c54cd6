#!/usr/bin/env bash
# scripts/image.sh [IMAGE...]: build the project's container images without a Docker engine or a
# registry (Debian's archive and PyPI only), idempotently, cached by a content hash of the inputs.
#
#   base      Debian bookworm made by mmdebstrap (minbase, docs/man/locales excluded like
#             bookworm-slim), committed to buildah's storage as localhost/metalxdp-base:<hash>
#   metalxdp  deploy/Containerfile built by `buildah bud --isolation chroot` on that base
#             (--build-arg BASE=...): localhost/metalxdp:<version>
#   pause     the pod sandbox of the lab's nodes: busybox-static sh + sleep, localhost/metalxdp-pause:<version>
#   backend   the lab's web backend: busybox-static httpd + a CGI naming pod, node and client,
#             localhost/metalxdp-backend:<version>
#
# No IMAGE: all of them. Each image ends as a docker-archive tarball,
# $CACHE/<name>-<hash>.tar, that `ctr -n k8s.io images import` takes; a tarball already there is
# reused as is (delete it, or the whole cache, to rebuild). Progress, sizes and times go to
# stderr; stdout gets one line per image asked for: `<name> <reference> <tarball>`.
#
# Environment: METALXDP_CACHE (default /var/cache/metalxdp; the images live in its images/),
# METALXDP_STORAGE_DRIVER (overlay, the default, or vfs: buildah's storage driver),
# METALXDP_DEBIAN_MIRROR (default http://deb.debian.org/debian).
#
# Needs (Debian packages): mmdebstrap buildah busybox-static (and containerd + runc to use the
# images). Root: mmdebstrap's root mode, buildah's chroot isolation and overlay storage.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${METALXDP_CACHE:-/var/cache/metalxdp}/images"
DRIVER="${METALXDP_STORAGE_DRIVER:-overlay}"
MIRROR="${METALXDP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/metalxdp/__init__.py")
[[ -n "$VERSION" ]] || { echo "image.sh: no __version__ in metalxdp/__init__.py" >&2; exit 1; }

say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install mmdebstrap buildah busybox-static (scripts/setup.sh)"
done
[[ "$(id -u)" == 0 ]] || die "run as root (mmdebstrap root mode, buildah chroot isolation)"

mkdir -p "$CACHE"
# one build at a time per cache (a test and `make image` may race)
exec 9>"$CACHE/.lock"
flock 9

# buildah's storage lives in the cache too, so the layer cache of `buildah bud` survives and
# nothing lands in /var/lib/containers. overlay needs the kernel's overlayfs (root, ext4/xfs
# underneath); vfs works anywhere but copies every layer in full.
STORE=(--root "$CACHE/storage-$DRIVER" --runroot "/run/metalxdp/buildah-$DRIVER" --storage-driver "$DRIVER")
B() { buildah "${STORE[@]}" "$@"; }

# hash_inputs STRING... -- FILE_OR_DIR...: sha256 (first 16 hex digits) of the strings and of
# every file's path, mode and content (byte code caches left out).
hash_inputs() {
    local strings=() paths=()
    while (($#)); do [[ "$1" == -- ]] && { shift; paths=("$@"); break; }; strings+=("$1"); shift; done
    {
        printf '%s\n' "${strings[@]}"
        if ((${#paths[@]})); then
            local files
            files=$(cd "$REPO" && find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
            (cd "$REPO" && while IFS= read -r f; do
                printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -c1-64)"
            done <<<"$files")
        fi
    } | sha256sum | cut -c1-16
}

human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }

# finish NAME REF TAR START: write the tarball's .info (size, build time) and report it
finish() {
    local name=$1 ref=$2 tar=$3 start=$4 size secs
    size=$(stat -c %s "$tar"); secs=$((SECONDS - start))
    printf 'ref=%s\nsize=%s\nbuild_seconds=%s\nbuilt=%s\n' "$ref" "$size" "$secs" "$(date -u +%FT%TZ)" >"$tar.info"
    BUILT=1
    say "$name: built $ref -> $tar ($(human "$size"), ${secs}s)"
}

# cached NAME TAR: is the tarball there? (then report it)
cached() {
    local name=$1 tar=$2
    [[ -s "$tar" && -s "$tar.info" ]] || return 1
    local ref size build_seconds built
    eval "$(grep -E '^(ref|size|build_seconds|built)=' "$tar.info" | sed 's/^/local /')"
    touch "$tar.info"   # last use, for pruning
    say "$name: cached $ref -> $tar ($(human "$size"); built ${built} in ${build_seconds}s)"
}

# push REF TAR: buildah storage -> docker-archive tarball (written aside, then renamed)
push() {
    rm -f "$2.tmp"
    B push --quiet "$1" "docker-archive:$2.tmp:$1" >/dev/null
    mv "$2.tmp" "$2"
}

# ---------------------------------------------------------------- base (mmdebstrap)
BASE_SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main"
              "deb ${MIRROR%/debian}/debian-security $SUITE-security main")
# like the docker "slim" images: no manuals, docs (copyright files kept) or translations
BASE_DPKG=(path-exclude=/usr/share/man/* path-exclude=/usr/share/doc/* path-include=/usr/share/doc/*/copyright
           path-exclude=/usr/share/info/* path-exclude=/usr/share/locale/* path-exclude=/usr/share/lintian/*)
# merged /usr made by mmdebstrap's hook (as debootstrap and the docker images do) instead of the
# usrmerge package, which would pull perl (~50 MB) into the image
BASE_HOOKS=(/usr/share/mmdebstrap/hooks/merged-usr)
BASE_HASH=$(hash_inputs base-v2 "$SUITE" minbase "${BASE_SOURCES[@]}" "${BASE_DPKG[@]}" "${BASE_HOOKS[@]##*/}" --)
BASE_REF="localhost/metalxdp-base:$BASE_HASH"
BASE_TAR="$CACHE/base-$BASE_HASH.rootfs.tar"

build_base() {
    local start=$SECONDS
    if B inspect --type image "$BASE_REF" >/dev/null 2>&1; then
        say "base: cached $BASE_REF (buildah storage $CACHE/storage-$DRIVER)"
        return
    fi
    if [[ ! -s "$BASE_TAR" ]]; then
        say "base: mmdebstrap $SUITE (minbase) from $MIRROR ..."
        local opts=() o
        for o in "${BASE_DPKG[@]}"; do opts+=(--dpkgopt="$o"); done
        for o in "${BASE_HOOKS[@]}"; do opts+=(--hook-dir="$o"); done
        mmdebstrap --mode=root --variant=minbase --format=tar "${opts[@]}" \
            --aptopt='Acquire::Retries "3"' \
            "$SUITE" "$BASE_TAR.tmp" "${BASE_SOURCES[@]}"
        mv "$BASE_TAR.tmp" "$BASE_TAR"
    fi
    say "base: committing $BASE_REF ($(human "$(stat -c %s "$BASE_TAR")") rootfs)"
    local c
    c=$(B from --quiet scratch)
    B add --quiet "$c" "$BASE_TAR" / >/dev/null
    B config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --label io.metalxdp.inputs="$BASE_HASH" "$c"
    B commit --quiet --rm "$c" "$BASE_REF" >/dev/null
    say "base: $BASE_REF in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- metalxdp (buildah bud)
METALXDP_REF="localhost/metalxdp:$VERSION"
METALXDP_HASH=$(hash_inputs metalxdp-v1 "$BASE_HASH" "$VERSION" -- \
    deploy/Containerfile deploy/image/kernel-headers.sh .dockerignore pyproject.toml README.md \
    metalxdp controller agent bpf)
METALXDP_TAR="$CACHE/metalxdp-$METALXDP_HASH.tar"

build_metalxdp() {
    cached metalxdp "$METALXDP_TAR" && return
    build_base
    local start=$SECONDS args=()
    # PyPI through a TLS-intercepting proxy: hand pip the host's CA bundle, at build time only
    local ca="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-}}"
    if [[ -n "$ca" && -f "$ca" ]]; then
        args+=(--volume "$ca:/run/metalxdp-pip-ca.crt:ro" --build-arg PIP_CERT=/run/metalxdp-pip-ca.crt)
    fi
    say "metalxdp: buildah bud deploy/Containerfile (BASE=$BASE_REF, $DRIVER storage) ..."
    B bud --isolation chroot --layers --pull=never \
        --build-arg BASE="$BASE_REF" "${args[@]}" \
        --label io.metalxdp.inputs="$METALXDP_HASH" \
        -f "$REPO/deploy/Containerfile" -t "$METALXDP_REF" "$REPO" >&2
    push "$METALXDP_REF" "$METALXDP_TAR"
    finish metalxdp "$METALXDP_REF" "$METALXDP_TAR" "$start"
}

# ---------------------------------------------------------------- pause and backend (busybox)
BUSYBOX=/bin/busybox

# scratch_image NAME REF TAR ENTRYPOINT_JSON APPLETS -- SRC:DEST...: an image from scratch with
# the static busybox, symlinks for APPLETS (space separated) and the files SRC (repo-relative)
# copied to DEST.
scratch_image() {
    local name=$1 ref=$2 tar=$3 entry=$4 applets=$5 start=$SECONDS c mnt a f
    shift 6
    [[ -x "$BUSYBOX" ]] || die "$BUSYBOX missing: apt-get install busybox-static"
    if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is not static: apt-get install busybox-static"; fi
    say "$name: assembling $ref from scratch (busybox-static) ..."
    c=$(B from --quiet scratch)
    mnt=$(B mount "$c")
    mkdir -p "$mnt/bin" "$mnt/tmp" "$mnt/etc"
    chmod 1777 "$mnt/tmp"
    install -m 0755 "$BUSYBOX" "$mnt/bin/busybox"
    for a in $applets; do ln -s busybox "$mnt/bin/$a"; done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$mnt/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$mnt/etc/group"
    for f in "$@"; do
        mkdir -p "$mnt/$(dirname "${f#*:}")"
        cp -a "$REPO/${f%%:*}" "$mnt/${f#*:}"
    done
    B umount "$c" >/dev/null
    B config --entrypoint "$entry" --env PATH=/bin --stop-signal TERM \
        --label io.metalxdp.inputs="${tar##*-}" "$c"
    B commit --quiet --rm "$c" "$ref" >/dev/null
    push "$ref" "$tar"
    finish "$name" "$ref" "$tar" "$start"
}

BUSYBOX_SUM=$(sha256sum "$BUSYBOX" 2>/dev/null | cut -c1-64 || echo none)
PAUSE_REF="localhost/metalxdp-pause:$VERSION"
PAUSE_HASH=$(hash_inputs pause-v1 "$VERSION" "$BUSYBOX_SUM" -- deploy/image/pause)
PAUSE_TAR="$CACHE/pause-$PAUSE_HASH.tar"
BACKEND_REF="localhost/metalxdp-backend:$VERSION"
BACKEND_HASH=$(hash_inputs backend-v1 "$VERSION" "$BUSYBOX_SUM" -- deploy/image/backend)
BACKEND_TAR="$CACHE/backend-$BACKEND_HASH.tar"

build_pause() {
    cached pause "$PAUSE_TAR" && return
    scratch_image pause "$PAUSE_REF" "$PAUSE_TAR" '["/pause"]' "sh sleep" -- deploy/image/pause/pause:/pause
}

build_backend() {
    cached backend "$BACKEND_TAR" && return
    scratch_image backend "$BACKEND_REF" "$BACKEND_TAR" '["/serve"]' "sh httpd hostname kill" -- \
        deploy/image/backend/serve:/serve deploy/image/backend/www:/www
}

# ---------------------------------------------------------------- pruning
# After a build: of each image's tarballs keep the KEEP last used (.info touched at every use:
# other worktrees and labs use theirs) and always the ones of this run; drop dangling images
# from buildah's storage (earlier builds; the layer cache of the current build stays: it has
# children). Base images of other hashes stay (77 MB each; `rm -rf` the cache to reset).
KEEP=4
BUILT=0
CURRENT=()
prune() {
    local name info tar n
    for name in metalxdp pause backend base; do
        n=0
        # shellcheck disable=SC2012,SC2045  # names are <name>-<16 hex>.tar.info
        for info in $(ls -t "$CACHE/$name"-????????????????.tar.info 2>/dev/null); do
            tar=${info%.info}
            n=$((n + 1))
            ((n > KEEP)) || continue
            [[ " ${CURRENT[*]} " == *" $tar "* ]] && continue
            rm -f "$tar" "$info"
        done
    done
    # the rootfs tarballs are only an intermediate step of a base image (kept in storage)
    find "$CACHE" -maxdepth 1 -name 'base-*.rootfs.tar' ! -name "base-$BASE_HASH.rootfs.tar" -delete
    B rmi --prune >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- main
wanted=("$@")
((${#wanted[@]})) || wanted=(metalxdp pause backend)
t0=$SECONDS
out=()
for w in "${wanted[@]}"; do
    case "$w" in
        base)
            build_base
            if ! cached base "$CACHE/base-$BASE_HASH.tar"; then
                s=$SECONDS; push "$BASE_REF" "$CACHE/base-$BASE_HASH.tar"
                finish base "$BASE_REF" "$CACHE/base-$BASE_HASH.tar" "$s"
            fi
            out+=("base $BASE_REF $CACHE/base-$BASE_HASH.tar") ;;
        metalxdp) build_metalxdp; out+=("metalxdp $METALXDP_REF $METALXDP_TAR") ;;
        pause) build_pause; out+=("pause $PAUSE_REF $PAUSE_TAR") ;;
        backend) build_backend; out+=("backend $BACKEND_REF $BACKEND_TAR") ;;
        *) die "unknown image $w (base, metalxdp, pause, backend)" ;;
    esac
done
for o in "${out[@]}"; do CURRENT+=("${o##* }"); done
((BUILT == 0)) || prune
say "done in $((SECONDS - t0))s; import with: ctr -a SOCK -n k8s.io images import TARBALL"
printf '%s\n' "${out[@]}"
