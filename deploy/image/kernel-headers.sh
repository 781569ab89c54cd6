#!/bin/sh
# kernel-headers.sh DEST: put the kernel headers BCC needs for metalxdp's XDP programs into DEST,
# so the image compiles bpf/*.c without the node's /lib/modules or /usr/src (Talos, Flatcar,
# RHCOS and minimal cloud images have none). Run inside the image build, after `apt-get update`.
#
# Why not `apt-get install linux-headers-amd64`: it depends on gcc and linux-kbuild (~100 MB
# that BCC never uses; BCC compiles with the clang inside libbcc). Why one merged tree: Debian
# splits the headers into linux-headers-<ver>-<flavour> (generated files: autoconf.h, version.h)
# and linux-headers-<ver>-common (the rest, include/linux/kconfig.h among them); BCC pointed at
# a single directory (BCC_KERNEL_SOURCE) needs both in it.
#
# Which headers: the XDP programs include uapi headers only, but BCC's own helpers.h pulls in
# include/linux/* and asm/* (kconfig.h, compiler.h, bitops.h, page.h ...). Kept: include/{linux,
# uapi,asm-generic,vdso,net,generated} and arch/<arch>/include; dropped: the other architectures,
# drivers' headers (drm, sound, media, dt-bindings, ...), scripts and tools (~75 MB -> ~30 MB).
#
# The headers are Debian bookworm's kernel (6.1), not the node's: an XDP program uses only
# uapi types and BPF helpers, whose ABI the kernel keeps stable, so they load on newer
# kernels (measured on 6.18). A program that needs kernel-internal structs (kprobes) would not.
set -eu
dest=$1
case "$(dpkg --print-architecture)" in
  amd64) flavour=amd64 karch=x86 ;;
  arm64) flavour=arm64 karch=arm64 ;;
  *) echo "kernel-headers.sh: no kernel header flavour known for $(dpkg --print-architecture)" >&2; exit 1 ;;
esac
# linux-headers-amd64 (metapackage) -> linux-headers-6.1.0-NN-amd64 -> ...-common
pkg=$(apt-cache depends "linux-headers-$flavour" | sed -n "s/^ *Depends: \(linux-headers-[0-9].*-$flavour\)\$/\1/p" | head -n1)
[ -n "$pkg" ] || { echo "kernel-headers.sh: cannot resolve linux-headers-$flavour" >&2; exit 1; }
common="${pkg%-"$flavour"}-common"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
apt-get download -q "$pkg" "$common" >/dev/null 2>&1 || apt-get download "$pkg" "$common"
for d in ./*.deb; do dpkg-deb -x "$d" root; done
mkdir -p "$dest"
( cd "root/usr/src/$common" \
  && tar -cf - include/linux include/uapi include/asm-generic include/vdso include/net "arch/$karch/include" ) \
  | tar -xf - -C "$dest"
( cd "root/usr/src/$pkg" && tar -cf - include/generated "arch/$karch/include/generated" ) | tar -xf - -C "$dest"
echo "$pkg" > "$dest/VERSION"
test -f "$dest/include/linux/kconfig.h" && test -f "$dest/include/generated/autoconf.h"
echo "kernel headers: $pkg + $common -> $dest ($(du -sh "$dest" | cut -f1))"
