"""A reference model of the L2 responder, written from the RFCs and docs/xdp.md, for the fuzz test
(tests/unit/test_xdp_fuzz.py): what must happen to one Ethernet frame that arrives on an
interface, given the VIPs announced.

It is deliberately independent of bpf/xdp_vip.c and of agent/packets.py: it parses with
``int.from_bytes`` and slices, walks NDP options the way RFC 4861 4.6 describes them (type,
length in 8-byte units, until the message ends) rather than the program's way, builds replies
field by field from RFC 826 and RFC 4861 4.4 / 7.2.4, and sums checksums with plain integers.
Where the RFCs leave a choice, the choice is the one docs/xdp.md documents (cited as "docs").

Rules, in the order a reader of the RFCs would check them:

ARP (RFC 826, RFC 5227)
  - shorter than Ethernet + 28 bytes, or not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen
    4): invalid
  - sender hardware address a group address (its I/G bit, IEEE 802): invalid (docs: the reply
    would go to a group)
  - sender IP martian (docs, after Linux): 0.0.0.0/8 except 0.0.0.0 itself (RFC 5227 probe),
    127.0.0.0/8, 224.0.0.0/4, 255.255.255.255: invalid
  - not a request (op != 1), or gratuitous (sender IP == target IP): no answer
  - target not a VIP of the ingress interface: no answer
  - answered when sent to broadcast (unless the VIP is handing off) or to our MAC; the reply is
    RFC 826's: op 2, sender = (our MAC, VIP), target = the requester's sender fields, to the
    requester's hardware address, same frame length (bytes after the ARP body untouched).
IPv6 neighbour solicitation (RFC 4861 7.1.1, RFC 4291, RFC 2464)
  - the IPv6 header and the 24-byte NS body present; hop limit 255; code 0; ICMP length >= 24
    and inside the frame; target not multicast; source not multicast (RFC 4291 2.7), not ::1
    (2.5.3) and not IPv4-mapped (docs, after Linux); DAD (source ::) only to the target's
    solicited-node group; Ethernet source an individual address; every option of length > 0
    and inside the message, the options filling it; the first source link-layer option of
    length 1 (RFC 2464 6), none at all in a DAD probe; at most 256 bytes of options (docs);
    the ICMPv6 checksum right (RFC 4443 2.3): otherwise invalid
  - destination neither the target's solicited-node group nor the target: no answer
  - answered when the VIP is on the ingress interface and the frame went to a group (unless
    handing off) or to our MAC; the NA (4.4, 7.2.4): from the VIP, S=1 to the solicitation's
    source and Ethernet source, or for DAD S=0 to ff02::1 / 33:33:00:00:00:01; R=0, O=0
    (docs); a target link-layer option with our MAC; hop limit 255; 86 bytes.
Traffic (docs): IPv4/IPv6 packets whose destination is a VIP of the ingress interface are
counted (rx_packets, rx_bytes = frame length, misdirected for flagged VIPs), except neighbour
discovery (ICMPv6 types 133-137). 802.1Q/802.1ad frames are never answered nor counted.
Nothing is ever changed in a frame that is not answered.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

TX, PASS = "XDP_TX", "XDP_PASS"

ETH_ARP, ETH_IPV4, ETH_IPV6 = 0x0806, 0x0800, 0x86DD
ETH_VLAN_TAGS = (0x8100, 0x88A8)
ICMPV6 = 58
NS, NA = 135, 136
ND_TYPES = range(133, 138)
OPT_SLLAO, OPT_TLLAO = 1, 2
MAX_OPTION_BYTES = 256
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_NODES_MAC = bytes.fromhex("333300000001")
BROADCAST = b"\xff" * 6


@dataclass(frozen=True)
class Vip:
    handoff: bool = False
    misdirect: bool = False


@dataclass
class Outcome:
    verdict: str
    frame: bytes
    vip: Optional[tuple] = None                      # (addr bytes, ifindex) whose counters change
    counters: dict = field(default_factory=dict)     # vip_stats field -> increment
    global_counter: Optional[str] = None             # mx_global name incremented, if any
    why: str = ""


def is_group_mac(mac: bytes) -> bool:
    return bool(mac[0] & 1)


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_sum(src: bytes, dst: bytes, msg: bytes) -> int:
    """RFC 8200 8.1 pseudo-header (source, destination, upper-layer length, next header) plus
    the message, one's-complement summed (RFC 1071)."""
    return ones_complement_sum(src + dst + len(msg).to_bytes(4, "big") + bytes([0, 0, 0, ICMPV6]) + msg)


def solicited_node_of(addr: bytes) -> bytes:
    """RFC 4291 2.7.1: ff02::1:ff00:0/104 with the low 24 bits of the address."""
    return bytes.fromhex("ff0200000000000000000001ff") + addr[13:]


def martian_ipv4_sender(a: bytes) -> bool:
    ip = ipaddress.IPv4Address(a)
    if ip == ipaddress.IPv4Address("0.0.0.0"):
        return False                                  # RFC 5227 probe
    return (ip in ipaddress.IPv4Network("0.0.0.0/8") or ip.is_loopback or ip.is_multicast
            or ip == ipaddress.IPv4Address("255.255.255.255"))


def invalid_ipv6_source(a: bytes) -> bool:
    ip = ipaddress.IPv6Address(a)
    return ip.is_multicast or ip == ipaddress.IPv6Address("::1") or ip.ipv4_mapped is not None


class Model:
    def __init__(self, our_mac: bytes, vips: dict, ingress_ifindex: int, alive: bool = True):
        """vips: {(address bytes (4 or 16), ifindex): Vip}."""
        self.our_mac = our_mac
        self.vips = vips
        self.ifindex = ingress_ifindex
        self.alive = alive

    # ---- entry ----------------------------------------------------------------------------
    def outcome(self, f: bytes) -> Outcome:
        ethertype = int.from_bytes(f[12:14], "big")
        if ethertype in ETH_VLAN_TAGS:
            return Outcome(PASS, f, global_counter="pass_vlan", why="VLAN tag")
        if ethertype == ETH_ARP:
            return self._arp(f)
        if ethertype == ETH_IPV6:
            return self._ipv6(f)
        if ethertype == ETH_IPV4:
            return self._ipv4(f)
        return Outcome(PASS, f, why="other EtherType or 802.3 length")

    def _vip(self, addr: bytes) -> Optional[Vip]:
        return self.vips.get((addr, self.ifindex))

    @staticmethod
    def _invalid(f: bytes, why: str) -> Outcome:
        return Outcome(PASS, f, global_counter="pass_malformed", why=why)

    def _answer(self, f: bytes, addr: bytes, to_group: bool, reply) -> Outcome:
        """The request is valid and for a VIP on this interface: decide whether we answer."""
        vip = self._vip(addr)
        key = (addr, self.ifindex)
        dst = f[0:6]
        if not (dst == self.our_mac or (to_group and not vip.handoff)):
            return Outcome(PASS, f, key, {"requests": 1}, "not_for_us", "another host's MAC, or handoff")
        if not self.alive:
            return Outcome(PASS, f, key, {"requests": 1}, "gated", "liveness gate")
        return Outcome(TX, reply(), key, {"requests": 1, "replies": 1}, why="answered")

    def _traffic(self, f: bytes, dst: bytes) -> Outcome:
        vip = self._vip(dst)
        if vip is None:
            return Outcome(PASS, f, why="traffic, not to a VIP here")
        c = {"rx_packets": 1, "rx_bytes": len(f)}
        if vip.misdirect:
            c["misdirected"] = 1
        return Outcome(PASS, f, (dst, self.ifindex), c, why="traffic to a VIP")

    # ---- ARP ------------------------------------------------------------------------------
    def _arp(self, f: bytes) -> Outcome:
        if len(f) < 14 + 28:
            return self._invalid(f, "ARP truncated")
        body = f[14:42]
        htype, ptype = int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")
        hlen, plen, op = body[4], body[5], int.from_bytes(body[6:8], "big")
        sha, spa, tpa = body[8:14], body[14:18], body[24:28]
        if (htype, ptype, hlen, plen) != (1, ETH_IPV4, 6, 4):
            return self._invalid(f, "ARP not Ethernet/IPv4")
        if is_group_mac(sha):
            return self._invalid(f, "ARP sender hardware address is a group")
        if martian_ipv4_sender(spa):
            return self._invalid(f, "ARP sender IP martian")
        if op != 1:
            return Outcome(PASS, f, why="ARP not a request")
        if spa == tpa:
            return Outcome(PASS, f, why="gratuitous ARP")
        if self._vip(tpa) is None:
            return Outcome(PASS, f, why="ARP target not a VIP here")

        def reply() -> bytes:
            eth = sha + self.our_mac + f[12:14]
            arp = body[0:6] + (2).to_bytes(2, "big") + self.our_mac + tpa + sha + spa
            return eth + arp + f[42:]
        return self._answer(f, tpa, f[0:6] == BROADCAST, reply)

    # ---- IPv4 / IPv6 ----------------------------------------------------------------------
    def _ipv4(self, f: bytes) -> Outcome:
        if len(f) < 14 + 20:
            return self._invalid(f, "IPv4 truncated")
        if f[14] >> 4 != 4:
            return self._invalid(f, "IPv4 version")
        return self._traffic(f, f[30:34])

    def _ipv6(self, f: bytes) -> Outcome:
        if len(f) < 14 + 40:
            return self._invalid(f, "IPv6 truncated")
        if f[14] >> 4 != 6:
            return self._invalid(f, "IPv6 version")
        if f[20] == ICMPV6 and len(f) > 54:
            if f[54] == NS:
                return self._ns(f)
            if f[54] in ND_TYPES:
                return Outcome(PASS, f, why="neighbour discovery other than NS")
        return self._traffic(f, f[38:54])

    def _ns(self, f: bytes) -> Outcome:
        if len(f) < 14 + 40 + 24:
            return self._invalid(f, "NS truncated")
        icmp_len = int.from_bytes(f[18:20], "big")
        hop_limit, src, dst = f[21], f[22:38], f[38:54]
        msg = f[54:54 + icmp_len]
        code, target = f[55], f[62:78]
        dad = src == bytes(16)
        if hop_limit != 255:
            return self._invalid(f, "NS hop limit")
        if code != 0:
            return self._invalid(f, "NS code")
        if icmp_len < 24:
            return self._invalid(f, "NS ICMP length < 24")
        if 54 + icmp_len > len(f):
            return self._invalid(f, "NS payload past the frame")
        if target[0] == 0xFF:
            return self._invalid(f, "NS target multicast")
        if invalid_ipv6_source(src):
            return self._invalid(f, "NS source multicast, ::1 or IPv4-mapped")
        if dad and dst != solicited_node_of(target):
            return self._invalid(f, "DAD not to the solicited-node group")
        if is_group_mac(f[6:12]):
            return self._invalid(f, "NS Ethernet source is a group")
        problem = self._options_problem(msg[24:], dad)
        if problem:
            return self._invalid(f, problem)
        if icmpv6_sum(src, dst, msg) != 0xFFFF:
            return self._invalid(f, "NS checksum")
        if not dad and dst not in (solicited_node_of(target), target):
            return Outcome(PASS, f, why="NS to another destination")
        if self._vip(target) is None:
            return Outcome(PASS, f, why="NS target not a VIP here")

        def reply() -> bytes:
            na_dst, mac_dst, flags = (ALL_NODES, ALL_NODES_MAC, 0) if dad else (src, f[6:12], 0x40000000)
            body = flags.to_bytes(4, "big") + target + bytes([OPT_TLLAO, 1]) + self.our_mac
            csum = 0xFFFF - icmpv6_sum(target, na_dst, bytes([NA, 0, 0, 0]) + body)
            icmp = bytes([NA, 0]) + csum.to_bytes(2, "big") + body
            ip6 = (0x60000000).to_bytes(4, "big") + len(icmp).to_bytes(2, "big") + bytes([ICMPV6, 255]) + \
                target + na_dst
            return mac_dst + self.our_mac + ETH_IPV6.to_bytes(2, "big") + ip6 + icmp
        return self._answer(f, target, is_group_mac(f[0:6]), reply)

    @staticmethod
    def _options_problem(opts: bytes, dad: bool) -> str:
        """RFC 4861 4.6 / 7.1.1: '' when the options are acceptable."""
        if len(opts) > MAX_OPTION_BYTES:
            return "NS options longer than the program walks"
        seen_sllao = False
        pos = 0
        while pos < len(opts):
            if len(opts) - pos < 2:
                return "NS option header cut by the end of the message"
            otype, units = opts[pos], opts[pos + 1]
            if units == 0:
                return "NS option of length 0"
            if pos + 8 * units > len(opts):
                return "NS option runs past the message"
            if otype == OPT_SLLAO:
                if dad:
                    return "DAD with a source link-layer option"
                if not seen_sllao and units != 1:
                    return "NS source link-layer option of length != 1"
                seen_sllao = True
            pos += 8 * units
        return ""
