"""Pure building and parsing of the L2 frames metalxdp sends and answers: ARP (RFC 826),
IPv6 neighbour solicitation/advertisement (RFC 4861) with the ICMPv6 checksum, and the
gratuitous frames sent on takeover. No I/O here: ``garp.py`` and ``userspace_responder.py``
send what these functions build, and the XDP tests compare the program's output with them.

MACs are 6-byte ``bytes``; IP addresses are ``ipaddress`` objects or strings.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Callable, Optional, Union

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
AnyIP = Union[str, IPv4, IPv6]

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ARP_REQUEST = 1
ARP_REPLY = 2
ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
ALL_NODES = IPv6("ff02::1")
ETH_MIN_FRAME = 60  # without FCS; shorter frames are padded with zeros on the wire


def mac_bytes(mac: Union[str, bytes]) -> bytes:
    """``"02:00:00:00:00:01"`` or 6 bytes -> 6 bytes."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"a MAC has 6 bytes, not {len(mac)}")
        return bytes(mac)
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes, pad: bool = True) -> bytes:
    frame = dst + src + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < ETH_MIN_FRAME:
        frame += b"\x00" * (ETH_MIN_FRAME - len(frame))
    return frame


# ---- ARP -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ARP:
    """An Ethernet/IPv4 ARP message (with the Ethernet addresses it came in)."""
    eth_dst: bytes
    eth_src: bytes
    op: int
    sha: bytes
    spa: IPv4
    tha: bytes
    tpa: IPv4

    @property
    def is_gratuitous(self) -> bool:
        return self.spa == self.tpa


def arp(op: int, eth_dst: bytes, eth_src: bytes, sha: bytes, spa: AnyIP, tha: bytes, tpa: AnyIP,
        pad: bool = True) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, sha, IPv4(spa).packed, tha,
                       IPv4(tpa).packed)
    return ethernet(eth_dst, eth_src, ETH_P_ARP, body, pad)


def arp_request(src_mac: bytes, src_ip: AnyIP, target_ip: AnyIP, dst_mac: bytes = BROADCAST_MAC,
                pad: bool = True) -> bytes:
    """Who has target_ip? Tell src_ip (broadcast unless dst_mac is given)."""
    return arp(ARP_REQUEST, dst_mac, src_mac, src_mac, src_ip, ZERO_MAC, target_ip, pad)


def arp_reply_for(request: ARP, our_mac: bytes) -> bytes:
    """The reply a responder sends to ``request`` (what the kernel and MetalLB send): to the
    requester's hardware address, target fields = the requester's sender fields."""
    return arp(ARP_REPLY, request.sha, our_mac, our_mac, request.tpa, request.sha, request.spa)


def parse_arp(frame: bytes) -> Optional[ARP]:
    """An Ethernet/IPv4 ARP message, or None for anything else (including VLAN-tagged)."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from("!HHBBH6s4s6s4s", frame, 14)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    return ARP(frame[0:6], frame[6:12], op, sha, IPv4(spa), tha, IPv4(tpa))


# ---- IPv6 / NDP ------------------------------------------------------------------------

def solicited_node(ip: AnyIP) -> IPv6:
    """ff02::1:ffXX:XXXX for the low 24 bits of ip (RFC 4291 2.7.1)."""
    low = IPv6(ip).packed[13:]
    return IPv6(bytes.fromhex("ff0200000000000000000001ff") + low)


def multicast_mac(ip: AnyIP) -> bytes:
    """33:33 + the low 32 bits of an IPv6 multicast address (RFC 2464 7)."""
    return b"\x33\x33" + IPv6(ip).packed[12:]


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def icmpv6_checksum(src: AnyIP, dst: AnyIP, icmp: bytes) -> int:
    """RFC 4443 2.3: over the pseudo-header (RFC 8200 8.1) and the message with its checksum
    field zeroed (the caller passes it zeroed, or verifies that the result over the message
    with its checksum in place is 0)."""
    pseudo = IPv6(src).packed + IPv6(dst).packed + struct.pack("!IxxxB", len(icmp), ICMPV6)
    return (~ones_complement_sum(pseudo + icmp)) & 0xFFFF


def ipv6_packet(src: AnyIP, dst: AnyIP, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit) + \
        IPv6(src).packed + IPv6(dst).packed + payload


def _icmpv6(src: AnyIP, dst: AnyIP, type_: int, body: bytes) -> bytes:
    msg = struct.pack("!BBH", type_, 0, 0) + body
    csum = icmpv6_checksum(src, dst, msg)
    return msg[:2] + struct.pack("!H", csum) + msg[4:]


def neighbor_solicit(src_mac: bytes, src_ip: AnyIP, target: AnyIP, *, dst_ip: Optional[AnyIP] = None,
                     dst_mac: Optional[bytes] = None, sllao: Optional[bool] = None,
                     hop_limit: int = 255) -> bytes:
    """An NS for ``target``. Defaults: to the target's solicited-node group (address
    resolution); ``dst_ip=target`` makes a unicast NUD probe; ``src_ip="::"`` a DAD probe
    (no source link-layer option, as RFC 4861 7.2.2 requires)."""
    src_ip = IPv6(src_ip)
    dst_ip = IPv6(dst_ip) if dst_ip is not None else solicited_node(target)
    if dst_mac is None:
        dst_mac = multicast_mac(dst_ip) if dst_ip.is_multicast else None
        if dst_mac is None:
            raise ValueError("a unicast NS needs dst_mac")
    if sllao is None:
        sllao = not src_ip.is_unspecified
    body = struct.pack("!I", 0) + IPv6(target).packed
    if sllao:
        body += struct.pack("!BB6s", ND_OPT_SOURCE_LLADDR, 1, src_mac)
    icmp = _icmpv6(src_ip, dst_ip, ND_NEIGHBOR_SOLICIT, body)
    return ethernet(dst_mac, src_mac, ETH_P_IPV6, ipv6_packet(src_ip, dst_ip, ICMPV6, icmp, hop_limit))


def neighbor_advert(src_mac: bytes, dst_mac: bytes, src_ip: AnyIP, dst_ip: AnyIP, target: AnyIP,
                    flags: int) -> bytes:
    """An NA with a target link-layer address option (our MAC), hop limit 255."""
    body = struct.pack("!I", flags) + IPv6(target).packed + \
        struct.pack("!BB6s", ND_OPT_TARGET_LLADDR, 1, src_mac)
    icmp = _icmpv6(src_ip, dst_ip, ND_NEIGHBOR_ADVERT, body)
    return ethernet(dst_mac, src_mac, ETH_P_IPV6, ipv6_packet(src_ip, dst_ip, ICMPV6, icmp, 255))


@dataclass(frozen=True)
class NDP:
    """A neighbour solicitation or advertisement, with its Ethernet and IPv6 envelope."""
    eth_dst: bytes
    eth_src: bytes
    src: IPv6
    dst: IPv6
    hop_limit: int
    type: int
    code: int
    checksum_ok: bool
    flags: int          # NA: R/S/O bits (host order); NS: reserved word
    target: IPv6
    lladdr: Optional[bytes]  # the first source (NS) or target (NA) link-layer address option, if 8 bytes
    options: Optional[tuple] = ()  # ((type, option bytes), ...); None: malformed (see ndp_options)

    @property
    def solicited(self) -> bool:
        return bool(self.flags & NA_SOLICITED)

    @property
    def override(self) -> bool:
        return bool(self.flags & NA_OVERRIDE)

    def has_option(self, otype: int) -> bool:
        return any(t == otype for t, _ in self.options or ())


def ndp_options(data: bytes) -> Optional[tuple]:
    """The options after an NS/NA body (RFC 4861 4.6) as ((type, bytes), ...), or None when one
    has length 0 or runs past the message, or bytes are left over (7.1.1; Linux drops such a
    message)."""
    out, off = [], 0
    while off < len(data):
        if len(data) - off < 2 or data[off + 1] == 0 or off + data[off + 1] * 8 > len(data):
            return None
        out.append((data[off], data[off:off + data[off + 1] * 8]))
        off += data[off + 1] * 8
    return tuple(out)


def parse_ndp(frame: bytes) -> Optional[NDP]:
    """An NS or NA (no extension headers), or None. Checks the ICMPv6 checksum."""
    if len(frame) < 14 + 40 + 24 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return None
    vtf, plen, nh, hlim = struct.unpack_from("!IHBB", frame, 14)
    if vtf >> 28 != 6 or nh != ICMPV6 or 54 + plen > len(frame) or plen < 24:
        return None
    src, dst = IPv6(frame[22:38]), IPv6(frame[38:54])
    icmp = frame[54:54 + plen]
    type_, code = icmp[0], icmp[1]
    if type_ not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
        return None
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", plen, ICMPV6)
    checksum_ok = ones_complement_sum(pseudo + icmp) == 0xFFFF
    flags = struct.unpack_from("!I", icmp, 4)[0]
    options = ndp_options(icmp[24:])
    wanted = ND_OPT_SOURCE_LLADDR if type_ == ND_NEIGHBOR_SOLICIT else ND_OPT_TARGET_LLADDR
    first = next((raw for t, raw in options or () if t == wanted), None)
    lladdr = first[2:8] if first is not None and len(first) == 8 else None
    return NDP(frame[0:6], frame[6:12], src, dst, hlim, type_, code, checksum_ok, flags,
               IPv6(icmp[8:24]), lladdr, options)


def neighbor_advert_for(ns: NDP, our_mac: bytes) -> bytes:
    """The NA a MetalLB-like responder sends to ``ns``: solicited (S=1, O=0) to the NS source
    and its MAC, or, for a DAD probe from ``::``, S=0 to all-nodes (RFC 4861 7.2.4)."""
    if ns.src.is_unspecified:
        return neighbor_advert(our_mac, multicast_mac(ALL_NODES), ns.target, ALL_NODES, ns.target, 0)
    return neighbor_advert(our_mac, ns.eth_src, ns.target, ns.src, ns.target, NA_SOLICITED)


# ---- gratuitous announcements ----------------------------------------------------------

def gratuitous_frames(ip: AnyIP, mac: bytes) -> list[bytes]:
    """What MetalLB sends per interface on takeover: IPv4 -> an ARP request and an ARP reply,
    both broadcast with sender = target = the VIP; IPv6 -> one unsolicited NA (Override=1)
    from the VIP to all-nodes."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return [arp(ARP_REQUEST, BROADCAST_MAC, mac, mac, addr, ZERO_MAC, addr),
                arp(ARP_REPLY, BROADCAST_MAC, mac, mac, addr, BROADCAST_MAC, addr)]
    return [neighbor_advert(mac, multicast_mac(ALL_NODES), addr, ALL_NODES, addr, NA_OVERRIDE)]


# ---- small helpers for tests and benchmarks --------------------------------------------

def ipv4_udp(src_mac: bytes, dst_mac: bytes, src: AnyIP, dst: AnyIP, payload: bytes = b"x" * 18,
             sport: int = 40000, dport: int = 80) -> bytes:
    """An IPv4/UDP frame (header checksum filled, UDP checksum 0 = none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      IPv4(src).packed, IPv4(dst).packed)
    hdr = hdr[:10] + struct.pack("!H", (~ones_complement_sum(hdr)) & 0xFFFF) + hdr[12:]
    return ethernet(dst_mac, src_mac, ETH_P_IP, hdr + udp)


def ipv6_udp(src_mac: bytes, dst_mac: bytes, src: AnyIP, dst: AnyIP, payload: bytes = b"x" * 18,
             sport: int = 40000, dport: int = 80) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    pseudo = IPv6(src).packed + IPv6(dst).packed + struct.pack("!IxxxB", len(udp), 17)
    csum = (~ones_complement_sum(pseudo + udp)) & 0xFFFF or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return ethernet(dst_mac, src_mac, ETH_P_IPV6, ipv6_packet(src, dst, 17, udp))


def vlan_tagged(frame: bytes, vid: int, tpid: int = ETH_P_8021Q) -> bytes:
    """Insert an 802.1Q (or 802.1ad) tag after the MAC addresses."""
    return frame[:12] + struct.pack("!HH", tpid, vid & 0x0FFF) + frame[12:]


# ---- the answering rules, as a pure function ---------------------------------------------

NS_MAX_OPTION_BYTES = 256  # the XDP program's NDP_MAX_OPT_BYTES: a longer NS is not answered


def martian_arp_sender(ip: IPv4) -> bool:
    """A sender IP Linux's ARP treats as martian: 0/8 (but the RFC 5227 probe's 0.0.0.0),
    127/8, 224/4, 255.255.255.255."""
    return ip != IPv4("0.0.0.0") and (ip in ipaddress.IPv4Network("0.0.0.0/8") or ip.is_loopback or
                                      ip.is_multicast or ip == IPv4("255.255.255.255"))


def ns_is_valid(n: NDP, frame: bytes) -> bool:
    """RFC 4861 7.1.1 (and RFC 4291's source rules, as Linux applies them) for an NS."""
    src = n.src
    if (n.hop_limit != 255 or n.code != 0 or not n.checksum_ok or n.target.is_multicast or
            src.is_multicast or src == IPv6("::1") or src.ipv4_mapped is not None or n.eth_src[0] & 1):
        return False
    plen = struct.unpack_from("!H", frame, 18)[0]
    if n.options is None or plen - 24 > NS_MAX_OPTION_BYTES:
        return False
    sllaos = [raw for t, raw in n.options if t == ND_OPT_SOURCE_LLADDR]
    if src.is_unspecified:
        return not sllaos and n.dst == solicited_node(n.target)
    return not sllaos or len(sllaos[0]) == 8


def answer_for(frame: bytes, our_mac: bytes, is_vip: Callable[[Union[IPv4, IPv6]], bool]) -> Optional[bytes]:
    """The reply bpf/xdp_vip.c sends for ``frame`` received on an interface with ``our_mac``
    (None: no answer), for responders outside XDP (the userspace baseline). Same rules
    (docs/xdp.md): valid ARP requests only (no multicast sender MAC, no martian sender), never
    gratuitous ones, to broadcast or our MAC; valid NS (RFC 4861 7.1.1: hop limit 255, code 0,
    checksum, options, no SLLAO in DAD; no multicast, ::1 or IPv4-mapped source) to the target's
    solicited-node group or to the target itself (unicast NUD), DAD probes answered to
    all-nodes."""
    a = parse_arp(frame)
    if a is not None:
        if (a.op != ARP_REQUEST or a.is_gratuitous or a.sha[0] & 1 or martian_arp_sender(a.spa) or
                (a.eth_dst != BROADCAST_MAC and a.eth_dst != our_mac) or not is_vip(a.tpa)):
            return None
        return arp_reply_for(a, our_mac)
    n = parse_ndp(frame)
    if n is None or n.type != ND_NEIGHBOR_SOLICIT or not ns_is_valid(n, frame):
        return None
    if not n.src.is_unspecified and n.dst != solicited_node(n.target) and n.dst != n.target:
        return None
    if (not n.eth_dst[0] & 1 and n.eth_dst != our_mac) or not is_vip(n.target):
        return None
    return neighbor_advert_for(n, our_mac)
