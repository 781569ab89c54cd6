#!/usr/bin/env bash
# metalxdp setup: installs everything `make demo` and `make test` need, idempotently.
#   - Debian packages (BCC, bpftool, FRR, BIRD2, etcd, headers, lab tools)
#   - kernel headers linked where BCC looks for them; bpffs mounted
#   - Kubernetes (apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl) of one
#     pinned release built from Go modules through scripts/kube (cached)
#   - a virtualenv (.venv) that sees Debian's bcc, with the project installed editable
# Each step prints a "[setup n/6]" line; a step already done says "ok (cached)".
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${METALXDP_CACHE:-/var/cache/metalxdp}
VENV=${METALXDP_VENV:-$here/.venv}
step() { printf '\033[1m[setup %s]\033[0m %s\n' "$1" "$2"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ---- 0. preconditions: clear errors before doing anything -------------------------------
[ "$(uname -s)" = Linux ] || die "metalxdp needs Linux (found $(uname -s)): XDP and network namespaces are Linux features."
[ "$(id -u)" = 0 ] || die "run as root (sudo make ...): setup installs Debian packages, mounts bpffs and creates network namespaces."
[ -e /sys/kernel/btf/vmlinux ] || echo "setup: warning: /sys/kernel/btf/vmlinux is missing: this kernel has no BTF; BCC may still work with headers."
command -v apt-get >/dev/null || die "apt-get not found: setup supports Debian 12 (bookworm) and derivatives."

# ---- 1. Debian packages -----------------------------------------------------------------
PKGS=(python3-bpfcc libbpfcc bpftool linux-headers-amd64 iproute2 ethtool nftables frr
      frr-pythontools bird2 etcd-server arping ndisc6 tcpdump python3-venv python3-pip openssl
      curl netsniff-ng iputils-ping prometheus procps psmisc shellcheck vagrant
      containerd runc containernetworking-plugins mmdebstrap buildah busybox-static conntrack iptables)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  step 1/6 "Debian packages: ok (all ${#PKGS[@]} installed)"
else
  step 1/6 "Debian packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- 2. kernel headers where BCC looks, bpffs -------------------------------------------
kmod=/lib/modules/$(uname -r)
if [ -e "$kmod/build/include/linux/kconfig.h" ] || [ -e "$kmod/build/include/generated" ] ; then
  step 2/6 "kernel headers: ok ($kmod/build)"
else
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  [ -n "$hdr" ] || die "no /usr/src/linux-headers-*-amd64: install linux-headers-amd64"
  common=${hdr%-amd64}-common
  mkdir -p "$kmod"
  ln -sfn "$hdr" "$kmod/build"
  ln -sfn "$common" "$kmod/source"
  step 2/6 "kernel headers: linked $kmod/build -> $hdr"
fi
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || die "cannot mount bpffs at /sys/fs/bpf: is BPF enabled in this kernel?"
fi
# `ip netns exec` remounts /sys, hiding /sys/fs/bpf from agents inside lab namespaces; /run is not
# remounted, so an alias there lets them reach the same bpffs (pins survive agent restarts)
mkdir -p /run/metalxdp/bpffs
mountpoint -q /run/metalxdp/bpffs || mount --bind /sys/fs/bpf /run/metalxdp/bpffs
[ -e /proc/sys/net/core/bpf_jit_enable ] || die "no BPF JIT (/proc/sys/net/core/bpf_jit_enable): this kernel lacks BPF support."

# ---- 3. Kubernetes binaries of one pinned release, from Go modules, cached ---------------
# scripts/kube is a wrapper module (go.mod + go.sum committed, cmd/*/main.go call the upstream
# commands); the release lives in scripts/kube/VERSION only. The cache key is the version plus
# the hash of go.sum and the main files, so a second run builds nothing.
KUBE_DIR=$here/scripts/kube
KUBE_VERSION=$(cat "$KUBE_DIR/VERSION")
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
grep -q "^require.*k8s.io/kubernetes $KUBE_VERSION\$\|^	k8s.io/kubernetes $KUBE_VERSION\$" "$KUBE_DIR/go.mod" \
  || die "scripts/kube/VERSION ($KUBE_VERSION) and scripts/kube/go.mod disagree"
key=$(cat "$KUBE_DIR/go.mod" "$KUBE_DIR/go.sum" "$KUBE_DIR"/cmd/*/main.go | sha256sum | cut -c1-12)
KBIN=$CACHE/kube/$KUBE_VERSION-$key
have_all() { for c in "${KUBE_CMDS[@]}"; do [ -x "$KBIN/$c" ] || return 1; done; }
if have_all; then
  step 3/6 "Kubernetes $KUBE_VERSION: ok (cached in $KBIN)"
else
  command -v go >/dev/null || die "Go not found: the polyglot machine kind has Go 1.26 preinstalled (Kubernetes ${KUBE_VERSION%.*} needs Go >= 1.26)"
  step 3/6 "Kubernetes $KUBE_VERSION: building ${KUBE_CMDS[*]} from Go modules (first run only, ~20-25 min on 2 cores)"
  mkdir -p "$KBIN.tmp"
  export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  start=$(date +%s)
  ( cd "$KUBE_DIR" && go mod download >"$CACHE/kube-build.log" 2>&1 ) \
    || { tail -n 20 "$CACHE/kube-build.log"; die "go mod download failed: is the Go module proxy reachable? (log: $CACHE/kube-build.log)"; }
  for c in "${KUBE_CMDS[@]}"; do
    [ -x "$KBIN.tmp/$c" ] && continue
    t0=$(date +%s)
    ( cd "$KUBE_DIR" && go build -p "$(nproc)" -trimpath -ldflags "$ld" -o "$KBIN.tmp/$c" "./cmd/$c" >>"$CACHE/kube-build.log" 2>&1 ) &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
      sleep 20; kill -0 $pid 2>/dev/null && echo "    ... $c: $(( $(date +%s) - t0 ))s (total $(( $(date +%s) - start ))s)"
    done
    wait $pid || { tail -n 30 "$CACHE/kube-build.log"; die "building $c failed (log: $CACHE/kube-build.log)"; }
    echo "  built $c in $(( $(date +%s) - t0 ))s"
  done
  rm -rf "$KBIN" && mv "$KBIN.tmp" "$KBIN"
  echo "  Kubernetes $KUBE_VERSION built in $(( $(date +%s) - start ))s; cached in $KBIN"
fi
# stable names for the rig: $CACHE/bin/<cmd> -> the binaries of the pinned release
mkdir -p "$CACHE/bin"
for c in "${KUBE_CMDS[@]}"; do ln -sfn "$KBIN/$c" "$CACHE/bin/$c"; done
# etcd: Debian's etcd-server 3.4 works with the 1.36 server (see docs)
command -v etcd >/dev/null || die "etcd not found: install etcd-server"

# ---- 4. virtualenv that sees Debian's bcc ----------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  step 4/6 "virtualenv: creating $VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
else
  step 4/6 "virtualenv: ok ($VENV)"
fi
stamp=$VENV/.metalxdp-installed
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  step 5/6 "python packages: pip install -e .[test]"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
  touch "$stamp"
else
  step 5/6 "python packages: ok"
fi

# ---- 6. sanity: bcc importable, kube-apiserver runs ------------------------------------
"$VENV/bin/python" -c 'import bcc' || die "python cannot import bcc: is python3-bpfcc installed for /usr/bin/python3?"
"$CACHE/bin/kube-apiserver" --version >/dev/null || die "$CACHE/bin/kube-apiserver does not run"
ln -sfn "$CACHE/bin/kubectl" "$VENV/bin/kubectl"
step 6/6 "ready: $("$CACHE/bin/kube-apiserver" --version), kubectl $("$CACHE/bin/kubectl" version --client -o json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(/usr/bin/python3 --version)"
