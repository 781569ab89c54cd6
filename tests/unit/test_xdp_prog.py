"""bpf/xdp_vip.c through the kernel's BPF_PROG_TEST_RUN: a table of (description, input frame,
expected verdict, expected output frame), plus counters, the liveness gate, truncation at
every length and pinned-state adoption. Needs root, BCC and kernel headers; without them
these tests FAIL with the reason (they never skip).

The program reads ``ingress_ifindex``; the kernel resolves it in the test's network
namespace, so the announced interface is ``lo`` (ifindex 1, present in every namespace).
"Wrong interface" announces the VIP on an ifindex that is not 1.
"""
from __future__ import annotations

import ipaddress
import os
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import pytest

from agent import packets as P
from metalxdp.rig.xdp_fuzz import arp_frame, ns_frame, option
from agent.dataplane import (BPF_SRC_DIR, VIP_F_ETP_LOCAL_MISDIRECT, XDP_PASS, XDP_TX, Dataplane,
                             DataplaneError, bpffs_mounted, hz_from_config, jiffies_for_ms, prog_test_run,
                             snap_hz)

LO = 1
OTHER_IFINDEX = 4242          # an interface the VIP is announced on, but the frame never arrives on
OUR_MAC = P.mac_bytes("02:00:5e:00:00:01")
CLIENT_MAC = P.mac_bytes("02:00:5e:00:00:aa")
OTHER_MAC = P.mac_bytes("02:00:5e:00:00:bb")
VIP4, VIP6 = "192.0.2.200", "2001:db8:0:1::200"
OTHER4, OTHER6 = "192.0.2.201", "2001:db8:0:1::201"
CLIENT4, CLIENT6 = "192.0.2.100", "2001:db8:0:1::100"
UNCHANGED = object()   # expected output: the input, byte for byte


@pytest.fixture(scope="module")
def dp():
    try:
        d = Dataplane(None).open()   # nothing pinned, nothing attached: test_run only
    except DataplaneError as e:
        pytest.fail(f"XDP dataplane unavailable (these tests need root, BCC and kernel headers): {e}")
    yield d
    d.close()


@pytest.fixture
def fresh(dp):
    """No VIPs (a slot is zeroed when a VIP gets it), lo's MAC set, liveness gate off."""
    dp.withdraw_all()
    for i in range(len(dp.table("mx_global"))):  # per-CPU zeroes
        t = dp.table("mx_global")
        t[t.Key(i)] = t.Leaf()
    dp.set_interface(LO, OUR_MAC)
    dp.set_interface(OTHER_IFINDEX, OUR_MAC)
    dp.set_liveness_max_age(0)
    dp.heartbeat()
    return dp


# ---- an independent checker for the NA's ICMPv6 checksum (not agent.packets') -------------

def independent_icmpv6_checksum_ok(frame: bytes) -> bool:
    """Recompute RFC 4443's checksum with plain integer arithmetic over big-endian pairs."""
    plen = int.from_bytes(frame[18:20], "big")
    src, dst, msg = frame[22:38], frame[38:54], frame[54:54 + plen]
    data = src + dst + plen.to_bytes(4, "big") + bytes([0, 0, 0, 58]) + msg
    total = 0
    for i in range(0, len(data) - 1, 2):
        total += (data[i] << 8) | data[i + 1]
    if len(data) % 2:
        total += data[-1] << 8
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return total == 0xFFFF


# ---- the table ----------------------------------------------------------------------------

@dataclass
class Case:
    description: str
    frame: bytes
    verdict: int
    output: object                                   # bytes, or UNCHANGED
    announce: list = field(default_factory=lambda: [(VIP4, LO), (VIP6, LO)])
    counters: Optional[dict] = None                  # {(ip, ifindex): {field: value}} expected after
    global_counters: Optional[dict] = None


def arp_req(target=VIP4, sender=CLIENT4, dst_mac=P.BROADCAST_MAC, pad=True):
    return P.arp_request(CLIENT_MAC, sender, target, dst_mac=dst_mac, pad=pad)


def arp_reply_expected(request: bytes) -> bytes:
    return P.arp_reply_for(P.parse_arp(request), OUR_MAC)[:len(request)] if len(request) < 60 else \
        P.arp_reply_for(P.parse_arp(request), OUR_MAC)


def na_expected(ns: bytes) -> bytes:
    return P.neighbor_advert_for(P.parse_ndp(ns), OUR_MAC)


NS_MCAST = P.neighbor_solicit(CLIENT_MAC, CLIENT6, VIP6)
NS_UNICAST_NUD = P.neighbor_solicit(CLIENT_MAC, CLIENT6, VIP6, dst_ip=VIP6, dst_mac=OUR_MAC, sllao=False)
NS_UNICAST_WITH_SLLAO = P.neighbor_solicit(CLIENT_MAC, CLIENT6, VIP6, dst_ip=VIP6, dst_mac=OUR_MAC)
NS_DAD = P.neighbor_solicit(CLIENT_MAC, "::", VIP6)
ARP_UNPADDED = arp_req(pad=False)
UDP4 = P.ipv4_udp(CLIENT_MAC, OUR_MAC, CLIENT4, VIP4, payload=b"y" * 100)
UDP6 = P.ipv6_udp(CLIENT_MAC, OUR_MAC, CLIENT6, VIP6, payload=b"z" * 200)


def _nonce_ns() -> bytes:
    """A DAD NS with a nonce option (RFC 7527), 8 bytes longer than the NA: the program must
    trim the tail."""
    ns = P.neighbor_solicit(CLIENT_MAC, "::", VIP6)
    icmp = bytearray(ns[54:]) + bytes([14, 1]) + b"\x01\x02\x03\x04\x05\x06"
    icmp[2:4] = b"\0\0"
    csum = P.icmpv6_checksum("::", P.solicited_node(VIP6), bytes(icmp))
    icmp[2:4] = struct.pack("!H", csum)
    hdr = bytearray(ns[:54])
    hdr[18:20] = struct.pack("!H", len(icmp))
    return bytes(hdr) + bytes(icmp)


NS_DAD_NONCE = _nonce_ns()


def _hop_limit(frame: bytes, hl: int) -> bytes:
    return frame[:21] + bytes([hl]) + frame[22:]


def _a(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def ns_with(**kw) -> bytes:
    """An NS for VIP6 from CLIENT6 to its solicited-node group, with a right checksum unless
    csum_delta says otherwise (xdp_fuzz.ns_frame, addresses as strings)."""
    for k in ("target", "src", "dst"):
        if isinstance(kw.get(k), str):
            kw[k] = _a(kw[k])
    kw.setdefault("target", _a(VIP6))
    kw.setdefault("src", _a(CLIENT6))
    return ns_frame(eth_src=CLIENT_MAC, **kw)


SLLAO = option(1, 1, CLIENT_MAC)
NONCE = option(14, 1, b"\x01\x02\x03\x04\x05\x06")
MALFORMED = {"pass_malformed": 1}
NS_PADDED = ns_with(trailer=bytes(14))        # Ethernet padding after the payload: trimmed
NS_DUP_SLLAO = ns_with(options=SLLAO + option(1, 2, CLIENT_MAC))
ICMP6_ECHO = P.ethernet(OUR_MAC, CLIENT_MAC, P.ETH_P_IPV6, P.ipv6_packet(CLIENT6, VIP6, 58, bytes([128, 0]) + bytes(30)))
NA_TO_VIP = P.neighbor_advert(CLIENT_MAC, OUR_MAC, CLIENT6, VIP6, CLIENT6, P.NA_SOLICITED)
RS_TO_VIP = P.ethernet(OUR_MAC, CLIENT_MAC, P.ETH_P_IPV6, P.ipv6_packet(CLIENT6, VIP6, 58, bytes([133, 0]) + bytes(6), 255))


CASES = [
    # ---- ARP
    Case("ARP request (broadcast) for a VIP on this interface -> reply with our MAC",
         arp_req(), XDP_TX, arp_reply_expected(arp_req()),
         counters={(VIP4, LO): {"requests": 1, "replies": 1, "rx_packets": 0}}),
    Case("ARP request without Ethernet padding (42 bytes) -> 42-byte reply",
         ARP_UNPADDED, XDP_TX, arp_reply_expected(ARP_UNPADDED)),
    Case("ARP request unicast to our MAC (a refresh) -> reply",
         arp_req(dst_mac=OUR_MAC), XDP_TX, arp_reply_expected(arp_req(dst_mac=OUR_MAC))),
    Case("ARP probe (sender 0.0.0.0, RFC 5227) for a VIP -> reply defends it",
         arp_req(sender="0.0.0.0"), XDP_TX, arp_reply_expected(arp_req(sender="0.0.0.0"))),
    Case("ARP request for a VIP announced on another interface only -> pass",
         arp_req(), XDP_PASS, UNCHANGED, announce=[(VIP4, OTHER_IFINDEX)],
         counters={(VIP4, OTHER_IFINDEX): {"requests": 0, "replies": 0}}),
    Case("ARP request for an address that is no VIP -> pass",
         arp_req(target=OTHER4), XDP_PASS, UNCHANGED),
    Case("ARP request for a VIP, unicast to another host's MAC -> pass",
         arp_req(dst_mac=OTHER_MAC), XDP_PASS, UNCHANGED, global_counters={"not_for_us": 1}),
    Case("ARP reply about a VIP -> pass (replies are never answered)",
         P.arp(P.ARP_REPLY, OUR_MAC, CLIENT_MAC, CLIENT_MAC, CLIENT4, OUR_MAC, VIP4), XDP_PASS, UNCHANGED),
    Case("gratuitous ARP request for a VIP (sender == target) -> pass",
         P.gratuitous_frames(VIP4, OTHER_MAC)[0], XDP_PASS, UNCHANGED),
    Case("gratuitous ARP reply for a VIP -> pass",
         P.gratuitous_frames(VIP4, OTHER_MAC)[1], XDP_PASS, UNCHANGED),
    Case("802.1Q-tagged ARP request for a VIP -> pass untouched",
         P.vlan_tagged(arp_req(), 10), XDP_PASS, UNCHANGED, global_counters={"pass_vlan": 1}),
    Case("802.1ad-tagged ARP request for a VIP -> pass untouched",
         P.vlan_tagged(arp_req(), 10, tpid=0x88A8), XDP_PASS, UNCHANGED, global_counters={"pass_vlan": 1}),
    Case("ARP for another protocol type (not IPv4) -> pass",
         arp_req()[:16] + b"\x86\xdd" + arp_req()[18:], XDP_PASS, UNCHANGED),
    Case("ARP request from a multicast sender MAC -> pass (would reply to a group)",
         P.arp(P.ARP_REQUEST, P.BROADCAST_MAC, CLIENT_MAC, b"\x01\x00\x5e\x00\x00\x01", CLIENT4,
               P.ZERO_MAC, VIP4), XDP_PASS, UNCHANGED),
    Case("ARP request from 255.255.255.255 (martian sender) -> pass, malformed",
         arp_req(sender="255.255.255.255"), XDP_PASS, UNCHANGED, global_counters=MALFORMED,
         counters={(VIP4, LO): {"requests": 0}}),
    Case("ARP request from 127.0.0.1 (loopback sender) -> pass", arp_req(sender="127.0.0.1"), XDP_PASS,
         UNCHANGED, global_counters=MALFORMED),
    Case("ARP request from 224.0.0.5 (multicast sender) -> pass", arp_req(sender="224.0.0.5"), XDP_PASS,
         UNCHANGED, global_counters=MALFORMED),
    Case("ARP request from 0.1.2.3 (0/8, but not the probe's 0.0.0.0) -> pass", arp_req(sender="0.1.2.3"),
         XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("ARP request from 240.0.0.1 (class E: not martian to Linux) -> reply", arp_req(sender="240.0.0.1"),
         XDP_TX, arp_reply_expected(arp_req(sender="240.0.0.1"))),
    Case("ARP reply from a martian sender -> pass, malformed (validity comes before the operation)",
         arp_frame(op=2, spa=_a("255.255.255.255"), tpa=_a(VIP4)), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("802.3 frame (length field, LLC) -> pass",
         P.BROADCAST_MAC + CLIENT_MAC + b"\x00\x2e" + b"\xaa" * 46, XDP_PASS, UNCHANGED),
    # ---- NDP
    Case("NS to the solicited-node group for a VIP -> solicited NA (S=1, O=0) to the sender",
         NS_MCAST, XDP_TX, na_expected(NS_MCAST),
         counters={(VIP6, LO): {"requests": 1, "replies": 1}}),
    Case("unicast NUD probe to the VIP without SLLAO (metallb#2920) -> NA to the sender's MAC",
         NS_UNICAST_NUD, XDP_TX, na_expected(NS_UNICAST_NUD)),
    Case("unicast NS to the VIP with SLLAO -> NA", NS_UNICAST_WITH_SLLAO, XDP_TX, na_expected(NS_UNICAST_WITH_SLLAO)),
    Case("DAD probe from :: for a VIP -> NA to ff02::1 with S=0", NS_DAD, XDP_TX, na_expected(NS_DAD)),
    Case("DAD probe with a nonce option (longer than the NA) -> tail trimmed, NA to ff02::1",
         NS_DAD_NONCE, XDP_TX, na_expected(NS_DAD)),
    Case("DAD probe carrying a SLLAO (invalid, RFC 4861 7.1.1) -> pass",
         P.neighbor_solicit(CLIENT_MAC, "::", VIP6, sllao=True), XDP_PASS, UNCHANGED),
    Case("NS with hop limit 64 (invalid) -> pass", _hop_limit(NS_MCAST, 64), XDP_PASS, UNCHANGED,
         global_counters={"pass_malformed": 1}),
    Case("NS with an option of length 0 (RFC 4861 7.1.1) -> pass, malformed",
         ns_with(options=option(14, 0) + bytes(6)), XDP_PASS, UNCHANGED, global_counters=MALFORMED,
         counters={(VIP6, LO): {"requests": 0, "rx_packets": 0}}),
    Case("NS with a SLLAO then an option of length 0 -> pass",
         ns_with(options=SLLAO + option(14, 0) + bytes(6)), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("DAD probe with a nonce, then a SLLAO (7.1.1: none anywhere) -> pass",
         ns_with(src="::", options=NONCE + SLLAO), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS from a multicast source (RFC 4291 2.7) -> pass, no NA to ff02::1 with S=1",
         ns_with(src="ff02::1"), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS from ::1 (RFC 4291 2.5.3; Linux drops it) -> pass", ns_with(src="::1"), XDP_PASS, UNCHANGED,
         global_counters=MALFORMED),
    Case("NS from an IPv4-mapped source (Linux drops it) -> pass", ns_with(src="::ffff:192.0.2.100"),
         XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS whose option runs past the payload -> pass", ns_with(options=option(14, 2)[:8]),
         XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS with 4 bytes after its last option -> pass", ns_with(options=SLLAO + bytes(4)),
         XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS whose SLLAO is 16 bytes (Ethernet: 8, RFC 2464 6) -> pass",
         ns_with(options=option(1, 2, CLIENT_MAC)), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS with a second, 16-byte SLLAO (Linux ignores duplicates) -> NA", NS_DUP_SLLAO, XDP_TX,
         na_expected(NS_DUP_SLLAO)),
    Case("NS with a bad ICMPv6 checksum -> pass", ns_with(csum_delta=1), XDP_PASS, UNCHANGED,
         global_counters=MALFORMED),
    Case("NS with code 1 -> pass", ns_with(code=1), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS with an ICMP length of 20 (< 24) -> pass", ns_with(options=b"", plen_delta=-4), XDP_PASS,
         UNCHANGED, global_counters=MALFORMED),
    Case("NS for a multicast target -> pass", ns_with(target="ff02::1:ff00:200", dst="ff02::1:ff00:200"),
         XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS from a multicast Ethernet source -> pass", ns_frame(eth_src=b"\x03" + CLIENT_MAC[1:],
                                                                target=_a(VIP6), src=_a(CLIENT6)),
         XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS with more than 256 bytes of options -> pass (the program walks at most 256)",
         ns_with(options=SLLAO + NONCE * 32), XDP_PASS, UNCHANGED, global_counters=MALFORMED),
    Case("NS with 256 bytes of options -> NA", ns_with(options=SLLAO + NONCE * 31), XDP_TX,
         na_expected(ns_with(options=SLLAO + NONCE * 31))),
    Case("NS with Ethernet padding after the payload -> NA (tail trimmed)", NS_PADDED, XDP_TX,
         na_expected(NS_PADDED)),
    Case("NS (valid) to another group -> pass, not malformed",
         ns_with(dst="ff02::1:ff00:1234"), XDP_PASS, UNCHANGED, global_counters={"pass_malformed": 0}),
    Case("NS for an address that is no VIP -> pass", P.neighbor_solicit(CLIENT_MAC, CLIENT6, OTHER6),
         XDP_PASS, UNCHANGED),
    Case("NS for a VIP announced on another interface only -> pass", NS_MCAST, XDP_PASS, UNCHANGED,
         announce=[(VIP6, OTHER_IFINDEX)]),
    Case("NS to a group that is not the target's solicited-node group -> pass",
         P.neighbor_solicit(CLIENT_MAC, CLIENT6, VIP6, dst_ip="ff02::1:ff00:1234"), XDP_PASS, UNCHANGED),
    Case("802.1Q-tagged NS for a VIP -> pass", P.vlan_tagged(NS_MCAST, 20), XDP_PASS, UNCHANGED),
    Case("an NA for a VIP (someone else's) -> pass",
         P.gratuitous_frames(VIP6, OTHER_MAC)[0], XDP_PASS, UNCHANGED),
    # ---- traffic
    Case("IPv4 UDP to a VIP -> pass, counted with exact bytes", UDP4, XDP_PASS, UNCHANGED,
         counters={(VIP4, LO): {"rx_packets": 1, "rx_bytes": len(UDP4), "misdirected": 0, "requests": 0}}),
    Case("IPv6 UDP to a VIP -> pass, counted with exact bytes", UDP6, XDP_PASS, UNCHANGED,
         counters={(VIP6, LO): {"rx_packets": 1, "rx_bytes": len(UDP6), "misdirected": 0}}),
    Case("IPv4 to an ETP=Local VIP without a local endpoint -> pass, counted as misdirected", UDP4,
         XDP_PASS, UNCHANGED, announce=[(VIP4, LO, True)],
         counters={(VIP4, LO): {"rx_packets": 1, "rx_bytes": len(UDP4), "misdirected": 1}}),
    Case("ICMPv6 echo to a VIP -> pass, counted", ICMP6_ECHO, XDP_PASS, UNCHANGED,
         counters={(VIP6, LO): {"rx_packets": 1, "rx_bytes": len(ICMP6_ECHO)}}),
    Case("NA to a VIP (neighbour discovery) -> pass, not counted as traffic", NA_TO_VIP, XDP_PASS, UNCHANGED,
         counters={(VIP6, LO): {"rx_packets": 0, "rx_bytes": 0, "requests": 0}}),
    Case("router solicitation to a VIP (neighbour discovery) -> pass, not counted", RS_TO_VIP, XDP_PASS,
         UNCHANGED, counters={(VIP6, LO): {"rx_packets": 0}}),
    Case("unicast NS to a VIP -> NA, counted as a request, not as traffic", NS_UNICAST_NUD, XDP_TX,
         na_expected(NS_UNICAST_NUD), counters={(VIP6, LO): {"rx_packets": 0, "requests": 1, "replies": 1}}),
    Case("IPv4 to a non-VIP -> pass, nothing counted", P.ipv4_udp(CLIENT_MAC, OUR_MAC, CLIENT4, OTHER4),
         XDP_PASS, UNCHANGED, counters={(VIP4, LO): {"rx_packets": 0, "rx_bytes": 0}}),
    Case("IPv4 to a VIP arriving on another interface -> not counted", UDP4, XDP_PASS, UNCHANGED,
         announce=[(VIP4, OTHER_IFINDEX)], counters={(VIP4, OTHER_IFINDEX): {"rx_packets": 0}}),
]


def _apply(dp: Dataplane, announce) -> None:
    for row in announce:
        ip, ifindex, *rest = row
        dp.announce(ip, ifindex, etp_local_misdirect=bool(rest and rest[0]))


@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_table(fresh, case: Case):
    dp = fresh
    _apply(dp, case.announce)
    res = dp.test_run(case.frame, LO)
    assert res.verdict_name == {XDP_PASS: "XDP_PASS", XDP_TX: "XDP_TX"}[case.verdict]
    expected = case.frame if case.output is UNCHANGED else case.output
    assert res.frame.hex() == expected.hex()
    if res.verdict == XDP_TX and P.parse_ndp(res.frame):
        na = P.parse_ndp(res.frame)
        assert independent_icmpv6_checksum_ok(res.frame)
        assert na.hop_limit == 255 and na.type == P.ND_NEIGHBOR_ADVERT and not na.override
        assert na.src == ipaddress.ip_address(VIP6) and na.lladdr == OUR_MAC
    counters = dp.counters()
    for key, fields in (case.counters or {}).items():
        got = counters[(str(ipaddress.ip_address(key[0])), key[1])]
        assert {f: got[f] for f in fields} == fields
    g = dp.global_counters()
    for name, value in (case.global_counters or {}).items():
        assert g[name] == value, g


# ---- truncation at every length -------------------------------------------------------------

TRUNCATION_FRAMES = [
    ("ARP request", arp_req()),
    ("NS with SLLAO", NS_MCAST),
    ("DAD NS", NS_DAD),
    ("IPv4 UDP to VIP", UDP4),
]


@pytest.mark.parametrize("name,full", TRUNCATION_FRAMES, ids=[n for n, _ in TRUNCATION_FRAMES])
def test_truncated_frames_at_every_length(fresh, name, full):
    """Every prefix of a frame that would be answered or counted: the kernel refuses test
    runs shorter than an Ethernet header (as drivers never deliver them); from 14 bytes up
    to the last byte the needed headers end, the frame passes untouched and nothing is sent."""
    dp = fresh
    _apply(dp, [(VIP4, LO), (VIP6, LO)])
    for n in range(0, 14):
        with pytest.raises(DataplaneError, match="Invalid argument"):
            dp.test_run(full[:n], LO)
    needed = {"ARP request": 42, "NS with SLLAO": 86, "DAD NS": 78, "IPv4 UDP to VIP": 34}[name]
    for n in range(14, len(full) + 1):
        res = dp.test_run(full[:n], LO)
        if n < needed:
            assert res.verdict == XDP_PASS, f"{name} cut at {n} bytes"
            assert res.frame == full[:n], f"{name} cut at {n} bytes was modified"
        elif name == "IPv4 UDP to VIP":
            assert res.verdict == XDP_PASS and res.frame == full[:n]
        else:
            assert res.verdict == XDP_TX, f"{name} at {n} bytes"
    if name == "IPv4 UDP to VIP":   # counted from the first length holding the IPv4 header
        assert dp.vip_counters(VIP4, LO)["rx_packets"] == len(full) + 1 - needed


def test_ns_whose_payload_length_exceeds_the_frame_passes(fresh):
    fresh.announce(VIP6, LO)
    frame = NS_MCAST[:18] + struct.pack("!H", 200) + NS_MCAST[20:]
    res = fresh.test_run(frame, LO)
    assert res.verdict == XDP_PASS and res.frame == frame


# ---- liveness gate ---------------------------------------------------------------------------

def test_liveness_gate_expired_heartbeat_passes(fresh):
    dp = fresh
    dp.announce(VIP4, LO)
    dp.announce(VIP6, LO)
    dp.set_liveness_max_age(100)
    dp.set_heartbeat_ns(time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 1_000_000_000)
    for frame in (arp_req(), NS_MCAST):
        res = dp.test_run(frame, LO)
        assert res.verdict == XDP_PASS and res.frame == frame
    assert dp.global_counters()["gated"] == 2
    assert dp.vip_counters(VIP4, LO)["requests"] == 1 and dp.vip_counters(VIP4, LO)["replies"] == 0
    dp.heartbeat()                                   # the agent is back
    assert dp.test_run(arp_req(), LO).verdict == XDP_TX
    dp.set_liveness_max_age(0)                       # gate off: an ancient heartbeat is fine
    dp.set_heartbeat_ns(1)
    assert dp.test_run(arp_req(), LO).verdict == XDP_TX


def test_liveness_gate_counts_jiffies_stamped_by_the_heartbeat_program(fresh):
    """The packet path compares jiffies (an inlined load, no helper call) with what
    xdp_heartbeat stamped; the window is converted with the kernel's HZ."""
    dp = fresh
    dp.announce(VIP4, LO)
    dp.set_liveness_max_age(1000)
    leaf = dp.table("mx_liveness")[0]
    hz = dp.kernel_hz()
    assert leaf.hz == hz and leaf.max_age_jiffies == hz     # 1000 ms = HZ jiffies
    mono = lambda: time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # noqa: E731
    assert abs(leaf.heartbeat_ns - mono()) < 5_000_000_000  # stamped by the program, same clock
    dp.set_heartbeat_ns(mono() + 50_000_000)                # "ahead": signed difference, fresh
    assert dp.test_run(arp_req(), LO).verdict == XDP_TX
    dp.set_heartbeat_ns(mono() - 300_000_000)               # well inside the window
    assert dp.test_run(arp_req(), LO).verdict == XDP_TX
    dp.set_heartbeat_ns(mono() - 3_000_000_000)             # well outside
    assert dp.test_run(arp_req(), LO).verdict == XDP_PASS
    dp.heartbeat()
    assert dp.test_run(arp_req(), LO).verdict == XDP_TX


@pytest.mark.parametrize("text, hz", [("CONFIG_HZ_250=y\nCONFIG_HZ=250\n", 250), ("# CONFIG_HZ is not set\n", None),
                                      ("CONFIG_HZ=1000\nCONFIG_HZ_1000=y", 1000)])
def test_hz_from_config(text, hz):
    assert hz_from_config(text) == hz


@pytest.mark.parametrize("measured, hz", [(99.0, 100), (112.0, 100), (238.0, 250), (262.0, 250), (290.0, 300),
                                          (960.0, 1000), (1500.0, 1500), (50.0, 50)])
def test_snap_hz(measured, hz):
    assert snap_hz(measured) == hz


@pytest.mark.parametrize("ms, hz, jiffies", [(0, 250, 0), (400, 250, 100), (400, 1000, 400), (401, 100, 41),
                                             (1, 100, 1), (100, 300, 30)])
def test_jiffies_for_ms(ms, hz, jiffies):
    assert jiffies_for_ms(ms, hz) == jiffies


def test_bench_wrappers_run_the_program_and_restore_the_frame():
    """bench/xdp_prog_ns.py times the reply paths through bpf/bench_harness.h: the wrapper must
    give the program's verdict and side effects, and hand back the original frame."""
    try:
        d = Dataplane(None, cflags=["-DMX_BENCH_HARNESS"]).open()
    except DataplaneError as e:
        pytest.fail(f"XDP dataplane unavailable: {e}")
    try:
        d.set_interface(LO, OUR_MAC)
        d.announce(VIP4, LO)
        d.announce(VIP6, LO)
        for fn, frame in (("xdp_bench_arp", arp_req()), ("xdp_bench_ns", NS_MCAST)):
            direct = d.test_run(frame, LO)
            assert direct.verdict == XDP_TX and direct.frame != frame
            r = prog_test_run(d.load_function(fn), frame, LO, 1000)
            assert r.verdict == XDP_TX and r.frame == frame, fn
            base = prog_test_run(d.load_function(fn + "_base"), frame, LO, 1)
            assert base.verdict == XDP_TX and base.frame == frame
        assert d.vip_counters(VIP4, LO)["replies"] == 1001
        assert d.vip_counters(VIP6, LO)["replies"] == 1001
    finally:
        d.close()


def test_announce_refuses_a_non_ethernet_interface(fresh):
    fresh._macs.clear()                               # forget lo's test MAC: read the real one
    with pytest.raises(DataplaneError, match="not an Ethernet interface"):
        fresh.announce(VIP4, "lo")


def test_mac_change_reaches_announced_vips(fresh):
    fresh.announce(VIP4, LO)
    new_mac = P.mac_bytes("02:00:5e:00:00:77")
    fresh.set_interface(LO, new_mac)
    res = fresh.test_run(arp_req(), LO)
    assert res.verdict == XDP_TX and P.parse_arp(res.frame).sha == new_mac


def test_counter_slots_are_reused_from_zero(fresh):
    fresh.announce(VIP4, LO)
    fresh.test_run(UDP4, LO)
    fresh.withdraw(VIP4, LO)
    fresh.announce(OTHER4, LO)                        # gets the freed slot, zeroed
    assert fresh.vip_counters(OTHER4, LO)["rx_packets"] == 0


def test_slots_stay_unique_and_lowest_over_announces_and_withdraws(fresh):
    """The agent keeps the free slots itself (no map scan per announce): every VIP still gets
    its own slot, the lowest free one, and a withdrawn VIP's slot is given out again."""
    first = [f"198.18.1.{i}" for i in range(1, 101)]
    for ip in first:
        fresh.announce(ip, LO)
    slots = sorted(v.slot for v in fresh.table("mx_vips").values())
    assert slots == list(range(100))
    for ip in first[::2]:
        fresh.withdraw(ip, LO)
    for i in range(1, 61):
        fresh.announce(f"198.18.2.{i}", LO)
    slots = sorted(v.slot for v in fresh.table("mx_vips").values())
    assert slots == list(range(110))


def test_counters_sum_over_many_packets_and_withdraw(fresh):
    dp = fresh
    dp.announce(VIP4, LO)
    for _ in range(10):
        dp.test_run(UDP4, LO)
    dp.announce(VIP4, LO)                            # re-announce keeps counters
    c = dp.vip_counters(VIP4, LO)
    assert (c["rx_packets"], c["rx_bytes"]) == (10, 10 * len(UDP4))
    dp.withdraw(VIP4, LO)
    assert dp.announced() == [] and dp.counters() == {}
    assert dp.test_run(arp_req(), LO).verdict == XDP_PASS


# ---- Python <-> C agreement -------------------------------------------------------------------

def test_flag_constant_matches_the_header():
    text = (BPF_SRC_DIR / "vip_consts.h").read_text()
    assert re.search(r"#define VIP_F_ETP_LOCAL_MISDIRECT \(1U << 0\)", text)
    assert VIP_F_ETP_LOCAL_MISDIRECT == 1 << 0


def test_generated_ctypes_layouts(dp):
    import ctypes
    assert ctypes.sizeof(dp.table("mx_vips").Key) == 24
    assert [f for f, _ in dp.table("mx_stats").sLeaf._fields_] == \
        ["rx_packets", "rx_bytes", "requests", "replies", "misdirected"]


# ---- pinned state: adopt on same version, rebuild on another ----------------------------------

def test_pinned_state_is_adopted_then_replaced_on_version_change():
    if not bpffs_mounted("/sys/fs/bpf"):
        pytest.fail("bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
    pin_dir = f"/sys/fs/bpf/metalxdp-test-{uuid.uuid4().hex[:8]}"
    try:
        with Dataplane(pin_dir) as a:
            assert not a.adopted
            a.set_interface(LO, OUR_MAC)
            a.announce(VIP4, LO)
            a.test_run(UDP4, LO)
            first_prog = a.prog_id
        assert sorted(os.listdir(pin_dir)) == sorted(
            ["mx_vips", "mx_stats", "mx_liveness", "mx_meta", "mx_global", "prog_xdp_vip", "prog_heartbeat"])
        with Dataplane(pin_dir) as b:                # same sources: everything kept
            assert b.adopted and b.prog_id == first_prog
            assert b.announced() == [(VIP4, LO, 0)]
            assert b.vip_counters(VIP4, LO)["rx_packets"] == 1
            assert b.test_run(arp_req(), LO).verdict == XDP_TX
        with Dataplane(pin_dir, cflags=["-DMAX_VIPS=1024"]) as c:   # another version
            assert not c.adopted and c.prog_id != first_prog
            assert c.announced() == []
            assert c.table("mx_vips").max_entries == 1024
    finally:
        Dataplane.purge(pin_dir)
    assert not os.path.exists(pin_dir)


def test_adopted_maps_are_the_pinned_ones_even_when_empty():
    """The adopter opens the pinned maps by path (no CAP_SYS_ADMIN needed) and writes to them,
    also when a map had no entries at adoption (an empty table is falsy: it once fell through to
    the throwaway map BCC compiled for the types, so nothing announced after a restart of an
    idle agent was answered)."""
    if not bpffs_mounted("/sys/fs/bpf"):
        pytest.fail("bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
    pin_dir = f"/sys/fs/bpf/metalxdp-test-{uuid.uuid4().hex[:8]}"
    try:
        with Dataplane(pin_dir) as a:
            a.set_interface(LO, OUR_MAC)
        with Dataplane(pin_dir) as b:              # adopts an empty VIP map
            assert b.adopted and b.announced() == []
            b.set_interface(LO, OUR_MAC)
            b.announce(VIP4, LO)
            assert b.test_run(arp_req(), LO).verdict == XDP_TX   # the pinned program sees it
        with Dataplane(pin_dir) as c:
            assert c.adopted and c.announced() == [(VIP4, LO, 0)]
            c.heartbeat()                          # the pinned heartbeat keeps the gate open
            assert c.test_run(arp_req(), LO).verdict == XDP_TX
    finally:
        Dataplane.purge(pin_dir)
    assert not os.path.exists(pin_dir)


# ---- the userspace baseline answers by the same rules ------------------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if all(len(a) == 2 for a in c.announce)],
                         ids=[c.description for c in CASES if all(len(a) == 2 for a in c.announce)])
def test_userspace_rules_match_xdp(case: Case):
    """agent.packets.answer_for (used by userspace_responder.py) decides like the program;
    its frames are padded to 60 bytes where XDP keeps the request's length."""
    announced = {ipaddress.ip_address(ip) for ip, ifindex in case.announce if ifindex == LO}
    reply = P.answer_for(case.frame, OUR_MAC, lambda ip: ip in announced)
    if case.verdict == XDP_PASS:
        assert reply is None
    else:
        assert reply is not None and reply[:len(case.output)] == case.output
