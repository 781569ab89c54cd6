"""agent.l2.L2Announcer with an in-memory dataplane and gratuitous sender (pure logic): a
stand-in for a crash-held node answers without a gratuitous burst, and becomes a normal
announcement (with its burst) when the hold ends in a takeover."""
from __future__ import annotations

from agent.l2 import L2Announcer

IFACES = {"eth0": 2}
VIP = ("192.0.2.50", "eth0")
WANT = {VIP: ("default/web", False)}


class FakeDP:
    def __init__(self):
        self.attached: set[int] = set()
        self.map: dict[tuple[str, str], dict] = {}

    def announce(self, ip, ifname, handoff=False, etp_local_misdirect=False):
        self.map[(ip, ifname)] = {"handoff": handoff}

    def attach(self, ifname):
        self.attached.add(IFACES[ifname])

    def announced(self):
        return [(ip, IFACES[ifn], 0) for ip, ifn in self.map]

    def withdraw(self, ip, ifname):
        self.map.pop((ip, ifname), None)

    def vip_counters(self, ip, ifname):
        return {"rx_packets": 0}


class FakeGarp:
    def __init__(self):
        self.started: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []

    def start(self, ip, ifname):
        self.started.append((ip, ifname))

    def cancel(self, ip, ifname):
        self.cancelled.append((ip, ifname))


def announcer():
    dp, garp = FakeDP(), FakeGarp()
    return L2Announcer("node2", dp, garp), dp, garp


def test_a_stand_in_answers_without_a_gratuitous_burst():
    l2, dp, garp = announcer()
    l2.apply(WANT, {VIP[0]: "node1"}, IFACES, frozenset({VIP}))
    assert VIP in dp.map and dp.map[VIP]["handoff"] is False       # ARP requests answered
    assert garp.started == []                                       # clients are not moved
    assert l2.standing_in == {VIP}
    l2.apply(WANT, {VIP[0]: "node1"}, IFACES, frozenset({VIP}))   # steady: still no burst
    assert garp.started == []


def test_the_hold_ends_in_a_takeover_the_stand_in_becomes_an_announcement_with_its_burst():
    l2, dp, garp = announcer()
    l2.apply(WANT, {VIP[0]: "node1"}, IFACES, frozenset({VIP}))
    l2.apply(WANT, {}, IFACES)              # node1 declared dead: we are elected outright
    assert garp.started == [VIP] and l2.standing_in == set()
    l2.apply(WANT, {}, IFACES)
    assert garp.started == [VIP]            # once


def test_the_crashed_agent_comes_back_the_stand_in_hands_off():
    l2, dp, garp = announcer()
    l2.apply(WANT, {VIP[0]: "node1"}, IFACES, frozenset({VIP}))
    l2.apply({}, {VIP[0]: "node1"}, IFACES)        # node1 refuted the hold: it answers again
    assert dp.map[VIP]["handoff"] is True           # clients that asked us meanwhile: unicast only
    assert garp.started == [] and l2.standing_in == set()


def test_a_normal_announcement_still_sends_its_burst():
    l2, dp, garp = announcer()
    l2.apply(WANT, {}, IFACES)
    assert garp.started == [VIP] and VIP in dp.map
