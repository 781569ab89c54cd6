"""BGP mode against a real FRR router: one ExaBGP per node namespace, driven by BGPSpeaker.

Lab as seed 002: router 192.0.2.1 AS 64512, nodes 192.0.2.1x AS 64513 (eBGP), plus an iBGP
variant. The configuration goes through the real parser and the pure advertisement plan, so
these tests exercise the same path the agent takes. Everything is checked in the router's
kernel (``ip route``) or FRR's own JSON, never in our state alone.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pytest
from prometheus_client import CollectorRegistry

from agent.bgp.advertise import ServiceView, active_peers, plan_for_node
from agent.bgp.config_render import NodeAddresses
from agent.bgp.exabgp import BGPSpeaker
from agent.nodeview import NodeView
from metalxdp.config.parse import parse
from metalxdp.rig.frr import Neighbor, RouterSpec, render_frr_conf
from metalxdp.rig.netns import Host, Topology
from metalxdp.rig.procs import wait_for

pytestmark = pytest.mark.integration

NS = "metallb-system"
ROUTER_ASN, NODE_ASN = 64512, 64513
ip = ipaddress.ip_address
V4, V6 = "203.0.113.10", "2001:db8:0:2::10"


# ---- helpers (also used by test_bgp_bird.py) -----------------------------------------------

def cr(kind: str, name: str, spec: dict, version: str = "v1beta1") -> dict:
    return {"apiVersion": f"metallb.io/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def peer_cr(name: str, address: str, my_asn: int = NODE_ASN, peer_asn: int = ROUTER_ASN, **spec) -> dict:
    return cr("BGPPeer", name, {"myASN": my_asn, "peerASN": peer_asn, "peerAddress": address,
                                "holdTime": "9s", **spec}, "v1beta2")


def lab_resources(*, my_asn: int = NODE_ASN, peer_asn: int = ROUTER_ASN, ads: Optional[list] = None,
                  v4_peer: Optional[dict] = None, v6_peer: Optional[dict] = None) -> list[dict]:
    return [cr("IPAddressPool", "bgp", {"addresses": ["203.0.113.0/24", "2001:db8:0:2::/64"]}),
            *(ads if ads is not None else [cr("BGPAdvertisement", "bgp", {"ipAddressPools": ["bgp"]})]),
            peer_cr("router-v4", "192.0.2.1", my_asn, peer_asn, **(v4_peer or {})),
            peer_cr("router-v6", "2001:db8:0:1::1", my_asn, peer_asn, **(v6_peer or {}))]


def service(key="default/web", ips=(V4, V6), **kw) -> ServiceView:
    kw.setdefault("has_any_ready_endpoint", True)
    return ServiceView(key, tuple(ip(a) for a in ips), **kw)


class Node:
    """A node namespace with its labels and its BGPSpeaker."""

    def __init__(self, host: Host, labels: dict, speaker: BGPSpeaker):
        self.host, self.labels, self.speaker = host, labels, speaker

    @property
    def view(self) -> NodeView:
        return NodeView(self.host.name, self.labels)

    def apply(self, config, services) -> None:
        """What the agent does on every change: active peers, then the plan's routes."""
        self.speaker.set_peers(active_peers(config, self.view).values())
        plan = plan_for_node(config, self.view, services)
        self.speaker.set(plan.advertisements, plan.prefix_owners)


def add_nodes(topology: Topology, count: int, workroot: Path, registry=None, **speaker_kw) -> list[Node]:
    nodes = []
    for i in range(1, count + 1):
        name = f"node{i}"
        h = topology.add_host(name, ipv4=[f"192.0.2.1{i}/24"], ipv6=[f"2001:db8:0:1::1{i}/64"])
        sp = BGPSpeaker(NodeAddresses(name, ip(h.ip4), ip(h.ip6)), workroot / name, netns=h.netns,
                        registry=registry or CollectorRegistry(), **speaker_kw)
        nodes.append(Node(h, {"kubernetes.io/hostname": name}, sp))
    return nodes


def router_spec(nodes: list[Node], asn: int = ROUTER_ASN, node_asn: int = NODE_ASN,
                passwords: Optional[dict] = None) -> RouterSpec:
    pw = passwords or {}
    neigh = []
    for n in nodes:
        neigh += [Neighbor(n.host.ip4, node_asn, password=pw.get(n.host.name, "")),
                  Neighbor(n.host.ip6, node_asn, password=pw.get(n.host.name, ""))]
    return RouterSpec(asn=asn, router_id="192.0.2.1", neighbors=tuple(neigh))


def wait_nexthops(router, prefix: str, want: set, timeout: float = 30) -> None:
    wait_for(f"{prefix} via {sorted(want)} in the router's kernel (have {router.kernel_nexthops(prefix)})",
             lambda: router.kernel_nexthops(prefix) == want, timeout)


class LogCapture(logging.Handler):
    """Collects the structured fields of the agent's JSON log records."""

    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    def emit(self, record):
        self.records.append({"msg": record.getMessage(), "level": record.levelname.lower(),
                             **getattr(record, "fields", {})})

    def events(self, event: str, **match) -> list[dict]:
        return [r for r in self.records if r.get("event") == event
                and all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def workroot():
    d = Path(tempfile.mkdtemp(prefix="metalxdp-bgp-"))
    yield d


@pytest.fixture
def logs():
    from metalxdp.log import get_logger
    get_logger("agent")  # make sure logging is configured
    cap = LogCapture()
    lg = logging.getLogger("metalxdp.agent")
    lg.addHandler(cap)
    yield cap
    lg.removeHandler(cap)


@pytest.fixture
def lab(topology, frr_router, workroot):
    """Factory: lab(count) -> nodes; every speaker is closed afterwards (before the namespaces
    go, so ExaBGP ends cleanly)."""
    made: list[Node] = []

    def make(count: int = 3, **kw) -> list[Node]:
        nodes = add_nodes(topology, count, workroot, **kw)
        made.extend(nodes)
        return nodes

    yield make
    for n in made:
        n.speaker.close()


# ---- tests ---------------------------------------------------------------------------------

def test_ebgp_sessions_ecmp_v4_v6_and_withdraw(lab, frr_router):
    nodes = lab(3)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    svc = service()
    for n in nodes:
        n.apply(config, [svc])
    addrs4 = {n.host.ip4 for n in nodes}
    addrs6 = {n.host.ip6 for n in nodes}
    wait_for("6 sessions Established at the router", lambda: frr_router.established() == addrs4 | addrs6, 30)
    wait_nexthops(frr_router, f"{V4}/32", addrs4)
    wait_nexthops(frr_router, f"{V6}/128", addrs6)
    for n in nodes:
        wait_for("speaker reports its sessions up",
                 lambda: n.speaker.session_states() == {"router-v4": True, "router-v6": True}, 10)
    # eBGP: the path is 64513, next hop the node itself
    paths = frr_router.json(f"show bgp ipv4 unicast {V4}/32")["paths"]
    assert {p["aspath"]["string"] for p in paths} == {str(NODE_ASN)}

    # the service goes away -> withdrawn everywhere
    for n in nodes:
        n.apply(config, [])
    wait_nexthops(frr_router, f"{V4}/32", set())
    wait_nexthops(frr_router, f"{V6}/128", set())
    assert frr_router.established() == addrs4 | addrs6   # sessions untouched


def test_ibgp_communities_large_communities_local_pref_and_aggregation(lab, frr_router):
    nodes = lab(2)
    frr_router.start(render_frr_conf(router_spec(nodes, asn=ROUTER_ASN, node_asn=ROUTER_ASN)))
    ads = [cr("BGPAdvertisement", "tagged", {
               "ipAddressPools": ["bgp"], "localPref": 250,
               "communities": ["64512:300", "large:64512:1:2", "64512:100"]}),
           cr("BGPAdvertisement", "agg", {"ipAddressPools": ["bgp"], "aggregationLength": 24,
                                          "aggregationLengthV6": 64})]
    config = parse(lab_resources(my_asn=ROUTER_ASN, peer_asn=ROUTER_ASN, ads=ads))
    for n in nodes:
        n.apply(config, [service()])
    both4 = {n.host.ip4 for n in nodes}
    wait_nexthops(frr_router, f"{V4}/32", both4)                       # iBGP ECMP
    wait_nexthops(frr_router, "203.0.113.0/24", both4)                # aggregationLength 24
    wait_nexthops(frr_router, "2001:db8:0:2::/64", {n.host.ip6 for n in nodes})
    wait_nexthops(frr_router, f"{V6}/128", {n.host.ip6 for n in nodes})
    path = frr_router.json(f"show bgp ipv4 unicast {V4}/32")["paths"][0]
    assert path["community"]["string"] == "64512:100 64512:300"
    assert path["largeCommunity"]["string"] == "64512:1:2"
    assert path["locPrf"] == 250
    assert path["peer"]["type"] == "internal"
    agg = frr_router.json("show bgp ipv4 unicast 203.0.113.0/24")["paths"][0]
    assert "community" not in agg and agg.get("locPrf", 100) == 100   # the other ad: no attributes
    v6 = frr_router.json(f"show bgp ipv6 unicast {V6}/128")["paths"][0]
    assert v6["locPrf"] == 250 and v6["largeCommunity"]["string"] == "64512:1:2"


def test_ebgp_does_not_send_local_pref(lab, frr_router):
    nodes = lab(1)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources(ads=[cr("BGPAdvertisement", "lp", {"ipAddressPools": ["bgp"],
                                                                    "localPref": 250})]))
    nodes[0].apply(config, [service()])
    wait_nexthops(frr_router, f"{V4}/32", {nodes[0].host.ip4})
    path = frr_router.json(f"show bgp ipv4 unicast {V4}/32")["paths"][0]
    assert path.get("locPrf", 100) == 100


def test_peer_node_selectors_and_advertisement_peers_and_node_selectors(lab, frr_router):
    nodes = lab(3)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    n1, n2, n3 = nodes
    ads = [cr("BGPAdvertisement", "v6-not-node2", {
        "ipAddressPools": ["bgp"], "peers": ["router-v6"],
        "nodeSelectors": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn",
                                                 "values": ["node2"]}]}]}),
        cr("BGPAdvertisement", "v4-only", {"ipAddressPools": ["bgp"], "peers": ["router-v4"],
                                           "aggregationLength": 28})]
    v4_peer = {"nodeSelectors": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
                                                        "operator": "In", "values": ["node1", "node2"]}]}]}
    config = parse(lab_resources(ads=ads, v4_peer=v4_peer))
    for n in nodes:
        n.apply(config, [service()])
    # the v4 peer is active on node1 and node2 only: node3 never opens that session
    wait_nexthops(frr_router, "203.0.113.0/28", {n1.host.ip4, n2.host.ip4})
    # the v6 advertisement skips node2 and goes to router-v6 only
    wait_nexthops(frr_router, f"{V6}/128", {n1.host.ip6, n3.host.ip6})
    # peers restrict: the v4-only ad sends no /128 aggregate, the v6 ad sends no /32
    assert frr_router.kernel_nexthops(f"{V4}/32") == set()
    assert n3.host.ip4 not in frr_router.established()
    assert set(n3.speaker.session_states()) == {"router-v6"}


def test_etp_local_limits_next_hops_to_nodes_with_endpoints(lab, frr_router):
    nodes = lab(3)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    with_endpoint = {"node2"}
    for n in nodes:
        n.apply(config, [service(etp_local=True, has_ready_local_endpoint=n.host.name in with_endpoint)])
    wait_nexthops(frr_router, f"{V4}/32", {nodes[1].host.ip4})
    wait_nexthops(frr_router, f"{V6}/128", {nodes[1].host.ip6})
    # the endpoint moves to node3
    with_endpoint = {"node3"}
    for n in nodes:
        n.apply(config, [service(etp_local=True, has_ready_local_endpoint=n.host.name in with_endpoint)])
    wait_nexthops(frr_router, f"{V4}/32", {nodes[2].host.ip4})


def test_md5_password_right_and_wrong(lab, frr_router, logs):
    nodes = lab(2, not_established_after=6.0)
    good, bad = nodes
    frr_router.start(render_frr_conf(router_spec(nodes, passwords={"node1": "s3cret-pw", "node2": "s3cret-pw"})))
    right = parse(lab_resources(v4_peer={"password": "s3cret-pw"}, v6_peer={"password": "s3cret-pw"}))
    wrong = parse(lab_resources(v4_peer={"password": "not-it"}, v6_peer={"password": "not-it"}))
    good.apply(right, [service()])
    bad.apply(wrong, [service()])
    wait_nexthops(frr_router, f"{V4}/32", {good.host.ip4})
    wait_nexthops(frr_router, f"{V6}/128", {good.host.ip6})
    wait_for("a clear log line about the MD5 mismatch",
             lambda: logs.events("sessionDown", peer="router-v4", reason="md5PasswordMismatch"), 30)
    line = logs.events("sessionDown", peer="router-v4", reason="md5PasswordMismatch")[0]
    assert "password" in line["msg"] and "192.0.2.1" in line["msg"]
    assert bad.host.ip4 not in frr_router.established()
    assert bad.speaker.session_states() == {"router-v4": False, "router-v6": False}
    assert frr_router.kernel_nexthops(f"{V4}/32") == {good.host.ip4}


def test_exabgp_killed_is_restarted_and_routes_come_back(lab, frr_router, logs):
    nodes = lab(2)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    for n in nodes:
        n.apply(config, [service()])
    all4 = {n.host.ip4 for n in nodes}
    wait_nexthops(frr_router, f"{V4}/32", all4)
    victim = nodes[0].speaker
    old_pid = victim._proc.pid
    os.kill(old_pid, signal.SIGKILL)
    # the router sees the TCP session die (the kernel resets it), the route loses that hop...
    wait_nexthops(frr_router, f"{V4}/32", {nodes[1].host.ip4}, timeout=20)
    # ...and the driver restarts ExaBGP and re-announces
    wait_nexthops(frr_router, f"{V4}/32", all4, timeout=30)
    wait_nexthops(frr_router, f"{V6}/128", {n.host.ip6 for n in nodes}, timeout=30)
    assert victim._proc.pid != old_pid
    assert logs.events("exabgpDied")


def test_exabgp_api_is_attached_in_its_own_process_without_a_relay(lab, frr_router, logs):
    """The default ExaBGP command (exabgp_timers.py) connects ExaBGP's API to the agent's socket
    in ExaBGP's process: no relay is forked, and announcing works through it."""
    nodes = lab(1)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    n = nodes[0]
    n.apply(parse(lab_resources()), [service()])
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=30)
    pid = n.speaker._proc.pid      # `ip netns exec` execs ExaBGP: the same pid
    assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []
    assert "(no relay)" in n.speaker.log_path.read_text()


class InProcessNode:
    """A node namespace running tests/integration/inproc_speaker.py: one process whose
    BGPSpeaker has ExaBGP's reactor on a thread, as the agent has (driven over stdin)."""

    def __init__(self, host: Host, workdir: Path):
        import subprocess
        import sys
        self.host = host
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable,
             str(Path(__file__).with_name("inproc_speaker.py")), host.name, host.ip4, host.ip6,
             str(workdir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.log_path = workdir / "exabgp.log"

    def ask(self, op: str, **kw) -> dict:
        import json
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the in-process speaker exited (code {self.proc.wait(5)})"
        return json.loads(line)

    def apply(self, resources: list[dict], vips=(V4, V6)) -> None:
        self.ask("apply", resources=resources, services=[{"key": "default/web", "ips": list(vips)}])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("close")
            finally:
                self.proc.wait(15)


@pytest.fixture
def inproc_node(topology, workroot):
    h = topology.add_host("node1", ipv4=["192.0.2.11/24"], ipv6=["2001:db8:0:1::11/64"])
    n = InProcessNode(h, workroot / "node1")
    yield n
    n.close()


def announced_through_frr(n: InProcessNode, frr_router) -> None:
    """FRR peering with the in-process node on both families, and the node's V4 route in FRR."""
    spec = RouterSpec(asn=ROUTER_ASN, router_id="192.0.2.1",
                      neighbors=(Neighbor(n.host.ip4, NODE_ASN), Neighbor(n.host.ip6, NODE_ASN)))
    frr_router.start(render_frr_conf(spec))
    n.apply(lab_resources())
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=30)


def test_exabgp_in_the_speakers_own_process_announces_withdraws_and_survives_a_crash(inproc_node, frr_router):
    """What the agent runs: ExaBGP's reactor on a thread of the process that drives it (no
    ExaBGP process, no relay). Against FRR: announce, withdraw; a reactor that raises is
    restarted in the same process and announces again; close ends the sessions."""
    n = inproc_node
    announced_through_frr(n, frr_router)
    st = n.ask("state")
    assert st["inProcess"] is True, st
    assert st["children"] == [], f"a process was forked: {st['children']}"
    assert "exabgp" in st["threads"], st["threads"]
    log = n.log_path.read_text()
    assert "(no relay)" in log and "starting ExaBGP in process" in log
    # withdraw: the route leaves the router's kernel
    n.apply(lab_resources(), vips=(V6,))
    wait_nexthops(frr_router, f"{V4}/32", set(), timeout=30)
    # a reactor that raises (a bug in ExaBGP, say): its sockets close, the speaker starts a
    # new one in the same process on its back-off, and the route comes back
    n.apply(lab_resources())
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=30)
    starts = lambda: n.log_path.read_text().count("--- starting ExaBGP in process")  # noqa: E731
    before = starts()
    n.ask("crash")
    # seen either as the reactor's exit or, first, as its API connection closing: both restart
    # it and count in health()["restarts"], which is back to 0 once it is stable; the log's
    # starts are what stays
    wait_for("the speaker to see its reactor gone and start a new one",
             lambda: "reactor returned 70" in n.log_path.read_text() and starts() > before, 30)
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=60)
    assert "injected by the test" in n.log_path.read_text()
    st = n.ask("state")
    assert st["inProcess"] is True and st["children"] == [], st
    # close: ExaBGP's shutdown in-process closes the sessions; FRR drops the route
    n.close()
    assert n.proc.returncode == 0
    wait_nexthops(frr_router, f"{V4}/32", set(), timeout=30)


def test_an_api_connection_naming_another_start_of_exabgp_is_refused(inproc_node, frr_router):
    """An API connection whose hello names another start of ExaBGP (one stopped a moment after
    it started, whose API connected late) is refused and closed; the running ExaBGP and its own
    connection are untouched. Before, it was taken for the running one's, and its end restarted
    the running reactor, whose own late connection then restarted the next: every 0.1 s for
    seconds, in test_bfd_lab with ExaBGP in-process."""
    import socket
    from agent.bgp.exabgp_timers import hello
    n = inproc_node
    announced_through_frr(n, frr_router)
    wait_for("ExaBGP running", lambda: n.ask("state")["health"]["running"], 30)
    starts = n.log_path.read_text().count("--- starting ExaBGP in process")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.settimeout(10)
    stale.connect(str(n.log_path.with_name("api.sock")))
    stale.sendall(hello("0123456789abcdef"))
    assert stale.recv(1) == b"", "the speaker did not close a connection naming another start"
    stale.close()
    # the running ExaBGP still takes commands: a withdraw reaches the router
    n.apply(lab_resources(), vips=(V6,))
    wait_nexthops(frr_router, f"{V4}/32", set(), timeout=30)
    st = n.ask("state")
    assert st["health"]["running"] and st["health"]["restarts"] == 0, st["health"]
    assert n.log_path.read_text().count("--- starting ExaBGP in process") == starts


def test_exabgp_whose_api_relay_never_connects_is_restarted(lab, frr_router, logs, monkeypatch, tmp_path):
    """An ExaBGP that runs but cannot be driven (its API relay never reaches the agent) holds its
    sessions with nothing announced: the agent restarts it after RELAY_WAIT and announces.
    (The relay is what ExaBGP forks when it is not started through exabgp_timers.py: the
    variable that makes the wrapper attach the API in-process is renamed away here.)"""
    import agent.bgp.exabgp as exabgp_mod
    monkeypatch.setattr(exabgp_mod, "API_SOCKET_ENV", "METALXDP_TEST_NOT_THE_API_SOCKET")
    marker = tmp_path / "first-relay-started"
    relay = tmp_path / "relay.py"
    # the first relay hangs without connecting; later ones are the real relay
    relay.write_text(f"import os, sys, time\n"
                     f"if not os.path.exists({str(marker)!r}):\n"
                     f"    open({str(marker)!r}, 'w').close()\n"
                     f"    time.sleep(3600)\n"
                     f"os.execv(sys.executable, [sys.executable, {str(exabgp_mod.RELAY)!r}, *sys.argv[1:]])\n")
    monkeypatch.setattr(exabgp_mod, "RELAY", relay)
    monkeypatch.setattr(exabgp_mod, "RELAY_WAIT", 3.0)
    nodes = lab(1)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    nodes[0].apply(parse(lab_resources()), [service()])
    wait_for("the hanging relay to start", marker.exists, 30)
    wait_for("a log line about the relay that did not connect",
             lambda: logs.events("exabgpDied", reason="api relay not connected"), 30)
    wait_nexthops(frr_router, f"{V4}/32", {nodes[0].host.ip4}, timeout=30)
    assert len(logs.events("exabgpStarted")) >= 2


def test_router_closes_session_then_it_is_retried(lab, frr_router, logs):
    nodes = lab(1)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    n = nodes[0]
    n.apply(config, [service()])
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4})
    frr_router.vtysh("configure terminal", "router bgp 64512", f"neighbor {n.host.ip4} shutdown")
    wait_for("sessionDown logged", lambda: logs.events("sessionDown", peer="router-v4"), 20)
    wait_for("NOTIFICATION logged", lambda: logs.events("peerNotification", peer="router-v4"), 20)
    assert n.speaker.session_states()["router-v4"] is False
    frr_router.vtysh("configure terminal", "router bgp 64512", f"no neighbor {n.host.ip4} shutdown")
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4}, timeout=60)
    # the other session never noticed
    assert n.speaker.session_states()["router-v6"] is True
    assert frr_router.kernel_nexthops(f"{V6}/128") == {n.host.ip6}


def test_router_frr_killed_and_restarted_sessions_and_routes_come_back(lab, frr_router, logs):
    """Issue 19: the router's FRR crashes (SIGKILL of zebra, bgpd, bfdd: no NOTIFICATION) and is
    started again with the same configuration. Every session must come back Established and
    every route must be back in the router's kernel, with no action on the nodes' side; the
    times are printed (bench figures come from the benchmarks, this only bounds them)."""
    nodes = lab(2)
    conf = render_frr_conf(router_spec(nodes))
    frr_router.start(conf)
    config = parse(lab_resources())
    for n in nodes:
        n.apply(config, [service()])
    all4, all6 = {n.host.ip4 for n in nodes}, {n.host.ip6 for n in nodes}
    wait_for("4 sessions Established", lambda: frr_router.established() == all4 | all6, 30)
    wait_nexthops(frr_router, f"{V4}/32", all4)
    frr_router.kill()
    t0 = time.monotonic()
    for n in nodes:
        wait_for("the speaker to see its sessions down", lambda n=n: not any(
            n.speaker.session_states().values()), 120)
    down_after = time.monotonic() - t0
    frr_router.start(conf)
    t1 = time.monotonic()
    wait_for("every session Established again", lambda: frr_router.established() == all4 | all6, 120)
    up_after = time.monotonic() - t1
    wait_nexthops(frr_router, f"{V4}/32", all4, timeout=60)
    wait_nexthops(frr_router, f"{V6}/128", all6, timeout=60)
    routes_after = time.monotonic() - t1
    for n in nodes:
        wait_for("the speaker to report its sessions up", lambda n=n: n.speaker.session_states()
                 == {"router-v4": True, "router-v6": True}, 30)
    assert logs.events("sessionDown") and logs.events("sessionUp")
    print(f"sessions seen down {down_after:.1f}s after the kill; after the restart: Established in "
          f"{up_after:.1f}s, routes in the kernel in {routes_after:.1f}s")


def test_peer_down_and_up_for_bfd(lab, frr_router):
    nodes = lab(2)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    for n in nodes:
        n.apply(config, [service()])
    all4 = {n.host.ip4 for n in nodes}
    wait_nexthops(frr_router, f"{V4}/32", all4)
    sp = nodes[0].speaker
    t0 = time.monotonic()
    sp.peer_down("router-v4")
    wait_nexthops(frr_router, f"{V4}/32", {nodes[1].host.ip4}, timeout=10)
    took = time.monotonic() - t0
    assert took < 3.0, f"peer_down took {took:.2f}s to reach the router"
    # stays down (no reconnect) while administratively down; the v6 session is untouched
    time.sleep(3)
    assert nodes[0].host.ip4 not in frr_router.established()
    assert frr_router.kernel_nexthops(f"{V6}/128") == {n.host.ip6 for n in nodes}
    pid = sp._proc.pid
    v6_up_before = frr_router.json("show bgp ipv6 unicast summary")["peers"][nodes[0].host.ip6]["peerUptimeMsec"]
    sp.peer_up("router-v4")
    wait_nexthops(frr_router, f"{V4}/32", all4, timeout=30)
    # bringing one peer back reloads ExaBGP's config: the process and the node's other session
    # (IPv6) must survive it (ExaBGP may respawn its API helper; that is not a crash)
    time.sleep(4)   # longer than the relay grace period
    assert sp._proc is not None and sp._proc.pid == pid, "ExaBGP was restarted by peer_up"
    v6_up_after = frr_router.json("show bgp ipv6 unicast summary")["peers"][nodes[0].host.ip6]["peerUptimeMsec"]
    assert v6_up_after > v6_up_before, "the IPv6 session was reset by peer_up"
    assert frr_router.kernel_nexthops(f"{V6}/128") == {n.host.ip6 for n in nodes}


def test_bfd_bringing_both_peers_back_at_once_does_not_kill_exabgp(lab, frr_router, logs):
    """BFD took both sessions down (ExaBGP stops: no peer left), then brings them back 0.1 s
    apart: the second config change must not signal the just-started ExaBGP before it can take
    it (it used to die of SIGUSR1, exit code -10, counted as a crash); the speaker starts it
    again on the new configuration instead, and every route comes back."""
    nodes = lab(2)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    for n in nodes:
        n.apply(config, [service()])
    all4, all6 = {n.host.ip4 for n in nodes}, {n.host.ip6 for n in nodes}
    wait_nexthops(frr_router, f"{V4}/32", all4)
    sp = nodes[0].speaker
    sp.peer_down("router-v4")
    sp.peer_down("router-v6")
    wait_nexthops(frr_router, f"{V4}/32", {nodes[1].host.ip4}, timeout=10)
    wait_nexthops(frr_router, f"{V6}/128", {nodes[1].host.ip6}, timeout=10)
    sp.peer_up("router-v6")
    time.sleep(0.1)
    sp.peer_up("router-v4")
    wait_nexthops(frr_router, f"{V4}/32", all4, timeout=30)
    wait_nexthops(frr_router, f"{V6}/128", all6, timeout=30)
    time.sleep(2)
    assert sp._proc is not None and sp._proc.poll() is None
    # no ExaBGP died (an exit code: the SIGUSR1 death was -10). A restart by the relay watchdog
    # (exabgpDied reason "api relay not connected") is another, open fault: seen once in CI
    # after this quick stop-and-start, the new ExaBGP ran with no relay connection for 10 s.
    # The api relay now says on stderr (into exabgp.log) when it starts and connects.
    deaths = [r for r in logs.events("exabgpDied") if "code" in r]
    assert not deaths, f"ExaBGP died and was restarted: {deaths}"


def test_a_reload_exabgp_drops_is_sent_again(lab, frr_router, logs):
    """ExaBGP drops a reload that arrives while any peer has updates queued (its reactor re-arms
    the signal before checking ``_pending_adjribout``): seen in CI when BFD brought a node's two
    sessions back one after the other and the second never came up. A peer with nobody at its
    address keeps its routes queued for ever, so every reload is dropped here; the speaker
    sees the new peer missing from ``show neighbor json`` and sends the reload again."""
    nodes = lab(1)
    n = nodes[0]
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources() + [peer_cr("nobody", "192.0.2.99")])
    no_v6 = replace(config, peers={k: v for k, v in config.peers.items() if k != "router-v6"})
    n.apply(no_v6, [service()])
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4})
    n.apply(config, [service()])                  # router-v6 appears: ExaBGP is told to reload
    wait_nexthops(frr_router, f"{V6}/128", {n.host.ip6}, timeout=30)
    lost = logs.events("exabgpReloadLost")
    assert lost and lost[0]["missing"] == ["2001:db8:0:1::1"], lost
    assert frr_router.kernel_nexthops(f"{V4}/32") == {n.host.ip4}


def test_adding_a_peer_keeps_the_existing_session(lab, frr_router):
    nodes = lab(1)
    n = nodes[0]
    frr_router.start(render_frr_conf(router_spec(nodes)))
    config = parse(lab_resources())
    only_v4 = replace(config, peers={"router-v4": config.peers["router-v4"]})
    n.apply(only_v4, [service()])
    wait_nexthops(frr_router, f"{V4}/32", {n.host.ip4})
    before = frr_router.json("show bgp ipv4 unicast summary")["peers"][n.host.ip4]["connectionsEstablished"]
    n.apply(config, [service()])                  # the v6 peer appears: ExaBGP reloads
    wait_nexthops(frr_router, f"{V6}/128", {n.host.ip6})
    after = frr_router.json("show bgp ipv4 unicast summary")["peers"][n.host.ip4]
    assert after["connectionsEstablished"] == before and after["state"] == "Established"
    n.apply(only_v4, [service()])                 # and goes away again
    wait_nexthops(frr_router, f"{V6}/128", set())
    assert frr_router.kernel_nexthops(f"{V4}/32") == {n.host.ip4}


def test_metrics(lab, frr_router):
    reg = CollectorRegistry()
    nodes = lab(1, registry=reg)
    frr_router.start(render_frr_conf(router_spec(nodes)))
    nodes[0].apply(parse(lab_resources()), [service(), service("default/b", ("203.0.113.11",))])
    wait_nexthops(frr_router, "203.0.113.11/32", {nodes[0].host.ip4})
    wait_for("session_up metric", lambda: reg.get_sample_value("metallb_bgp_session_up",
                                                                {"peer": "192.0.2.1"}) == 1, 10)
    assert reg.get_sample_value("metallb_bgp_announced_prefixes_total", {"peer": "192.0.2.1"}) == 2
    assert reg.get_sample_value("metallb_bgp_announced_prefixes_total", {"peer": "2001:db8:0:1::1"}) == 1
    assert reg.get_sample_value("metallb_bgp_updates_total", {"peer": "192.0.2.1"}) >= 2
