#!/usr/bin/env bash
# Kubernetes node VMs, before node.sh: kernel headers for the running kernel. The agent's BCC
# compiles the XDP program at start against /lib/modules/$(uname -r)/build, which the agent pod
# mounts from the node (with /usr/src).
#
# Debian's archive keeps only the current kernel ABI: when the box's kernel is older, its
# headers are gone, so we install the current kernel with its headers; the Vagrantfile reboots
# the VM after this script (reboot: true), so the node runs the kernel the headers are for.
set -euo pipefail
# shellcheck source=lib.sh
. "${REPO:-/vagrant-repo}/vagrant/provision/lib.sh"

running="$(uname -r)"
if [ -e "/lib/modules/$running/build/include" ]; then
    log "kernel headers for $running are installed"
    exit 0
fi
apt-get update -q
_APT_UPDATED=1
candidate="$(apt-cache policy "linux-headers-$running" | awk '/Candidate:/ {print $2}')"
if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    apt_install "linux-headers-$running"
    log "installed linux-headers-$running"
else
    arch="$(dpkg --print-architecture)"
    log "no headers for the box's kernel $running in the archive any more:" \
        "installing the current kernel and its headers (linux-image-$arch linux-headers-$arch);" \
        "Vagrant reboots the VM into it"
    apt_install "linux-image-$arch" "linux-headers-$arch"
fi
