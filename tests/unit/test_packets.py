"""agent/packets.py: pure frame building and parsing, table-tested (no I/O, no BPF)."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from agent import packets as P

MAC_A = P.mac_bytes("02:00:5e:00:00:01")
MAC_B = P.mac_bytes("02:00:5e:00:00:02")


@pytest.mark.parametrize("data,expected", [
    (bytes.fromhex("0001f203f4f5f6f7"), 0xDDF2),       # RFC 1071 section 3 example
    (b"", 0),
    (b"\xff\xff", 0xFFFF),
    (b"\x01", 0x0100),                                    # odd length: padded with a zero byte
    (b"\xff\xff\x00\x01", 0x0001),                        # end-around carry
])
def test_ones_complement_sum(data, expected):
    assert P.ones_complement_sum(data) == expected


@pytest.mark.parametrize("ip,group,mac", [
    ("2001:db8::1:2:3", "ff02::1:ff02:3", "33:33:ff:02:00:03"),
    ("2001:db8:0:1::200", "ff02::1:ff00:200", "33:33:ff:00:02:00"),
    ("fe80::1", "ff02::1:ff00:1", "33:33:ff:00:00:01"),
])
def test_solicited_node_group_and_mac(ip, group, mac):
    assert P.solicited_node(ip) == ipaddress.IPv6Address(group)
    assert P.multicast_mac(P.solicited_node(ip)) == P.mac_bytes(mac)


@pytest.mark.parametrize("text,ok", [("02:00:5e:00:00:01", True), ("02:00:5e:00:00", False), ("zz:00:5e:00:00:01", False)])
def test_mac_parsing(text, ok):
    if ok:
        assert P.mac_str(P.mac_bytes(text)) == text
    else:
        with pytest.raises(ValueError):
            P.mac_bytes(text)


def test_arp_request_layout_and_padding():
    f = P.arp_request(MAC_A, "192.0.2.1", "192.0.2.200")
    assert len(f) == 60 and f[42:] == b"\0" * 18
    assert f[:6] == P.BROADCAST_MAC and f[6:12] == MAC_A and f[12:14] == b"\x08\x06"
    assert f[14:22] == bytes.fromhex("0001080006040001")
    assert len(P.arp_request(MAC_A, "192.0.2.1", "192.0.2.200", pad=False)) == 42


@pytest.mark.parametrize("sender,target,gratuitous", [
    ("192.0.2.1", "192.0.2.200", False),
    ("192.0.2.200", "192.0.2.200", True),
    ("0.0.0.0", "192.0.2.200", False),       # ARP probe
])
def test_arp_round_trip(sender, target, gratuitous):
    a = P.parse_arp(P.arp_request(MAC_A, sender, target))
    assert (a.op, a.sha, str(a.spa), a.tha, str(a.tpa)) == (P.ARP_REQUEST, MAC_A, sender, P.ZERO_MAC, target)
    assert a.is_gratuitous is gratuitous


def test_arp_reply_for_request():
    req = P.parse_arp(P.arp_request(MAC_A, "192.0.2.1", "192.0.2.200"))
    rep = P.parse_arp(P.arp_reply_for(req, MAC_B))
    assert (rep.eth_dst, rep.eth_src, rep.op) == (MAC_A, MAC_B, P.ARP_REPLY)
    assert (rep.sha, str(rep.spa), rep.tha, str(rep.tpa)) == (MAC_B, "192.0.2.200", MAC_A, "192.0.2.1")


@pytest.mark.parametrize("frame", [
    b"",
    b"\xff" * 41,                                                          # too short
    P.vlan_tagged(P.arp_request(MAC_A, "192.0.2.1", "192.0.2.2"), 7),      # tagged: not parsed
    P.ipv4_udp(MAC_A, MAC_B, "192.0.2.1", "192.0.2.2"),                    # not ARP
])
def test_parse_arp_rejects(frame):
    assert P.parse_arp(frame) is None


NS_ROWS = [
    # (description, kwargs, expected dst, expects SLLAO)
    ("address resolution", dict(src_ip="2001:db8::1"), "ff02::1:ff00:200", True),
    ("unicast NUD", dict(src_ip="2001:db8::1", dst_ip="2001:db8::200", dst_mac=MAC_B, sllao=False),
     "2001:db8::200", False),
    ("DAD", dict(src_ip="::"), "ff02::1:ff00:200", False),
]


@pytest.mark.parametrize("desc,kw,dst,sllao", NS_ROWS, ids=[r[0] for r in NS_ROWS])
def test_neighbor_solicit_round_trip(desc, kw, dst, sllao):
    f = P.neighbor_solicit(MAC_A, target="2001:db8::200", **kw)
    ns = P.parse_ndp(f)
    assert ns.type == P.ND_NEIGHBOR_SOLICIT and ns.checksum_ok and ns.hop_limit == 255
    assert ns.dst == ipaddress.IPv6Address(dst) and ns.target == ipaddress.IPv6Address("2001:db8::200")
    assert (ns.lladdr == MAC_A) if sllao else ns.lladdr is None
    assert len(f) == 14 + 40 + 24 + (8 if sllao else 0)


def test_neighbor_solicit_unicast_needs_a_mac():
    with pytest.raises(ValueError):
        P.neighbor_solicit(MAC_A, "2001:db8::1", "2001:db8::200", dst_ip="2001:db8::200")


def test_checksum_detects_corruption():
    f = bytearray(P.neighbor_solicit(MAC_A, "2001:db8::1", "2001:db8::200"))
    f[70] ^= 0x01
    assert not P.parse_ndp(bytes(f)).checksum_ok


@pytest.mark.parametrize("src,expected_dst,expected_mac,solicited", [
    ("2001:db8::1", "2001:db8::1", MAC_A, True),
    ("::", "ff02::1", P.mac_bytes("33:33:00:00:00:01"), False),
])
def test_neighbor_advert_for(src, expected_dst, expected_mac, solicited):
    ns = P.parse_ndp(P.neighbor_solicit(MAC_A, src, "2001:db8::200"))
    na = P.parse_ndp(P.neighbor_advert_for(ns, MAC_B))
    assert na.type == P.ND_NEIGHBOR_ADVERT and na.checksum_ok and na.hop_limit == 255
    assert (na.eth_dst, na.eth_src, na.lladdr) == (expected_mac, MAC_B, MAC_B)
    assert na.src == ipaddress.IPv6Address("2001:db8::200") and na.dst == ipaddress.IPv6Address(expected_dst)
    assert na.solicited is solicited and not na.override


def test_gratuitous_frames_ipv4():
    req, rep = P.gratuitous_frames("192.0.2.200", MAC_B)
    for f, op in ((req, P.ARP_REQUEST), (rep, P.ARP_REPLY)):
        a = P.parse_arp(f)
        assert a.eth_dst == P.BROADCAST_MAC and a.op == op and a.is_gratuitous
        assert str(a.spa) == "192.0.2.200" and a.sha == MAC_B


def test_gratuitous_frames_ipv6_unsolicited_na_with_override():
    (f,) = P.gratuitous_frames("2001:db8::200", MAC_B)
    na = P.parse_ndp(f)
    assert na.type == P.ND_NEIGHBOR_ADVERT and na.checksum_ok and na.override and not na.solicited
    assert na.dst == P.ALL_NODES and na.eth_dst == P.mac_bytes("33:33:00:00:00:01")
    assert na.src == na.target == ipaddress.IPv6Address("2001:db8::200") and na.lladdr == MAC_B


def test_udp_builders_have_valid_checksums():
    f4 = P.ipv4_udp(MAC_A, MAC_B, "192.0.2.1", "192.0.2.2")
    assert P.ones_complement_sum(f4[14:34]) == 0xFFFF
    f6 = P.ipv6_udp(MAC_A, MAC_B, "2001:db8::1", "2001:db8::2")
    plen = struct.unpack_from("!H", f6, 18)[0]
    pseudo = f6[22:54] + struct.pack("!IxxxB", plen, 17)
    assert P.ones_complement_sum(pseudo + f6[54:54 + plen]) == 0xFFFF


def test_vlan_tagged():
    f = P.vlan_tagged(P.arp_request(MAC_A, "192.0.2.1", "192.0.2.2"), 100)
    assert f[12:16] == b"\x81\x00\x00\x64" and f[16:18] == b"\x08\x06"


SLL = bytes([1, 1]) + MAC_A


@pytest.mark.parametrize("data, expected", [
    (b"", ()),
    (SLL, ((1, SLL),)),
    (SLL + bytes([14, 1]) + bytes(6), ((1, SLL), (14, bytes([14, 1]) + bytes(6)))),
    (bytes([14, 0]) + bytes(6), None),              # length 0 (RFC 4861 7.1.1)
    (bytes([1, 2]) + MAC_A, None),                  # runs past the message
    (SLL + bytes(4), None),                         # bytes left over
    (SLL + b"\x01", None),                          # an option header cut in half
])
def test_ndp_options(data, expected):
    assert P.ndp_options(data) == expected


@pytest.mark.parametrize("ip, martian", [("0.0.0.0", False), ("0.1.2.3", True), ("127.0.0.1", True),
                                         ("224.0.0.5", True), ("239.255.255.255", True),
                                         ("255.255.255.255", True), ("240.0.0.1", False),
                                         ("192.0.2.1", False), ("198.18.0.1", False)])
def test_martian_arp_sender(ip, martian):
    assert P.martian_arp_sender(ipaddress.IPv4Address(ip)) is martian
