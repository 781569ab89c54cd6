"""BGPPeer localASN, dynamicASN, keepaliveTime and connectTime, and the origin of our routes,
on the wire against real FRR.

Each test parses real metallb.io resources, renders ExaBGP's configuration the agent's way
(BGPSpeaker) and checks what FRR itself reports: the AS it sees in our OPEN, the AS path and
origin of the routes it installed, whether the session is iBGP. Lab as test_bgp_frr.py: router
192.0.2.1, nodes 192.0.2.1x, one segment.
"""
from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest

from agent.bgp.advertise import active_peers, plan_for_node
from metalxdp.config.parse import parse
from metalxdp.rig.frr import Neighbor, RouterSpec, render_frr_conf
from metalxdp.rig.procs import wait_for

from .test_bgp_frr import (NODE_ASN, ROUTER_ASN, V4, LogCapture, add_nodes, cr, service,
                           wait_nexthops)

pytestmark = pytest.mark.integration
ip = ipaddress.ip_address


def resources(*peers: dict) -> list[dict]:
    return [cr("IPAddressPool", "bgp", {"addresses": ["203.0.113.0/24"]}),
            cr("BGPAdvertisement", "bgp", {"ipAddressPools": ["bgp"], "localPref": 150}),
            *peers]


def peer(name: str, node: str, **spec) -> dict:
    spec = {"myASN": NODE_ASN, "peerAddress": "192.0.2.1", "holdTime": "9s",
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": node}}], **spec}
    return cr("BGPPeer", name, spec, "v1beta2")


@pytest.fixture
def nodes(topology, frr_router, tmp_path):
    made = []

    def make(count: int):
        made.extend(add_nodes(topology, count, tmp_path))
        return made

    yield make
    for n in made:
        n.speaker.close()


@pytest.fixture
def logs():
    import logging

    from metalxdp.log import get_logger
    get_logger("agent")
    cap = LogCapture()
    lg = logging.getLogger("metalxdp.agent")
    lg.addHandler(cap)
    yield cap
    lg.removeHandler(cap)


def apply(node, config) -> None:
    node.speaker.set_peers(active_peers(config, node.view).values())
    plan = plan_for_node(config, node.view, [service(ips=(V4,))])
    node.speaker.set(plan.advertisements, plan.prefix_owners)


def router(frr_router, neighbors: list[tuple[str, int]], asn: int = ROUTER_ASN) -> None:
    frr_router.start(render_frr_conf(RouterSpec(asn=asn, router_id="192.0.2.1", neighbors=tuple(
        Neighbor(addr, a) for addr, a in neighbors))))


def paths(frr_router) -> dict[str, dict]:
    """Next hop -> the path FRR holds for our VIP."""
    out = frr_router.json(f"show bgp ipv4 unicast {V4}/32").get("paths", [])
    return {p["nexthops"][0]["ip"]: p for p in out}


def test_local_asn_per_node_is_the_as_the_router_sees(nodes, frr_router):
    """One myASN, a different localASN per node (MetalLB's way to give each node its own AS):
    FRR peers with each node as that AS, the AS path is that AS alone (no myASN), origin '?'."""
    n1, n2 = nodes(2)
    router(frr_router, [(n1.host.ip4, 64601), (n2.host.ip4, 64602)])
    config = parse(resources(peer("n1", "node1", peerASN=ROUTER_ASN, localASN=64601),
                             peer("n2", "node2", peerASN=ROUTER_ASN, localASN=64602)),
                   nodes={"node1": n1.labels, "node2": n2.labels})
    for n in (n1, n2):
        apply(n, config)
    wait_nexthops(frr_router, f"{V4}/32", {n1.host.ip4, n2.host.ip4})
    got = paths(frr_router)
    assert got[n1.host.ip4]["aspath"]["string"] == "64601"
    assert got[n2.host.ip4]["aspath"]["string"] == "64602"
    for p in got.values():
        assert p["origin"] == "incomplete"            # MetalLB's origin: '?' in `show bgp`
        assert p.get("locPrf", 100) == 100            # eBGP: no local preference sent
    neigh = frr_router.json(f"show bgp neighbors {n1.host.ip4} json")[n1.host.ip4]
    assert neigh["remoteAs"] == 64601 and neigh["localAs"] == ROUTER_ASN


def test_a_different_my_asn_per_node_on_disjoint_node_selectors(nodes, frr_router):
    """MetalLB v0.16's rule: peers whose nodeSelectors never select the same node may use
    different myASN (and routerID). Accepted, and each node opens its session as its own AS
    with its own router ID; a third peer that overlaps node1 with another myASN is refused."""
    n1, n2 = nodes(2)
    router(frr_router, [(n1.host.ip4, 64611), (n2.host.ip4, 64612)])
    node_labels = {"node1": n1.labels, "node2": n2.labels}
    config = parse(resources(peer("n1", "node1", myASN=64611, peerASN=ROUTER_ASN, routerID="198.18.0.11"),
                             peer("n2", "node2", myASN=64612, peerASN=ROUTER_ASN, routerID="198.18.0.12")),
                   nodes=node_labels)
    for n in (n1, n2):
        apply(n, config)
    wait_nexthops(frr_router, f"{V4}/32", {n1.host.ip4, n2.host.ip4})
    got = paths(frr_router)
    assert got[n1.host.ip4]["aspath"]["string"] == "64611"
    assert got[n2.host.ip4]["aspath"]["string"] == "64612"
    for n, rid in ((n1, "198.18.0.11"), (n2, "198.18.0.12")):
        neigh = frr_router.json(f"show bgp neighbors {n.host.ip4} json")[n.host.ip4]
        assert neigh["remoteRouterId"] == rid
    with pytest.raises(Exception, match="same myASN"):
        parse(resources(peer("n1", "node1", myASN=64611, peerASN=ROUTER_ASN, routerID="198.18.0.11"),
                        cr("BGPPeer", "all", {"myASN": 64613, "peerASN": ROUTER_ASN, "peerAddress": "192.0.2.2",
                                              "routerID": "198.18.0.11"}, "v1beta2")),
              nodes=node_labels)


def test_dynamic_asn_internal_and_external(nodes, frr_router):
    """dynamicASN internal: an iBGP session (local preference sent); external: any other AS,
    the router's real AS learnt from its OPEN."""
    n1, n2 = nodes(2)
    # node1 peers iBGP (router AS == our AS on that session), node2 eBGP
    frr_conf = render_frr_conf(RouterSpec(asn=NODE_ASN, router_id="192.0.2.1", neighbors=(
        Neighbor(n1.host.ip4, NODE_ASN), Neighbor(n2.host.ip4, 64700))))
    frr_router.start(frr_conf)
    config = parse(resources(peer("internal", "node1", dynamicASN="internal"),
                             peer("external", "node2", dynamicASN="external", localASN=64700)),
                   nodes={"node1": n1.labels, "node2": n2.labels})
    for n in (n1, n2):
        apply(n, config)
    # an eBGP and an iBGP path: FRR holds both, installs the eBGP one (no ECMP across the two)
    wait_for("both paths in FRR", lambda: set(paths(frr_router)) == {n1.host.ip4, n2.host.ip4}, 30)
    got = paths(frr_router)
    assert got[n1.host.ip4]["peer"]["type"] == "internal" and got[n1.host.ip4]["locPrf"] == 150
    assert got[n2.host.ip4]["peer"]["type"] == "external"
    assert got[n2.host.ip4]["aspath"]["string"] == "64700"
    sessions = {s["peer"]: s for s in n2.speaker.sessions()}
    assert sessions["external"]["state"] == "Established"
    assert sessions["external"]["dynamicASN"] == "external"


def test_dynamic_asn_external_refuses_a_router_in_our_own_as(nodes, frr_router, logs):
    """FRR's `remote-as external` refuses an iBGP peer; ExaBGP's `peer-as auto` would accept
    it, so the driver reads the router's OPEN and closes the session (Cease, connection
    rejected): the route never reaches the router, the log says why."""
    (n1,) = nodes(1)
    router(frr_router, [(n1.host.ip4, NODE_ASN)], asn=NODE_ASN)       # the router is in our AS
    config = parse(resources(peer("ext", "node1", dynamicASN="external")), nodes={"node1": n1.labels})
    apply(n1, config)
    wait_for("peerASNRefused logged", lambda: logs.events("peerASNRefused", peer="ext"), 60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:      # whatever the router tries, it never holds our route
        assert not frr_router.json(f"show bgp ipv4 unicast {V4}/32").get("paths")
        assert not n1.speaker.session_states().get("ext")
        time.sleep(0.5)
    assert logs.events("peerASNRefused", peer="ext")[0]["asn"] == NODE_ASN
    # the same peer towards a router in another AS comes up: the refusal is about the AS only
    frr_router.stop()
    router(frr_router, [(n1.host.ip4, NODE_ASN)], asn=ROUTER_ASN)
    wait_nexthops(frr_router, f"{V4}/32", {n1.host.ip4}, timeout=60)


def keepalives_received(frr_router, addr: str) -> int:
    n = frr_router.json(f"show bgp neighbors {addr} json")[addr]
    return n["messageStats"]["keepalivesRecv"]


def test_keepalive_time_is_the_interval_on_the_wire(nodes, frr_router):
    """keepaliveTime 1s with holdTime 30s: keepalives every second (ExaBGP alone would send one
    every 10 s, hold/3); the negotiated hold time stays 30 s. Counted by FRR."""
    n1, n2 = nodes(2)
    frr_router.start(render_frr_conf(RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1", keepalive=10,
                                                hold=30, neighbors=(Neighbor(n1.host.ip4, NODE_ASN),
                                                                    Neighbor(n2.host.ip4, NODE_ASN)))))
    config = parse(resources(peer("fast", "node1", peerASN=ROUTER_ASN, holdTime="30s", keepaliveTime="1s"),
                             peer("plain", "node2", peerASN=ROUTER_ASN, holdTime="30s")),
                   nodes={"node1": n1.labels, "node2": n2.labels})
    for n in (n1, n2):
        apply(n, config)
    wait_for("both sessions up", lambda: {n1.host.ip4, n2.host.ip4} <= frr_router.established(), 60)
    time.sleep(1)
    before = {a: keepalives_received(frr_router, a) for a in (n1.host.ip4, n2.host.ip4)}
    time.sleep(8)
    got = {a: keepalives_received(frr_router, a) - before[a] for a in before}
    assert got[n1.host.ip4] >= 6, got          # about 8 in 8 s
    assert got[n2.host.ip4] <= 2, got          # about 1 in 8 s (every 10 s)
    neigh = frr_router.json(f"show bgp neighbors {n1.host.ip4} json")[n1.host.ip4]
    assert neigh["bgpTimerHoldTimeMsecs"] == 30000


LISTENER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.1", 179)); s.listen(8)
while True:
    c, _ = s.accept(); print(time.monotonic(), flush=True); c.close()
"""


def test_connect_time_is_the_wait_between_attempts(nodes, frr_router):
    """connectTime 2s: a router that accepts and drops every connection sees one attempt every
    2 s (ExaBGP alone backs off 1, 2, 3, 4 ... s)."""
    (n1,) = nodes(1)
    lis = subprocess.Popen(["ip", "netns", "exec", frr_router.host.netns, sys.executable, "-c", LISTENER],
                           stdout=subprocess.PIPE, text=True)
    try:
        config = parse(resources(peer("slow", "node1", peerASN=ROUTER_ASN, connectTime="2s")),
                       nodes={"node1": n1.labels})
        apply(n1, config)
        stamps = []
        deadline = time.monotonic() + 30
        while len(stamps) < 6 and time.monotonic() < deadline:
            stamps.append(float(lis.stdout.readline()))
    finally:
        lis.kill()
        lis.wait()
    gaps = [round(b - a, 2) for a, b in zip(stamps, stamps[1:])]
    assert len(gaps) == 5, stamps
    assert all(1.5 <= g <= 3.0 for g in gaps), gaps


def test_peer_port_router_id_and_source_address_on_the_wire(topology, frr_router, tmp_path):
    """peerPort: the router's bgpd listens on 1179 only. routerID: what FRR reports as the
    peer's router ID. sourceAddress: the node's second address is the session's (and the
    route's next hop), not its first."""
    from prometheus_client import CollectorRegistry

    from agent.bgp.config_render import NodeAddresses
    from agent.bgp.exabgp import BGPSpeaker
    from agent.nodeview import NodeView

    h = topology.add_host("node1", ipv4=["192.0.2.11/24", "192.0.2.51/24"])
    sp = BGPSpeaker(NodeAddresses("node1", ip("192.0.2.11"), None), tmp_path / "node1", netns=h.netns,
                    registry=CollectorRegistry())
    try:
        frr_router.bgp_port = 1179
        conf = render_frr_conf(RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1",
                                          neighbors=(Neighbor("192.0.2.51", NODE_ASN),)))
        # passive: the session can only be the one the node opens, to port 1179
        remote_as = f" neighbor 192.0.2.51 remote-as {NODE_ASN}\n"
        frr_router.start(conf.replace(remote_as, remote_as + " neighbor 192.0.2.51 passive\n"))
        assert "neighbor 192.0.2.51 passive" in frr_router.vtysh("show running-config")
        config = parse(resources(peer("p", "node1", peerASN=ROUTER_ASN, peerPort=1179, routerID="198.51.100.7",
                                      sourceAddress="192.0.2.51")))
        view = NodeView("node1", {"kubernetes.io/hostname": "node1"})
        sp.set_peers(active_peers(config, view).values())
        plan = plan_for_node(config, view, [service(ips=(V4,))])
        sp.set(plan.advertisements, plan.prefix_owners)
        wait_nexthops(frr_router, f"{V4}/32", {"192.0.2.51"}, timeout=60)
        neigh = frr_router.json("show bgp neighbors 192.0.2.51 json")["192.0.2.51"]
        assert neigh["bgpState"] == "Established"
        assert neigh["remoteRouterId"] == "198.51.100.7"
        assert neigh["hostLocal"] == "192.0.2.1" and neigh["portLocal"] == 1179   # the router's end
        assert neigh["hostForeign"] == "192.0.2.51"
    finally:
        sp.close()


def gr_router(frr_router, node_ip: str) -> None:
    conf = render_frr_conf(RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1",
                                      neighbors=(Neighbor(node_ip, NODE_ASN),)))
    frr_router.start(conf.replace(" no bgp ebgp-requires-policy\n",
                                  " no bgp ebgp-requires-policy\n bgp graceful-restart\n"))


def watch_route(frr_router, until, timeout: float = 60.0, step: float = 0.02) -> tuple[float, float]:
    """Poll the router's kernel for our /32 until ``until()``; (seconds it was missing in
    total, seconds the wait took)."""
    t0 = time.monotonic()
    missing, last = 0.0, t0
    while not until():
        now = time.monotonic()
        if not frr_router.kernel_nexthops(f"{V4}/32"):
            missing += now - last
        last = now
        assert now - t0 < timeout, "timed out"
        time.sleep(step)
    return missing, time.monotonic() - t0


@pytest.mark.parametrize("graceful", [True, False])
def test_graceful_restart_keeps_routes_while_exabgp_restarts(nodes, frr_router, graceful):
    """enableGracefulRestart: ExaBGP killed (SIGKILL) and restarted by the agent; the router
    keeps the route in its kernel the whole time. Without it the route goes away until the
    new session (the control that shows the guard)."""
    import os
    import signal
    (n1,) = nodes(1)
    gr_router(frr_router, n1.host.ip4)
    config = parse(resources(peer("p", "node1", peerASN=ROUTER_ASN, enableGracefulRestart=graceful)),
                   nodes={"node1": n1.labels})
    apply(n1, config)
    wait_nexthops(frr_router, f"{V4}/32", {n1.host.ip4})
    old = n1.speaker._proc.pid
    os.kill(old, signal.SIGKILL)
    back = lambda: (n1.speaker._proc is not None and n1.speaker._proc.pid != old  # noqa: E731
                    and n1.speaker.session_states().get("p")
                    and n1.host.ip4 in frr_router.established()
                    and frr_router.kernel_nexthops(f"{V4}/32") == {n1.host.ip4})
    missing, took = watch_route(frr_router, back)
    print(f"graceful={graceful}: route missing {missing:.2f} s of {took:.2f} s until the new session")
    if graceful:
        assert missing == 0.0, f"the route left the router's kernel for {missing:.2f} s"
        path = frr_router.json(f"show bgp ipv4 unicast {V4}/32")["paths"][0]
        assert not path.get("stale"), path     # refreshed by the new session
    else:
        assert missing > 0.0


def test_graceful_restart_routes_go_when_exabgp_does_not_come_back(nodes, frr_router, monkeypatch):
    """The router keeps the routes for the restart time we advertise (shortened to 8 s here)
    and then withdraws them: a node that does not come back stops attracting traffic."""
    import os
    import signal

    import agent.bgp.config_render as render
    monkeypatch.setattr(render, "GRACEFUL_RESTART_TIME", 8)
    (n1,) = nodes(1)
    gr_router(frr_router, n1.host.ip4)
    apply(n1, parse(resources(peer("p", "node1", peerASN=ROUTER_ASN, enableGracefulRestart=True)),
                    nodes={"node1": n1.labels}))
    wait_nexthops(frr_router, f"{V4}/32", {n1.host.ip4})
    monkeypatch.setattr(n1.speaker, "_start_process", lambda: None)   # the agent is gone for good
    os.kill(n1.speaker._proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for("stale route", lambda: (frr_router.json(f"show bgp ipv4 unicast {V4}/32").get("paths")
                                     or [{}])[0].get("stale"), 10)
    wait_for("route withdrawn", lambda: not frr_router.kernel_nexthops(f"{V4}/32"), 30)
    stayed = time.monotonic() - t0
    print(f"stale route kept {stayed:.1f} s (restart time 8 s)")
    assert 6.0 <= stayed <= 14.0, stayed


def test_ebgp_multihop_reaches_a_peer_behind_the_router(topology, frr_router, nodes, tmp_path):
    """A router two hops away (node -> 192.0.2.1 -> 198.51.100.2): without ebgpMultiHop our
    packets leave with TTL 1 and die at the first router, the session never comes up; with it
    (TTL 255) the session is Established and the route is in the far router's kernel."""
    from metalxdp.rig.frr import FRRRouter
    (n1,) = nodes(1)
    far = topology.add_behind("far", "router", "198.51.100.1/30", "198.51.100.2/30")
    n1.host.run(["ip", "route", "add", "198.51.100.0/30", "via", "192.0.2.1"])
    import tempfile
    from pathlib import Path
    far_frr = FRRRouter(far, Path(tempfile.mkdtemp(prefix="metalxdp-frr-")))
    conf = render_frr_conf(RouterSpec(asn=65000, router_id="198.51.100.2",
                                      neighbors=(Neighbor(n1.host.ip4, NODE_ASN),)))
    remote_as = f" neighbor {n1.host.ip4} remote-as {NODE_ASN}\n"
    conf = conf.replace(remote_as, remote_as + f" neighbor {n1.host.ip4} ebgp-multihop 255\n"
                                             f" neighbor {n1.host.ip4} passive\n")
    # our next hop (the node) is reached through the far router's default route
    far_frr.start(conf.replace("ip forwarding\n", "ip forwarding\nip nht resolve-via-default\n"))
    try:
        far_peer = lambda **kw: peer("far", "node1", peerASN=65000, peerAddress="198.51.100.2", **kw)  # noqa: E731
        apply(n1, parse(resources(far_peer()), nodes={"node1": n1.labels}))
        time.sleep(12)          # ExaBGP retries every second or so meanwhile
        assert n1.host.ip4 not in far_frr.established()
        assert not far_frr.kernel_nexthops(f"{V4}/32")
        apply(n1, parse(resources(far_peer(ebgpMultiHop=True)), nodes={"node1": n1.labels}))
        wait_nexthops(far_frr, f"{V4}/32", {"198.51.100.1"}, timeout=60)   # via the first router
        path = far_frr.json(f"show bgp ipv4 unicast {V4}/32")["paths"][0]
        assert path["peer"]["peerId"] == n1.host.ip4 and path["nexthops"][0]["ip"] == n1.host.ip4
    finally:
        far_frr.stop()


def test_hold_time_is_the_one_negotiated(nodes, frr_router):
    """holdTime 6s towards a router configured for 30s: the session runs on 6 s (the smaller,
    RFC 4271 4.2), which FRR reports; the default (90s) would give the router's 30."""
    n1, n2 = nodes(2)
    frr_router.start(render_frr_conf(RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1", keepalive=10, hold=30,
                                                neighbors=(Neighbor(n1.host.ip4, NODE_ASN),
                                                           Neighbor(n2.host.ip4, NODE_ASN)))))
    config = parse(resources(peer("short", "node1", peerASN=ROUTER_ASN, holdTime="6s"),
                             peer("default", "node2", peerASN=ROUTER_ASN, holdTime="90s")),
                   nodes={"node1": n1.labels, "node2": n2.labels})
    for n in (n1, n2):
        apply(n, config)
    wait_for("both sessions up", lambda: {n1.host.ip4, n2.host.ip4} <= frr_router.established(), 60)
    hold = {a: frr_router.json(f"show bgp neighbors {a} json")[a]["bgpTimerHoldTimeMsecs"]
            for a in (n1.host.ip4, n2.host.ip4)}
    assert hold == {n1.host.ip4: 6000, n2.host.ip4: 30000}, hold


def test_dual_stack_address_family_carries_ipv6_over_the_ipv4_session(nodes, frr_router):
    """dualStackAddressFamily on an IPv4 peer: the IPv6 VIP goes over the same IPv4 session, with
    the node's IPv6 address as its next hop (FRR activates the neighbour in both families, as
    MetalLB's FRR mode does); without it the IPv4 session carries IPv4 only."""
    (n,) = nodes(1)
    conf = render_frr_conf(RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1",
                                      neighbors=(Neighbor(n.host.ip4, NODE_ASN),)))
    marker = " address-family ipv6 unicast\n"
    frr_router.start(conf.replace(marker, marker + f"  neighbor {n.host.ip4} activate\n"))
    v6 = "2001:db8:0:2::10"
    res = [cr("IPAddressPool", "bgp", {"addresses": ["203.0.113.0/24", "2001:db8:0:2::/64"]}),
           cr("BGPAdvertisement", "bgp", {"ipAddressPools": ["bgp"]})]
    svc = [service(ips=(V4, v6))]
    plain = parse(res + [peer("p", "node1", peerASN=ROUTER_ASN)])
    n.apply(plain, svc)
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=60)
    time.sleep(2)
    assert frr_router.kernel_nexthops(f"{v6}/128") == set()        # IPv4 only without the field
    dual = parse(res + [peer("p", "node1", peerASN=ROUTER_ASN, dualStackAddressFamily=True)])
    n.apply(dual, svc)
    wait_nexthops(frr_router, f"{v6}/128", {n.host.ip6}, timeout=60)
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=10)
    summary = frr_router.json("show bgp ipv6 unicast summary json")
    assert n.host.ip4 in summary["peers"] and summary["peers"][n.host.ip4]["pfxRcd"] >= 1


def test_an_edited_peer_keeps_its_routes_across_the_new_session(nodes, frr_router):
    """Editing a BGPPeer's routerID makes ExaBGP re-create the neighbour (the router ID is part
    of its name, and so of its RIB's), on the reload's next loop turn: the routes must reach the
    new session too. Before, the agent counted them as announced and never sent them again."""
    (n,) = nodes(1)
    router(frr_router, [(n.host.ip4, NODE_ASN)])
    apply(n, parse(resources(peer("p", "node1", peerASN=ROUTER_ASN, routerID="198.51.100.7"))))
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=60)
    apply(n, parse(resources(peer("p", "node1", peerASN=ROUTER_ASN, routerID="198.51.100.8"))))

    def new_session() -> bool:
        neigh = frr_router.json(f"show bgp neighbors {n.host.ip4} json")[n.host.ip4]
        return neigh["bgpState"] == "Established" and neigh["remoteRouterId"] == "198.51.100.8"
    wait_for("the session with the new router ID", new_session, 60)
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=20)
    time.sleep(3)   # and it stays: no late withdraw
    assert frr_router.kernel_nexthops(f"{V4}/32") == {n.host.ip4}
