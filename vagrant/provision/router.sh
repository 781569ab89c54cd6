#!/usr/bin/env bash
# Router VM: FRR with the lab's frr.conf (one BGP session per node over IPv4 and IPv6, ECMP over
# their routes; bfdd running so BFD can be switched on), IP forwarding, no ICMP redirects.
# Idempotent: `vagrant provision router` re-applies only what changed.
set -euo pipefail
# shellcheck source=lib.sh
. "${REPO:-/vagrant-repo}/vagrant/provision/lib.sh"

apt_install frr frr-pythontools tcpdump curl
# shellcheck disable=SC2119  # no routes: the router learns the VIPs over BGP
lab_net_unit
IFACE="$(lab_iface)"

# Forwarding: zebra turns it on from frr.conf's "ip forwarding" too; the sysctl file keeps it
# across FRR restarts. No redirects: the client sends BGP-VIP traffic to us and we forward it
# out of the same interface to a node; a redirect would make the client bypass the router
# (and the ECMP route we want to show).
write_if_changed /etc/sysctl.d/90-metalxdp-router.conf <<SYSCTL || true
net.ipv4.ip_forward = 1
net.ipv6.conf.all.forwarding = 1
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.default.send_redirects = 0
net.ipv4.conf.$IFACE.send_redirects = 0
SYSCTL
sysctl -q -p /etc/sysctl.d/90-metalxdp-router.conf

restart=0
# bgpd and bfdd (zebra and staticd always run)
for daemon in bgpd bfdd; do
    if ! grep -q "^$daemon=yes" /etc/frr/daemons; then
        sed -i -E "s/^$daemon=.*/$daemon=yes/" /etc/frr/daemons
        log "enabled $daemon in /etc/frr/daemons"
        restart=1
    fi
done
# one integrated frr.conf, read by all daemons through vtysh -b (Debian's default; made sure)
if ! grep -q '^service integrated-vtysh-config' /etc/frr/vtysh.conf 2>/dev/null; then
    echo 'service integrated-vtysh-config' >>/etc/frr/vtysh.conf
    restart=1
fi
# the configuration: generated/frr.conf, rendered by the same function as the namespace lab's
if write_if_changed /etc/frr/frr.conf 0640 <"$REPO/vagrant/generated/frr.conf"; then
    restart=1
fi
chown frr:frr /etc/frr/frr.conf

systemctl enable -q frr
if [ "$restart" = 1 ] || ! systemctl is-active -q frr; then
    log "restarting FRR"
    systemctl restart frr
fi
for _ in $(seq 30); do
    vtysh -c 'show bgp summary' >/dev/null 2>&1 && break
    sleep 1
done
vtysh -c 'show bgp summary' || die "bgpd does not answer: journalctl -u frr"

log "router ready: AS $ROUTER_ASN at $MY_IP4 / $MY_IP6, peering with the nodes ($NODES, AS $NODE_ASN)"
log "sessions come up once the metalxdp agents run; look with:"
log "  vagrant ssh router -c \"sudo vtysh -c 'show bgp summary' -c 'show bgp ipv4 unicast' -c 'show bfd peers'\""
