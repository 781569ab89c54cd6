"""Our BFD (agent.bfd) against FRR's bfdd, both real, in lab namespaces: the router runs FRR, our
BFDManager's sockets live in the node's namespace (its thread enters it)."""
from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from agent.bfd.metrics import register_bfd_metrics
from agent.bfd.runner import BFDManager
from metalxdp.config.types import BFDProfile
from metalxdp.lab.bfd_rig import Sniffer, frr_add_peer, frr_counters, frr_peer, frr_status, wait_until
from metalxdp.rig.frr import BFDTimers, Neighbor, RouterSpec, render_frr_conf

pytestmark = pytest.mark.integration

ROUTER4, NODE4 = "192.0.2.1", "192.0.2.11"
ROUTER6, NODE6 = "2001:db8:0:1::1", "2001:db8:0:1::11"


@pytest.fixture
def lab(topology, frr_router):
    """Router with FRR (no BFD peer yet) and node1; yields (topology, frr, node)."""
    node = topology.add_host("node1", ipv4=[f"{NODE4}/24"], ipv6=[f"{NODE6}/64"])
    frr_router.start(render_frr_conf(RouterSpec(64500, ROUTER4, neighbors=())))
    yield topology, frr_router, node


class Events:
    """The manager's callback, recorded with the time it arrived."""
    def __init__(self):
        self.items: list[tuple[float, str, str, str]] = []

    def __call__(self, peer, old, new):
        self.items.append((time.monotonic(), peer, old, new))

    def states(self, peer):
        return [(o, n) for _, p, o, n in self.items if p == peer]


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def bfd(lab, events):
    _, _, node = lab
    m = BFDManager(on_state_change=events, netns=node.netns)
    yield m
    m.close()


def test_session_up_with_profile_timers_and_metrics(lab, bfd, events):
    _, frr, _ = lab
    frr_add_peer(frr, NODE4, ROUTER4, rx=300, tx=300, mult=3)
    registry = CollectorRegistry()
    register_bfd_metrics(registry, bfd)
    bfd.add_session(ROUTER4, NODE4, BFDProfile("fast", receive_interval_ms=200,
                                               transmit_interval_ms=250, detect_multiplier=4))
    wait_until("FRR to see the session Up", lambda: frr_status(frr, NODE4) == "up", 15)
    # FRR reports what our packets carried once the poll that left the 1 s rate completed
    p = wait_until("FRR to learn our timers", lambda: (lambda p: p if p and
                   p["remote-transmit-interval"] == 250 else None)(frr_peer(frr, NODE4)), 10)
    assert (p["remote-receive-interval"], p["remote-transmit-interval"],
            p["remote-detect-multiplier"]) == (200, 250, 4)
    assert p["remote-echo-receive-interval"] == 0       # we do not do echo
    wait_until("our side Up", lambda: bfd.states().get(ROUTER4) == "Up", 5)
    info = bfd.sessions()[ROUTER4]
    assert (info.remote_receive_interval_ms, info.remote_transmit_interval_ms,
            info.remote_detect_multiplier) == (300, 300, 3)
    assert info.tx_interval_ms == 300          # max(our 250, their RX 300)
    assert info.detection_time_ms == 900       # their mult 3 x max(our RX 200, their TX 300)
    assert events.states(ROUTER4)[-1][1] == "Up"
    sample = lambda name: registry.get_sample_value(name, {"peer": ROUTER4})  # noqa: E731
    assert sample("metallb_bfd_session_up") == 1
    assert sample("metallb_bfd_session_up_events") == 1
    assert sample("metallb_bfd_session_down_events") == 0
    assert sample("metallb_bfd_control_packet_input") > 0
    assert sample("metallb_bfd_control_packet_output") > 0


def test_timer_change_by_poll_final_does_not_flap(lab, bfd):
    _, frr, node = lab
    frr_add_peer(frr, NODE4, ROUTER4)
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    wait_until("session Up", lambda: frr_status(frr, NODE4) == "up"
               and bfd.states().get(ROUTER4) == "Up", 15)
    wait_until("FRR to learn 300 ms", lambda: frr_peer(frr, NODE4)["remote-transmit-interval"] == 300, 5)
    before = frr_counters(frr, NODE4)
    with Sniffer(frr.host.netns) as sniff:
        bfd.update_profile(ROUTER4, BFDProfile("p", receive_interval_ms=100,
                                               transmit_interval_ms=100, detect_multiplier=5))
        statuses = []
        p = wait_until("FRR to learn the new timers", lambda: (statuses.append(
            frr_status(frr, NODE4)), (lambda p: p if p["remote-transmit-interval"] == 100
                                      and p["remote-detect-multiplier"] == 5 else None)(
            frr_peer(frr, NODE4)))[1], 10)
        time.sleep(1.0)                     # the session keeps running at the new rate
    assert set(statuses) == {"up"}
    assert p["remote-receive-interval"] == 100
    after = frr_counters(frr, NODE4)
    assert after["session-down"] == before["session-down"] == 0
    assert after["session-up"] == before["session-up"] == 1
    ours = [c for c in sniff.from_(NODE4)]
    polls = [c for c in ours if c.packet.poll]
    finals = [c for c in sniff.from_(ROUTER4) if c.packet.final]
    assert polls and finals, "the change went through a poll sequence answered by a final"
    assert all(c.packet.state.label == "Up" for c in ours)
    info = bfd.sessions()[ROUTER4]
    assert info.session_down_events == 0 and info.state == "Up"
    assert info.tx_interval_ms == 300          # FRR still requires 300 ms RX from us


def test_link_cut_is_detected_by_frr_and_by_us(lab, bfd, events):
    topo, frr, node = lab
    frr_add_peer(frr, NODE4, ROUTER4, rx=300, tx=300, mult=3)
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p", receive_interval_ms=300,
                                               transmit_interval_ms=300, detect_multiplier=3))
    wait_until("session Up on both sides", lambda: frr_status(frr, NODE4) == "up"
               and bfd.states().get(ROUTER4) == "Up", 15)
    wait_until("300 ms timers in force", lambda: frr_peer(frr, NODE4)["remote-transmit-interval"] == 300, 5)
    time.sleep(0.5)
    t0 = time.monotonic()
    topo.set_link("node1", up=False)
    wait_until("FRR to declare the node down", lambda: frr_status(frr, NODE4) == "down", 3,
               interval=0.01)
    frr_detect = time.monotonic() - t0
    wait_until("our side Down", lambda: bfd.states().get(ROUTER4) == "Down", 3, interval=0.01)
    assert frr_detect <= 1.5, f"FRR took {frr_detect:.3f} s"
    assert frr_peer(frr, NODE4)["diagnostic"] == "control detection time expired"
    info = bfd.sessions()[ROUTER4]
    assert info.local_diag == "control_detection_expired"
    down_at = [t for t, p, o, n in events.items if p == ROUTER4 and o == "Up" and n == "Down"]
    assert down_at and down_at[0] - t0 <= 1.5
    # the cable comes back: Up again on both sides, counted as a second up event
    topo.set_link("node1", up=True)
    wait_until("session Up again", lambda: frr_status(frr, NODE4) == "up"
               and bfd.states().get(ROUTER4) == "Up", 15)
    assert bfd.sessions()[ROUTER4].session_up_events == 2


@pytest.fixture
def bgp_lab(topology, frr_router, events):
    """Like ``lab`` but FRR has a BGP neighbour for the node with `neighbor X bfd profile p`."""
    node = topology.add_host("node1", ipv4=[f"{NODE4}/24"], ipv6=[f"{NODE6}/64"])
    # the profile is added through vtysh: in frr.conf, bgpd (which has no `bfd` node) would
    # take the profile block's `exit` lines as leaving configuration mode and drop `router bgp`
    frr_router.start(render_frr_conf(RouterSpec(64500, ROUTER4, neighbors=(
        Neighbor(NODE4, 64501, bfd_profile="p"),))))
    frr_router.vtysh("configure terminal", "bfd", "profile p", "receive-interval 300",
                     "transmit-interval 300", "detect-multiplier 3")
    m = BFDManager(on_state_change=events, netns=node.netns)
    yield topology, frr_router, m
    m.close()


def test_frr_bgp_neighbor_bfd_detects_node_failure(bgp_lab):
    """FRR's BGP neighbour with `neighbor X bfd profile p` drives a bfdd session that our BFD
    brings Up; cutting the node's cable makes FRR's BFD (hence BGP) see the node down in time.
    (No BGP speaker runs on the node here: the BGP+BFD route removal is the agent's e2e test.)"""
    topo, frr, bfd = bgp_lab
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    wait_until("BGP's BFD session Up", lambda: frr_status(frr, NODE4) == "up", 20)
    wait_until("bgpd to hear it", lambda: frr.json(f"show bgp neighbors {NODE4}")[NODE4]
               .get("peerBfdInfo", {}).get("status") == "Up", 10)
    time.sleep(1.0)
    t0 = time.monotonic()
    topo.set_link("node1", up=False)
    wait_until("FRR to declare the node down", lambda: frr_status(frr, NODE4) == "down", 3,
               interval=0.01)
    assert time.monotonic() - t0 <= 1.5
    wait_until("bgpd to hear it", lambda: frr.json(f"show bgp neighbors {NODE4}")[NODE4]
               .get("peerBfdInfo", {}).get("status") == "Down", 3)


def test_passive_mode_waits_for_the_peer(lab, bfd):
    _, frr, node = lab
    with Sniffer(frr.host.netns) as sniff:
        bfd.add_session(ROUTER4, NODE4, BFDProfile("quiet", passive_mode=True))
        time.sleep(2.5)                                  # > 2 slow-rate intervals
        assert sniff.from_(NODE4) == [], "a passive session must not speak first"
        assert bfd.states()[ROUTER4] == "Down"
        frr_add_peer(frr, NODE4, ROUTER4)               # FRR is active
        wait_until("session Up", lambda: frr_status(frr, NODE4) == "up"
                   and bfd.states().get(ROUTER4) == "Up", 15)
    ours, theirs = sniff.from_(NODE4), sniff.from_(ROUTER4)
    assert theirs[0].ts < ours[0].ts
    assert frr_peer(frr, NODE4)["remote-id"] == bfd.sessions()[ROUTER4].local_discr


def test_ipv6_single_hop_up_and_gtsm(lab, bfd):
    _, frr, node = lab
    frr_add_peer(frr, NODE6, ROUTER6)
    with Sniffer(frr.host.netns) as sniff:
        bfd.add_session(ROUTER6, NODE6, BFDProfile("v6"))
        wait_until("IPv6 session Up", lambda: frr_status(frr, NODE6) == "up"
                   and bfd.states().get(ROUTER6) == "Up", 15)
    ours = sniff.from_(NODE6)
    assert ours and all(c.ttl == 255 and c.dport == 3784 and 49152 <= c.sport <= 65535 for c in ours)
    assert len({c.sport for c in ours}) == 1            # one source port per session
    assert frr_peer(frr, NODE6)["remote-id"] == bfd.sessions()[ROUTER6].local_discr


def test_multihop_session_up(lab, bfd):
    _, frr, node = lab
    frr_add_peer(frr, NODE4, ROUTER4, multihop=True)
    bfd.add_session(ROUTER4, NODE4, BFDProfile("mh", minimum_ttl=250), multihop=True)
    wait_until("multi-hop session Up", lambda: bfd.states().get(ROUTER4) == "Up", 15)
    p = frr_peer(frr, NODE4)
    assert p["multihop"] is True and p["status"] == "up"


def test_remove_session_tells_frr_admin_down(lab, bfd, events):
    _, frr, _ = lab
    frr_add_peer(frr, NODE4, ROUTER4)
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    wait_until("session Up", lambda: frr_status(frr, NODE4) == "up", 15)
    bfd.remove_session(ROUTER4)
    p = wait_until("FRR to hear AdminDown", lambda: (lambda p: p if p["status"] == "down" else None)(
        frr_peer(frr, NODE4)), 3, interval=0.01)
    assert p["remote-diagnostic"] == "administratively down"
    assert ROUTER4 not in bfd.states()
    wait_until("the AdminDown event", lambda: ("Up", "AdminDown") in events.states(ROUTER4), 2)


def test_ttl_other_than_255_is_ignored_single_hop(lab, bfd):
    """GTSM (RFC 5881 §5): FRR's packets forged with TTL 254 must not bring the session Up."""
    _, frr, node = lab
    # make the router's kernel decrement: send FRR's packets through an nftables rule setting TTL
    frr.host.run(["nft", "add table ip mx; add chain ip mx out { type filter hook output priority 0; }; "
                  "add rule ip mx out udp dport 3784 ip ttl set 254"])
    frr_add_peer(frr, NODE4, ROUTER4)
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    time.sleep(3.0)
    assert bfd.states()[ROUTER4] == "Down"
    assert bfd.sessions()[ROUTER4].control_packet_input == 0
    frr.host.run(["nft", "delete table ip mx"])
    wait_until("session Up once TTL is 255", lambda: bfd.states().get(ROUTER4) == "Up", 15)


def test_sync_follows_the_configuration(lab, bfd, events):
    """The agent's path: sessions_for_peers(config) -> BFDManager.sync(), on every config change."""
    import ipaddress
    from agent.bfd.runner import sessions_for_peers
    from metalxdp.config.types import BGPPeer
    _, frr, _ = lab
    frr_add_peer(frr, NODE4, ROUTER4)
    bgp_peer = BGPPeer(name="router", my_asn=64501, peer_asn=64500,
                       peer_address=ipaddress.ip_address(ROUTER4), bfd_profile="p")
    slow, fast = BFDProfile("p"), BFDProfile("p", receive_interval_ms=200, transmit_interval_ms=200)
    bfd.sync(sessions_for_peers([bgp_peer], {"p": slow}))
    wait_until("session Up", lambda: frr_status(frr, NODE4) == "up"
               and bfd.states().get(ROUTER4) == "Up", 15)
    bfd.sync(sessions_for_peers([bgp_peer], {"p": fast}))          # timers: poll/final
    wait_until("FRR to learn 200 ms", lambda: frr_peer(frr, NODE4)["remote-receive-interval"] == 200, 10)
    assert frr_counters(frr, NODE4)["session-down"] == 0
    bfd.sync({})                                                    # peer gone: AdminDown
    wait_until("FRR to hear AdminDown", lambda: frr_peer(frr, NODE4)["remote-diagnostic"]
               == "administratively down", 3)
    assert bfd.states() == {}


# ---- echo function (RFC 5880 §6.4) against FRR's bfdd in echo mode ---------------------------
ECHO_PROFILE = BFDProfile("echo", receive_interval_ms=300, transmit_interval_ms=300,
                          detect_multiplier=3, echo_mode=True, echo_interval_ms=100)


def _forwarding(host, on: bool) -> None:
    host.run(["sysctl", "-qw", f"net.ipv4.conf.{host.ifname}.forwarding={int(on)}"])


def test_echo_mode_with_frr_loops_both_ways_and_detects_a_broken_echo_path(lab, bfd, events):
    """Our echo packets go out addressed to ourselves and FRR's forwarding plane returns them;
    FRR's come back through ours. When the router stops forwarding, control packets still flow
    both ways, so only the echo function can take the session down (diagnostic 2)."""
    _, frr, node = lab
    _forwarding(node, True)                      # this node loops FRR's echo packets
    frr_add_peer(frr, NODE4, ROUTER4, rx=300, tx=300, mult=3, echo=100)
    bfd.add_session(ROUTER4, NODE4, ECHO_PROFILE)
    wait_until("FRR to see the session Up", lambda: frr_status(frr, NODE4) == "up", 15)
    wait_until("our side Up", lambda: bfd.states().get(ROUTER4) == "Up", 5)
    info = wait_until("our echo packets to come back",
                      lambda: (lambda i: i if i.echo_packet_input >= 10 else None)(bfd.sessions()[ROUTER4]), 10)
    assert info.echo_active and info.echo_interval_ms == 100
    assert info.local_echo_receive_interval_ms == 100
    assert info.remote_echo_receive_interval_ms == 100
    p = frr_peer(frr, NODE4)
    assert p["remote-echo-receive-interval"] == 100     # what our control packets advertise
    c = wait_until("FRR's echo packets to come back through our node",
                   lambda: (lambda c: c if c and c["echo-packet-input"] >= 10 else None)(frr_counters(frr, NODE4)), 10)
    assert c["echo-packet-output"] >= c["echo-packet-input"]
    sent, back = info.echo_packet_output, info.echo_packet_input
    assert back <= sent

    # the router stops forwarding: our echoes die there, control packets do not
    router = frr.host
    up_events = len([e for e in events.states(ROUTER4) if e[1] == "Up"])
    ctrl_before = bfd.sessions()[ROUTER4].control_packet_input
    t0 = time.monotonic()
    _forwarding(router, False)
    try:
        # (it comes straight back Up: the control packets still flow, and it fails again)
        wait_until("the echo function to take our session down",
                   lambda: bfd.sessions()[ROUTER4].last_down_diag == "echo_failed", 10)
        took = time.monotonic() - t0
        assert took < 5, f"detection through echo took {took:.2f} s"
        assert ("Up", "Down") in events.states(ROUTER4)
        assert bfd.sessions()[ROUTER4].control_packet_input > ctrl_before   # control still flowed
    finally:
        _forwarding(router, True)
    # forwarding back: the session comes Up again and echo runs again
    wait_until("our side Up again", lambda: len([e for e in events.states(ROUTER4) if e[1] == "Up"])
               > up_events and bfd.states().get(ROUTER4) == "Up", 15)
    n = bfd.sessions()[ROUTER4].echo_packet_input
    wait_until("echo packets again", lambda: bfd.sessions()[ROUTER4].echo_packet_input > n + 5, 10)


def test_echo_without_forwarding_here_asks_frr_for_none(lab, bfd):
    """This node's forwarding is off, so it cannot loop FRR's echoes: it advertises Required Min
    Echo RX 0 (FRR sends none) and still runs its own echo through the router."""
    _, frr, node = lab
    _forwarding(node, False)
    frr_add_peer(frr, NODE4, ROUTER4, echo=100)
    bfd.add_session(ROUTER4, NODE4, ECHO_PROFILE)
    wait_until("our side Up", lambda: bfd.states().get(ROUTER4) == "Up", 15)
    wait_until("our echoes back", lambda: bfd.sessions()[ROUTER4].echo_packet_input >= 5, 10)
    assert bfd.sessions()[ROUTER4].local_echo_receive_interval_ms == 0
    wait_until("FRR to learn our echo RX 0",
               lambda: (frr_peer(frr, NODE4) or {}).get("remote-echo-receive-interval") == 0, 5)
    time.sleep(1)
    assert (frr_counters(frr, NODE4) or {}).get("echo-packet-output", 0) == 0


def test_echo_is_not_used_on_ipv6(lab, bfd):
    """MetalLB does not use echo with IPv6 (FRR loops IPv4 echo only): an IPv6 session with an
    echo profile runs without it and advertises Required Min Echo RX 0."""
    _, frr, node = lab
    frr_add_peer(frr, NODE6, ROUTER6, echo=100)
    bfd.add_session(ROUTER6, NODE6, ECHO_PROFILE)
    wait_until("our side Up", lambda: bfd.states().get(ROUTER6) == "Up", 15)
    info = bfd.sessions()[ROUTER6]
    assert not info.echo_active and info.local_echo_receive_interval_ms == 0
    assert info.echo_packet_output == 0
    wait_until("FRR to see echo RX 0", lambda: (frr_peer(frr, NODE6) or {}).get(
        "remote-echo-receive-interval") == 0 and frr_status(frr, NODE6) == "up", 5)
