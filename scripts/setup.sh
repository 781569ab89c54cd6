#!/usr/bin/env bash
# metalxdp setup: installs everything `make demo` and `make test` need, idempotently.
#   - Debian packages (BCC, bpftool, FRR, BIRD2, etcd, headers, lab tools)
#   - kernel headers linked where BCC looks for them; bpffs mounted
#   - kube-apiserver + kube-controller-manager built from Debian's kubernetes source (cached)
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
      curl netsniff-ng iputils-ping procps psmisc golang-go shellcheck vagrant
      golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev dpkg-dev)
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

# ---- 3. kube-apiserver (+ controller-manager) from Debian's source, cached --------------
BIN=$CACHE/bin
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  step 3/6 "kube-apiserver: ok (cached in $BIN)"
else
  step 3/6 "kube-apiserver: building from Debian's kubernetes source (first run only, ~5 min on 2 cores)"
  mkdir -p "$CACHE/src" "$BIN"
  src_list=/etc/apt/sources.list.d/metalxdp-src.sources
  if [ ! -f "$src_list" ]; then
    # a deb-src copy of the first stanza of Debian's sources (same URIs and Signed-By)
    awk 'BEGIN{RS="";ORS="\n\n"} NR==1{sub(/Types: deb/,"Types: deb-src"); print}' \
      /etc/apt/sources.list.d/debian.sources > "$src_list"
    apt-get update -q
  fi
  cd "$CACHE/src"
  ls kubernetes_*.orig.tar.* >/dev/null 2>&1 || apt-get source --download-only -q kubernetes
  orig=$(ls kubernetes_*.orig.tar.* | head -n1)
  tree=$CACHE/src/tree
  if [ ! -d "$tree/cmd/kube-apiserver" ]; then
    echo "  unpacking $orig"
    rm -rf "$tree" && mkdir -p "$tree"
    tar -xf "$orig" -C "$tree" --strip-components=1
  fi
  # Debian's reflect2/json-iterator instead of the vendored ones: the vendored reflect2
  # crashes (reflect2.UnsafeIterate) on Go 1.19 at the first custom object.
  for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    v=$tree/vendor/$pkg
    rm -rf "$v" && mkdir -p "$v"
    find "/usr/share/gocode/src/$pkg" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$v/" \;
  done
  cd "$tree"
  start=$(date +%s)
  # make (not plain go build) so the binaries carry Kubernetes' version ldflags
  ( GOCACHE=$CACHE/gocache make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$CACHE/build.log" 2>&1 ) &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    sleep 15; echo "    ... building, $(( $(date +%s) - start ))s ($(tail -n1 "$CACHE/build.log" | cut -c1-80))"
  done
  wait $pid || { tail -n 30 "$CACHE/build.log"; die "kube-apiserver build failed (log: $CACHE/build.log)"; }
  for what in kube-apiserver kube-controller-manager; do
    cp "$(find "$tree/_output" -type f -name "$what" | head -n1)" "$BIN/$what"
  done
  echo "  built in $(( $(date +%s) - start ))s; cached in $BIN"
fi

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
"$BIN/kube-apiserver" --version >/dev/null || die "$BIN/kube-apiserver does not run"
step 6/6 "ready: $("$BIN/kube-apiserver" --version), $(/usr/bin/python3 --version)"
