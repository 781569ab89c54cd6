"""BGPPeer ``interface`` (BGP unnumbered) against real FRR: ``neighbor eth0 interface
remote-as external`` on the router, our ExaBGP on the node, and a link with no IPv4 address and
no global IPv6 address on the node's side. Each end learns the other's link-local from its
router advertisements; IPv4 and IPv6 routes travel over the one IPv6 session, IPv4 with an IPv6
next hop (RFC 8950). Checked in the router's kernel, and by pinging both VIPs from it."""
from __future__ import annotations

import ipaddress
import json
import time

import pytest
from prometheus_client import CollectorRegistry

from agent.bgp.advertise import active_peers, plan_for_node
from agent.bgp.config_render import NodeAddresses
from agent.bgp.exabgp import BGPSpeaker
from agent.bgp.unnumbered import Unnumbered, resolve_peers
from agent.nodeview import NodeView
from metalxdp.config.parse import parse
from metalxdp.rig.frr import RouterSpec, render_frr_conf
from metalxdp.rig.procs import wait_for

from .test_bgp_frr import NODE_ASN, ROUTER_ASN, cr, service

pytestmark = pytest.mark.integration
VIP4, VIP6 = "198.51.100.10", "2001:db8:5::10"


def frr_conf() -> str:
    conf = render_frr_conf(RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1", neighbors=()))
    head = " timers bgp 3 9\n"
    return conf.replace(head, head + " neighbor eth0 interface remote-as external\n"
                        " neighbor eth0 timers connect 1\n").replace(
        "  maximum-paths ibgp 8\n", "  maximum-paths ibgp 8\n  neighbor eth0 activate\n")


def kernel_route(router, prefix: str) -> list[dict]:
    fam = "-6" if ":" in prefix else "-4"
    out = router.host.run(["ip", "-j", fam, "route", "show", prefix], check=False).stdout
    return json.loads(out or "[]")


def via(route: dict) -> str:
    v = route.get("via")
    return v.get("host", "") if isinstance(v, dict) else route.get("gateway", "")


def test_unnumbered_session_carries_ipv4_and_ipv6_with_link_local_next_hops(topology, frr_router, tmp_path):
    node = topology.add_host("node1")                 # only link-local on eth0
    frr_router.start(frr_conf())
    view = NodeView("node1", {"kubernetes.io/hostname": "node1"})
    config = parse([cr("IPAddressPool", "bgp", {"addresses": ["198.51.100.0/28", "2001:db8:5::/120"]}),
                    cr("BGPAdvertisement", "bgp", {"ipAddressPools": ["bgp"]}),
                    cr("BGPPeer", "tor", {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "interface": "eth0",
                                          "holdTime": "9s"}, "v1beta2")])
    peers = active_peers(config, view)
    assert peers["tor"].peer_address is None and peers["tor"].interface == "eth0"
    t0 = time.monotonic()
    un = Unnumbered(netns=node.netns)
    sp = BGPSpeaker(NodeAddresses("node1", None, None), tmp_path / "node1", netns=node.netns,
                    registry=CollectorRegistry())
    try:
        router_ll = un.wait_router("eth0", 15)
        assert router_ll is not None, "no router advertisement from FRR on eth0"
        found = time.monotonic() - t0
        ready, waiting = resolve_peers(peers, un.links(["eth0"]))
        assert not waiting and ready["tor"].peer_address == router_ll
        our_ll = ready["tor"].source_address
        assert our_ll.is_link_local
        sp.set_peers(ready.values())
        plan = plan_for_node(config, view, [service(ips=(VIP4, VIP6))])
        assert plan.advertisements["tor"], plan
        sp.set(plan.advertisements, plan.prefix_owners)

        def established():
            n = frr_router.json("show bgp neighbors json") or {}
            return n.get("eth0", {}).get("bgpState") == "Established"
        wait_for("FRR's eth0 neighbor Established", established, timeout=60)
        established_after = time.monotonic() - t0
        neigh = frr_router.json("show bgp neighbors json")["eth0"]
        assert neigh["remoteAs"] == NODE_ASN
        assert neigh.get("hostForeign") == str(our_ll)
        caps = json.dumps(neigh.get("neighborCapabilities", {})).lower()
        assert "extendednexthop" in caps.replace(" ", "").replace("_", ""), caps

        def routed():
            r4, r6 = kernel_route(frr_router, f"{VIP4}/32"), kernel_route(frr_router, f"{VIP6}/128")
            return r4 and r6 and via(r4[0]) == str(our_ll) and via(r6[0]) == str(our_ll)
        wait_for(f"{VIP4} and {VIP6} via {our_ll} in the router's kernel", routed, timeout=30)
        routed_after = time.monotonic() - t0
        r4 = kernel_route(frr_router, f"{VIP4}/32")[0]
        assert r4["via"]["family"] == "inet6" and r4["dev"] == "eth0", r4   # RFC 8950 next hop

        # traffic: the VIPs answer over the link-local next hops (the node's return route to
        # the router's IPv4 is the operator's, as with MetalLB)
        node.run(["ip", "addr", "add", f"{VIP4}/32", "dev", "lo"])
        node.run(["ip", "addr", "add", f"{VIP6}/128", "dev", "lo"])
        node.run(["ip", "route", "add", "192.0.2.1/32", "via", "inet6", str(router_ll), "dev", "eth0"])
        frr_router.host.run(["ping", "-c", "1", "-W", "3", VIP4])
        frr_router.host.run(["ping", "-6", "-c", "1", "-W", "3", VIP6])

        # withdraw: the service goes, both routes go
        sp.set({"tor": frozenset()}, {})
        wait_for("both routes withdrawn", lambda: not kernel_route(frr_router, f"{VIP4}/32")
                 and not kernel_route(frr_router, f"{VIP6}/128"), timeout=30)
        print(f"\nunnumbered: router found {found:.2f} s, Established {established_after:.2f} s, "
              f"routes in the router's kernel {routed_after:.2f} s after start")
    finally:
        sp.close()
        un.close()


def test_unnumbered_peer_waits_for_an_interface_that_does_not_exist(topology, tmp_path):
    node = topology.add_host("node1")
    config = parse([cr("BGPPeer", "tor", {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "interface": "eth9"},
                       "v1beta2")])
    un = Unnumbered(netns=node.netns)
    try:
        view = NodeView("node1", {})
        peers = active_peers(config, view)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, waiting = resolve_peers(peers, un.links(["eth9"]))
            if "does not exist" in waiting.get("tor", ""):
                break
            time.sleep(0.1)
        assert ready == {} and "interface eth9 does not exist" in waiting["tor"]
    finally:
        un.close()
