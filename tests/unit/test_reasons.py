"""agent.reasons and agent.status_report: the pure parts of "why is this Service not announced"
and of `metalxdp agent status` (tables)."""
from __future__ import annotations

import ipaddress

import pytest

from agent import election
from agent.bgp import advertise as bgpadv
from agent.reasons import (BGP, LAYER2, NO_PEERS, EventThrottle, Outcome, ReasonBook, bgp_outcome, event_for,
                           l2_outcome, reason_from_event)
from agent.status_report import frr_uptime, liveness_gate, vip_flags

VIEW = election.ServiceView("default/web", (ipaddress.ip_address("192.0.2.200"),), has_serving_endpoint=True)


@pytest.mark.parametrize("decision,names,xdp,reason,elsewhere", [
    (election.L2Decision("node1", "", pool="l2"), ["eth0"], True, "", None),
    (election.L2Decision("node1", "", pool="l2"), [], True, "announceFailed", None),
    (election.L2Decision("node1", "", pool="l2"), ["eth0"], False, "layer2Disabled", None),
    (election.L2Decision("node2", "", pool="l2", covered_nodes=frozenset({"node1", "node2"})), None, True,
     "notOwner", "node2"),
    (election.L2Decision("node2", "", pool="l2", covered_nodes=frozenset({"node2"})), None, True,
     "noMatchingAdvertisement", None),
    (election.L2Decision(None, "noMatchingAdvertisement", pool="l2"), None, True, "noMatchingAdvertisement", None),
    (election.L2Decision(None, "ipNotAllowed"), None, True, "ipNotAllowed", None),
    (election.L2Decision(None, "notOwner", pool="l2", covered_nodes=frozenset({"node1"})), None, True,
     "notOwner", None),
])
def test_l2_outcome(decision, names, xdp, reason, elsewhere):
    o = l2_outcome(decision, "node1", VIEW, names, xdp=xdp)
    assert (o.protocol, o.reason, o.elsewhere) == (LAYER2, reason, elsewhere)
    assert o.detail   # always says something


@pytest.mark.parametrize("why,peers,reason", [
    (None, {"r1"}, ""),
    (None, set(), NO_PEERS),
    (bgpadv.NO_LOCAL_ENDPOINTS, set(), "noLocalEndpoints"),
    (bgpadv.NOT_OWNER, set(), "notOwner"),
])
def test_bgp_outcome(why, peers, reason):
    o = bgp_outcome(why, peers, "bgp")
    assert (o.protocol, o.reason) == (BGP, reason)


def test_book_reports_each_change_once():
    book = ReasonBook()
    k = ("default/web", BGP)
    a, b = Outcome(BGP, "noEndpoints", "x"), Outcome(BGP, "", "to r1")
    assert [(c.old, c.new) for c in book.update({k: a})] == [(None, a)]
    assert book.update({k: a}) == []                       # same pass again: nothing
    assert [(c.old, c.new) for c in book.update({k: b})] == [(a, b)]
    assert [(c.old, c.new) for c in book.update({})] == [(b, None)]   # service gone


def test_throttle_dedups_and_limits():
    t = EventThrottle(burst=2, per_s=1.0)
    for i in range(5):
        t.offer(("s", i), i)
    t.offer(("s", 0), "latest")                # replaces the pending one, moves to the back
    assert t.due(0.0) == [1, 2]                # burst
    assert t.due(0.5) == []                    # half a token
    assert t.due(1.0) == [3]
    assert t.due(3.0) == [4, "latest"]
    assert t.pending == 0


def test_events_round_trip_and_skip_the_normal_cases():
    assert event_for(Outcome(LAYER2, "notOwner", "node \"node2\" announces it", elsewhere="node2"), "node1") is None
    assert event_for(Outcome(BGP, "", "to r1"), "node1") is None
    typ, reason, msg = event_for(Outcome(BGP, "noLocalEndpoints", "no ready endpoint here"), "node1")
    assert (typ, reason) == ("Normal", "noLocalEndpoints")
    assert reason_from_event(reason, msg) == ("node1", "bgp", "noLocalEndpoints", "no ready endpoint here")
    assert reason_from_event("nodeAssigned", 'announcing from node "node3" with protocol "bgp"') == \
        ("node3", "bgp", "", "")
    assert reason_from_event("IPAllocated", "Assigned IP") is None


@pytest.mark.parametrize("secs,want", [
    (None, "never"), (0, "00:00:00"), (59.9, "00:00:59"), (3661, "01:01:01"),
    (86400 + 2 * 3600 + 3 * 60, "1d02h03m"), (8 * 86400 + 3600, "01w1d01h"),
])
def test_frr_uptime(secs, want):
    assert frr_uptime(secs) == want


@pytest.mark.parametrize("max_age,hb,now,open_,enabled", [
    (400_000_000, 1_000_000_000, 1_100_000_000, True, True),
    (400_000_000, 1_000_000_000, 1_400_000_001, False, True),
    (0, 1_000_000_000, 9_000_000_000, True, False),
])
def test_liveness_gate(max_age, hb, now, open_, enabled):
    g = liveness_gate(max_age, hb, now)
    assert (g["open"], g["enabled"]) == (open_, enabled)


def test_vip_flags():
    assert vip_flags(0) == [] and vip_flags(3) == ["etpLocalMisdirect", "handoff"] and vip_flags(4) == ["0x4"]


def test_format_agent_status_shows_frr_like_rows():
    from agent.status_report import format_agent_status
    doc = {"node": "node1", "time": 1000.0, "config": {"loaded": True, "stale": False},
           "bgp": {"sessions": [{"peer": "router", "address": "192.0.2.1", "myASN": 64513, "peerASN": 64512,
                                 "state": "Established", "upSince": 995.0, "prefixesSent": 2},
                                {"peer": "router6", "address": "2001:db8:0:1::1", "myASN": 64513,
                                 "peerASN": 64512, "state": "Active", "upSince": None, "prefixesSent": 0}]},
           "bfd": {"peers": []}, "membership": {"enabled": True, "members": ["node1", "node2"],
                                                 "states": {"node1": "alive", "node2": "alive", "node3": "dead"}},
           "xdp": {"enabled": False}, "vips": [],
           "services": [{"service": "default/web", "protocol": "bgp", "announced": False,
                         "reason": "noLocalEndpoints", "detail": "no ready endpoint here"}]}
    text = format_agent_status(doc)
    rows = [line.split() for line in text.splitlines()]
    assert ["router", "192.0.2.1", "4", "64512", "64513", "00:00:05", "2"] in rows
    assert ["router6", "2001:db8:0:1::1", "4", "64512", "64513", "never", "Active"] in rows
    assert "not alive: node3 (dead)" in text
    assert ["default/web", "bgp", "no", "noLocalEndpoints", "no", "ready", "endpoint", "here"] in rows
