#!/usr/bin/env bash
# Kubernetes node VMs: k3s (node1 the server, the others agents), what the metalxdp agent needs
# on the host (kernel headers, bpffs, bpftool to look at it), and the metalxdp image.
#
# Why k3s and not kubeadm: one binary and one command per node, a cluster in about a minute on
# a laptop, with flannel as CNI and the upstream kube-proxy (iptables), which is what metalxdp
# needs from a cluster. kubeadm is closer to many production setups but needs a container
# runtime, a CNI and kubelet packages set up by hand on every VM. k3s ships two things that
# would compete with metalxdp and are switched off below: servicelb (klipper-lb, its own
# LoadBalancer implementation) and traefik (an ingress that would take a LoadBalancer IP from
# our pools).
#
# Idempotent: k3s is (re)installed only when it is missing or its configuration changed.
set -euo pipefail
# shellcheck source=lib.sh
. "${REPO:-/vagrant-repo}/vagrant/provision/lib.sh"

: "${K3S_ROLE:?K3S_ROLE must be server or agent}"
: "${K3S_TOKEN:?K3S_TOKEN must be set (the Vagrantfile keeps one in .vagrant/)}"
: "${K3S_CHANNEL:=stable}"
: "${K3S_VERSION:=}"

apt_install curl ca-certificates bpftool iptables openssl
kernel="$(uname -r)"
[ -e "/lib/modules/$kernel/build/include" ] ||
    die "no kernel headers for the running kernel $kernel (/lib/modules/$kernel/build):" \
        "run \`vagrant reload $LAB_HOST --provision-with kernel,node\`"
# the agent pins its XDP program and maps here (systemd mounts it on Debian 12; other boxes)
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# shellcheck disable=SC2119  # no routes: node and client share the segment, VIPs are local
lab_net_unit
IFACE="$(lab_iface)"

# dual-stack pods and Services need IPv6 forwarding (IPv4's is set by k3s itself)
write_if_changed /etc/sysctl.d/90-metalxdp-node.conf <<'SYSCTL' || true
net.ipv4.ip_forward = 1
net.ipv6.conf.all.forwarding = 1
SYSCTL
sysctl -q -p /etc/sysctl.d/90-metalxdp-node.conf

# ---- k3s -----------------------------------------------------------------------------------
# node-ip: the lab addresses, not the NAT interface's (on VirtualBox every VM's eth0 has the
# same 10.0.2.15). Both families, so the Node has an IPv4 and an IPv6 InternalIP like the
# namespace lab's nodes, and the agent peers with the router over both.
server_ip="$(host_var "$SERVER_NODE" IP4)"
if [ "$K3S_ROLE" = server ]; then
    unit=k3s
    config="$(cat <<CONFIG
# written by vagrant/provision/node.sh (metalxdp lab)
node-ip: "$MY_IP4,$MY_IP6"
advertise-address: "$MY_IP4"
tls-san: ["$MY_IP4"]
flannel-iface: "$IFACE"
cluster-cidr: "$K3S_CLUSTER_CIDR"
service-cidr: "$K3S_SERVICE_CIDR"
cluster-dns: "$K3S_CLUSTER_DNS"
# servicelb (klipper-lb) would answer LoadBalancer Services itself; traefik would take an IP
disable: [servicelb, traefik]
write-kubeconfig-mode: "0644"
token: "$K3S_TOKEN"
CONFIG
)"
else
    unit=k3s-agent
    config="$(cat <<CONFIG
# written by vagrant/provision/node.sh (metalxdp lab)
server: "https://$server_ip:6443"
token: "$K3S_TOKEN"
node-ip: "$MY_IP4,$MY_IP6"
flannel-iface: "$IFACE"
CONFIG
)"
fi
changed=0
printf '%s\n' "$config" | write_if_changed /etc/rancher/k3s/config.yaml 0600 && changed=1

if [ "$changed" = 1 ] || ! command -v k3s >/dev/null || ! systemctl is-active -q "$unit"; then
    log "installing k3s ($K3S_ROLE, ${K3S_VERSION:-channel $K3S_CHANNEL}) from get.k3s.io"
    install_env=(INSTALL_K3S_EXEC="$K3S_ROLE" INSTALL_K3S_CHANNEL="$K3S_CHANNEL")
    [ -n "$K3S_VERSION" ] && install_env+=(INSTALL_K3S_VERSION="$K3S_VERSION")
    [ "$K3S_ROLE" = agent ] && install_env+=(K3S_URL="https://$server_ip:6443" K3S_TOKEN="$K3S_TOKEN")
    curl -sfL https://get.k3s.io -o /tmp/k3s-install.sh
    env "${install_env[@]}" sh /tmp/k3s-install.sh
fi
systemctl is-active -q "$unit" || die "$unit is not running: journalctl -u $unit"

if [ "$K3S_ROLE" = server ]; then
    log "waiting for node $LAB_HOST to be Ready"
    for _ in $(seq 60); do
        k3s kubectl get node "$LAB_HOST" >/dev/null 2>&1 && break
        sleep 2
    done
    k3s kubectl wait --for=condition=Ready "node/$LAB_HOST" --timeout=300s
fi

# ---- the metalxdp image --------------------------------------------------------------------
# deploy/ runs $METALXDP_IMAGE with imagePullPolicy IfNotPresent and no registry serves it:
# it must be in this node's containerd. In order of preference:
#  1. vagrant/images/metalxdp.tar, built once on the host (see vagrant/README.md):
#       podman build -t $METALXDP_IMAGE -f deploy/Containerfile .
#       podman save --format docker-archive -o vagrant/images/metalxdp.tar $METALXDP_IMAGE
#  2. already imported (a re-provision);
#  3. built here from deploy/Containerfile with podman (minutes per node, needs internet).
image_marker=/var/lib/metalxdp-lab/image.sha256
image_tar="$REPO/vagrant/images/metalxdp.tar"
have_image() { k3s ctr images ls -q | grep -Fqx "$METALXDP_IMAGE"; }
import_tar() {
    log "importing $1 into k3s's containerd"
    k3s ctr images import "$1"
    have_image || die "$1 does not contain $METALXDP_IMAGE (tag it so before podman save)"
}
if [ -f "$image_tar" ]; then
    sum="$(sha256sum "$image_tar" | cut -d' ' -f1)"
    if ! have_image || [ "$(cat "$image_marker" 2>/dev/null)" != "$sum" ]; then
        import_tar "$image_tar"
        mkdir -p "$(dirname "$image_marker")"
        printf '%s\n' "$sum" >"$image_marker"
    fi
elif have_image; then
    log "$METALXDP_IMAGE is already in containerd"
else
    containerfile=""
    for f in "$REPO/deploy/Containerfile" "$REPO/Containerfile"; do
        [ -f "$f" ] && containerfile="$f" && break
    done
    [ -n "$containerfile" ] ||
        die "$METALXDP_IMAGE is not available: put an image archive at vagrant/images/metalxdp.tar" \
            "(see vagrant/README.md) or add deploy/Containerfile, then \`vagrant rsync && vagrant provision\`"
    apt_install --with-recommends podman   # recommends: networking for RUN steps, fuse-overlayfs, ...
    log "building $METALXDP_IMAGE from ${containerfile#"$REPO"/} (once per node; a prebuilt vagrant/images/metalxdp.tar is faster)"
    podman build -t "$METALXDP_IMAGE" -f "$containerfile" "$REPO"
    podman save --format docker-archive -o /var/tmp/metalxdp.tar "$METALXDP_IMAGE"
    import_tar /var/tmp/metalxdp.tar
    rm -f /var/tmp/metalxdp.tar
fi

log "node ready: $MY_IP4 / $MY_IP6 on $IFACE, k3s $K3S_ROLE, $(k3s --version | head -n1)"
