#!/usr/bin/env bash
# Client VM, provisioned last: routes to the BGP pools via the router (the L2 pool is on this
# segment), then curl every demo VIP and say which path it took.
# Idempotent: the routes live in a systemd unit; the checks only read.
set -euo pipefail
# shellcheck source=lib.sh
. "${REPO:-/vagrant-repo}/vagrant/provision/lib.sh"

apt_install curl iputils-arping ndisc6 tcpdump

routes=()
for prefix in $BGP_ROUTES; do
    case $prefix in
        *:*) routes+=("$prefix via $ROUTER_IP6") ;;
        *) routes+=("$prefix via $ROUTER_IP4") ;;
    esac
done
lab_net_unit "${routes[@]}"
IFACE="$(lab_iface)"

url() { case $1 in *:*) printf 'http://[%s]/' "$1" ;; *) printf 'http://%s/' "$1" ;; esac; }

# wait_curl VIP SECONDS: the first answer, or failure after SECONDS
wait_curl() {
    local vip=$1 deadline=$((SECONDS + $2)) body
    while [ "$SECONDS" -lt "$deadline" ]; do
        if body="$(curl -s -m 2 "$(url "$vip")")" && [ -n "$body" ]; then
            printf '%s' "$body"
            return 0
        fi
        sleep 2
    done
    return 1
}

failed=0
check() {
    local vip=$1 how=$2 body
    log "curl $(url "$vip")   ($how)"
    if body="$(wait_curl "$vip" 300)"; then
        log "  -> answered by pod $body"
        for _ in 1 2 3; do log "  -> $(curl -s -m 2 "$(url "$vip")" || echo 'no answer')"; done
    else
        log "  -> NO ANSWER after 300 s"
        failed=1
    fi
}

for vip in $DEMO_L2_VIPS; do
    check "$vip" "L2: same segment; the VIP's ARP/NDP answered by one node's XDP program"
    ip neigh show "$vip" dev "$IFACE" | sed "s/^/[$LAB_HOST]   neighbour: /"
done
for vip in $DEMO_BGP_VIPS; do
    check "$vip" "BGP: via the router $ROUTER_IP4/$ROUTER_IP6, which has one ECMP next hop per node"
    ip route get "$vip" | head -n1 | sed "s/^/[$LAB_HOST]   route: /"
done

if [ "$failed" = 1 ]; then
    die "a demo VIP does not answer. Look at:
    vagrant ssh node1 -c 'sudo k3s kubectl get nodes,svc -o wide; sudo k3s kubectl -n $METALLB_NAMESPACE get pods -o wide'
    vagrant ssh node1 -c 'sudo k3s kubectl -n $METALLB_NAMESPACE logs -l component=speaker --tail=50'
    vagrant ssh router -c \"sudo vtysh -c 'show bgp summary'\""
fi
cat <<EOF_INFO
[$LAB_HOST] the lab works. Next (vagrant/README.md has more):
    vagrant ssh client -c 'while sleep 0.2; do curl -s -m 1 http://${DEMO_L2_VIPS%% *}/ || echo FAIL; done'
    vagrant ssh node2 -c 'sudo ip link set $IFACE down'    # in another terminal: cut a node, watch failover
    vagrant ssh router -c "sudo vtysh -c 'show bgp ipv4 unicast' -c 'show bfd peers'"
EOF_INFO
