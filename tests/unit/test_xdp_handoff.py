"""VIP_F_HANDOFF through BPF_PROG_TEST_RUN: a VIP that moved to another live node is answered
only for probes unicast to this node's MAC (stale client caches); broadcast ARP and multicast NS
are left to the new owner; its traffic is still counted."""
from __future__ import annotations

import re

import pytest

from agent import packets as P
from agent.dataplane import BPF_SRC_DIR, VIP_F_HANDOFF, XDP_PASS, XDP_TX

from .test_xdp_prog import (CLIENT4, CLIENT6, CLIENT_MAC, LO, NS_MCAST, NS_UNICAST_NUD, OTHER_MAC, OUR_MAC,
                            UDP4, VIP4, VIP6, arp_reply_expected, arp_req, dp, fresh, na_expected)  # noqa: F401

ROWS = [
    ("broadcast ARP request -> left to the new owner", arp_req(), XDP_PASS),
    ("ARP request unicast to our MAC (stale cache refresh) -> answered", arp_req(dst_mac=OUR_MAC), XDP_TX),
    ("ARP request unicast to another MAC -> pass", arp_req(dst_mac=OTHER_MAC), XDP_PASS),
    ("multicast NS -> left to the new owner", NS_MCAST, XDP_PASS),
    ("unicast NUD probe to our MAC -> answered", NS_UNICAST_NUD, XDP_TX),
    ("IPv4 traffic to the VIP -> pass (the kernel forwards it)", UDP4, XDP_PASS),
]


@pytest.mark.parametrize("desc,frame,verdict", ROWS, ids=[r[0] for r in ROWS])
def test_handoff_answers_only_unicast_probes(fresh, desc, frame, verdict):
    fresh.announce(VIP4, LO, handoff=True)
    fresh.announce(VIP6, LO, handoff=True)
    res = fresh.test_run(frame, LO)
    assert res.verdict == verdict, res.verdict_name
    if verdict == XDP_TX:
        expected = arp_reply_expected(frame) if frame[12:14] == b"\x08\x06" else na_expected(frame)
        assert res.frame.hex() == expected.hex()
    else:
        assert res.frame == frame


def test_handoff_still_counts_traffic_and_normal_mode_comes_back(fresh):
    fresh.announce(VIP4, LO, handoff=True)
    for _ in range(3):
        fresh.test_run(UDP4, LO)
    assert fresh.vip_counters(VIP4, LO)["rx_packets"] == 3
    assert fresh.test_run(arp_req(), LO).verdict == XDP_PASS
    fresh.announce(VIP4, LO)                      # the VIP came back to this node
    assert fresh.test_run(arp_req(), LO).verdict == XDP_TX
    assert fresh.vip_counters(VIP4, LO)["rx_packets"] == 3   # counters kept across the mode change


def test_handoff_flag_matches_the_header():
    text = (BPF_SRC_DIR / "vip_consts.h").read_text()
    assert re.search(r"#define VIP_F_HANDOFF \(1U << 1\)", text) and VIP_F_HANDOFF == 1 << 1
