"""BFD's UDP sockets: RFC 5881 single hop (port 3784) and RFC 5883 multi hop (port 4784), IPv4
and IPv6. Sockets belong to the network namespace of the thread that creates them, which is how
the tests put them inside a node namespace; the agent runs in the node namespace already.

Receive side: one ``Listener`` per (family, port), bound to the wildcard address, reporting for
every datagram the source, the destination (IP_PKTINFO / IPV6_RECVPKTINFO) and the TTL or hop
limit it arrived with (IP_RECVTTL / IPV6_RECVHOPLIMIT ancillary data). The GTSM checks use it:
single hop accepts only TTL 255 (RFC 5881 §5), multi hop accepts TTL >= the profile's
minimumTtl (RFC 5883 §5 leaves the bound to configuration).

Send side: one ``Sender`` per session, bound to the session's local address and a source port
from 49152-65535 (RFC 5881 §4: the same port for the whole session), TTL / hop limit 255,
DSCP CS6 (network control), like FRR and BIRD.
"""
from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass
from typing import Optional

SINGLE_HOP_PORT = 3784
MULTI_HOP_PORT = 4784
SOURCE_PORTS = range(49152, 65536)

# Linux constants Python 3.11's socket module lacks (include/uapi/linux/in.h)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
TOS_CS6 = 0xC0


class TransportError(OSError):
    """A BFD socket could not be created; the message says which and why."""


@dataclass(frozen=True)
class Datagram:
    data: bytes
    src: str          # peer address (no scope)
    dst: str          # our address the packet was sent to ("" if unknown)
    ttl: int          # TTL / hop limit on arrival (-1 if the kernel did not say)
    port: int         # the listener's port: 3784 single hop, 4784 multi hop


def family_of(ip: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(ip.split("%")[0]).version == 6 else socket.AF_INET


class Listener:
    """A wildcard UDP socket on ``port`` for one address family, with TTL and destination
    reported per datagram."""

    def __init__(self, family: int, port: int):
        self.family, self.port = family, port
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                s.bind(("::", port))
            else:
                s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
                s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                s.bind(("0.0.0.0", port))
            s.setblocking(False)
        except OSError as e:
            s.close()
            fam = "IPv6" if family == socket.AF_INET6 else "IPv4"
            hint = " (is another BFD daemon, e.g. FRR bfdd, running here?)" \
                if e.errno == errno.EADDRINUSE else ""
            raise TransportError(e.errno, f"cannot listen for BFD on {fam} UDP port {port}: "
                                 f"{e.strerror}{hint}") from e
        self.sock = s

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> Optional[Datagram]:
        """One datagram, or None when nothing is queued."""
        try:
            data, anc, _flags, addr = self.sock.recvmsg(512, 256)
        except (BlockingIOError, InterruptedError):
            return None
        ttl, dst = -1, ""
        for level, typ, val in anc:
            if level == socket.IPPROTO_IP and typ == socket.IP_TTL:
                ttl = struct.unpack("i", val[:4])[0]
            elif level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(val) >= 12:
                dst = socket.inet_ntop(socket.AF_INET, val[8:12])     # in_pktinfo.ipi_addr
            elif level == socket.IPPROTO_IPV6 and typ == socket.IPV6_HOPLIMIT:
                ttl = struct.unpack("i", val[:4])[0]
            elif level == socket.IPPROTO_IPV6 and typ == socket.IPV6_PKTINFO and len(val) >= 16:
                dst = socket.inet_ntop(socket.AF_INET6, val[:16])     # in6_pktinfo.ipi6_addr
        src = addr[0].split("%")[0]
        return Datagram(data, src, dst, ttl, self.port)

    def close(self) -> None:
        self.sock.close()


def ttl_ok(multihop: bool, ttl: int, minimum_ttl: int) -> bool:
    """GTSM: single hop wants exactly 255; multi hop at least ``minimum_ttl``."""
    return ttl >= minimum_ttl if multihop else ttl == 255


def _sockaddr(ip: str, port: int) -> tuple:
    """(host, port) or (host, port, flowinfo, scope) for an IPv6 link-local 'fe80::1%eth0'."""
    if family_of(ip) == socket.AF_INET6:
        return socket.getaddrinfo(ip, port, socket.AF_INET6, socket.SOCK_DGRAM)[0][4]
    return (ip, port)


def source_address_for(peer: str) -> str:
    """The local address the kernel would use to reach ``peer`` (no packet is sent)."""
    with socket.socket(family_of(peer), socket.SOCK_DGRAM) as s:
        s.connect(_sockaddr(peer, SINGLE_HOP_PORT))
        return s.getsockname()[0].split("%")[0]


class Sender:
    """The session's sending socket: bound to ``local`` and one port from 49152-65535."""

    def __init__(self, local: str, peer: str, multihop: bool, rng: Optional[random.Random] = None):
        self.peer, self.local = peer, local
        self.dest = _sockaddr(peer, MULTI_HOP_PORT if multihop else SINGLE_HOP_PORT)
        fam = family_of(peer)
        if family_of(local) != fam:
            raise TransportError(errno.EINVAL, f"local address {local} and peer {peer} differ in family")
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_CS6)
            else:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_CS6)
            rng = rng or random.Random()
            for _ in range(64):                  # bounded: the range has 16384 ports
                port = rng.choice(SOURCE_PORTS)
                try:
                    s.bind(_sockaddr(local, port))
                    break
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        continue
                    raise
            else:
                raise TransportError(errno.EADDRINUSE, "no free BFD source port in 49152-65535")
            s.setblocking(False)
        except OSError as e:
            s.close()
            if isinstance(e, TransportError):
                raise
            raise TransportError(e.errno, f"cannot create the BFD socket {local} -> {peer}: "
                                 f"{e.strerror}") from e
        self.sock = s
        self.port = s.getsockname()[1]

    def send(self, data: bytes) -> bool:
        """Send one packet; False when the kernel refused it (no route, link down, full queue):
        BFD's answer to a lost packet is the peer's detection timer, not a retry."""
        try:
            self.sock.sendto(data, self.dest)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


# ---- echo (RFC 5880 §6.4, RFC 5881 §4) --------------------------------------------------------
# An echo packet is addressed to ourselves (source = destination = our address, UDP 3785 -> 3785,
# TTL 255) and sent to the peer's MAC, so the peer's forwarding plane sends it straight back.
# A UDP socket cannot do either half: the kernel would deliver such a packet locally instead of
# sending it, and drops the returning one as a martian (a local source address arriving from
# outside, unless accept_local is set). So echo uses one AF_PACKET socket (cooked, ETH_P_IP)
# with a classic BPF filter that wakes us only for unfragmented UDP to port 3785, IPv4 only:
# MetalLB refuses echo with IPv6, and FRR loops IPv4 echo in its forwarding plane.
ECHO_PORT = 3785
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
ECHO_TTL_RETURNED = 254          # sent with 255, forwarded once by the peer

# cBPF on the IPv4 header (cooked socket: offset 0 is the network header):
#   0 ldb [9]; 1 jeq #17 ? 2 : 8; 2 ldh [6]; 3 jset #0x1fff ? 8 : 4;
#   4 ldxb 4*([0]&0xf); 5 ldh [x+2]; 6 jeq #3785 ? 7 : 8; 7 ret #256 (accept); 8 ret #0 (drop)
_ECHO_FILTER = [
    (0x30, 0, 0, 9), (0x15, 0, 6, 17), (0x28, 0, 0, 6), (0x45, 4, 0, 0x1FFF),
    (0xB1, 0, 0, 0), (0x48, 0, 0, 2), (0x15, 0, 1, ECHO_PORT), (0x06, 0, 0, 256),
    (0x06, 0, 0, 0),
]


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    from ..packets import ones_complement_sum
    return ~ones_complement_sum(data) & 0xFFFF


def echo_datagram(local: str, payload: bytes, ident: int = 0) -> bytes:
    """The IPv4 + UDP packet of one echo: ``local`` -> ``local``, 3785 -> 3785, TTL 255, CS6."""
    src = socket.inet_aton(local)
    ulen = 8 + len(payload)
    pseudo = src + src + struct.pack("!BBH", 0, socket.IPPROTO_UDP, ulen)
    udp = struct.pack("!HHHH", ECHO_PORT, ECHO_PORT, ulen, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, TOS_CS6, 20 + ulen, ident & 0xFFFF, 0, 255,
                      socket.IPPROTO_UDP, 0, src, src)
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return hdr + udp


@dataclass(frozen=True)
class EchoArrival:
    src: str
    dst: str
    ttl: int
    payload: bytes
    ifindex: int


def parse_echo_datagram(data: bytes) -> Optional[tuple[str, str, int, bytes]]:
    """(src, dst, ttl, UDP payload) of an IPv4/UDP packet to port 3785 whose IP header checksum
    and lengths hold; None for anything else (it is ignored, never trusted)."""
    if len(data) < 28 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    total = struct.unpack_from("!H", data, 2)[0]
    if ihl < 20 or total > len(data) or total < ihl + 8 or _checksum(data[:ihl]) != 0:
        return None
    if data[9] != socket.IPPROTO_UDP or struct.unpack_from("!H", data, 6)[0] & 0x3FFF:
        return None                              # not UDP, or a fragment (or MF set)
    _sport, dport, ulen = struct.unpack_from("!HHH", data, ihl)
    if dport != ECHO_PORT or ulen < 8 or ihl + ulen > total:
        return None
    return (socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]), data[8],
            data[ihl + 8:ihl + ulen])


class EchoSocket:
    """The one AF_PACKET socket that sends our echo packets and sees them come back."""

    def __init__(self):
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        except OSError as e:
            raise TransportError(e.errno, f"cannot open the BFD echo socket (AF_PACKET needs "
                                 f"CAP_NET_RAW): {e.strerror}") from e
        try:
            prog = b"".join(struct.pack("HBBI", *ins) for ins in _ECHO_FILTER)
            import ctypes
            buf = ctypes.create_string_buffer(prog)
            fprog = struct.pack("HL", len(_ECHO_FILTER), ctypes.addressof(buf))
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self._filter = buf                   # keep the program alive while attached
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise TransportError(e.errno, f"cannot filter the BFD echo socket: {e.strerror}") from e
        self.sock = s
        self._ident = random.randrange(1 << 16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, ifname: str, peer_mac: bytes, local: str, payload: bytes) -> bool:
        self._ident += 1
        try:
            self.sock.sendto(echo_datagram(local, payload, self._ident),
                             (ifname, ETH_P_IP, 0, 0, peer_mac))
            return True
        except OSError:
            return False

    def recv(self) -> Optional[EchoArrival]:
        """The next incoming IPv4/UDP-3785 packet that parses, skipping our own outgoing ones;
        None when nothing is queued."""
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return None
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            parsed = parse_echo_datagram(data)
            if parsed is None:
                continue
            src, dst, ttl, payload = parsed
            return EchoArrival(src, dst, ttl, payload, socket.if_nametoindex(addr[0])
                               if addr[0] else 0)

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class EchoPath:
    """Where a session's echo packets go: the interface toward the peer, the peer's MAC, and
    whether this node's forwarding plane loops the peer's echo packets back (IPv4 forwarding on
    that interface). ``peer_mac`` None: not resolved yet (no neighbour entry)."""
    ifname: str
    peer_mac: Optional[bytes]
    loops_echo: bool


def echo_path(peer: str) -> Optional[EchoPath]:
    """Look the path up with netlink (pyroute2) in the calling thread's namespace; None when the
    peer is not directly reachable (echo is single hop only)."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=peer)
        except Exception:                        # noqa: BLE001 - no route: no echo
            return None
        if not routes or routes[0].get_attr("RTA_GATEWAY"):
            return None
        oif = routes[0].get_attr("RTA_OIF")
        links = ipr.get_links(oif)
        if not links:
            return None
        ifname = links[0].get_attr("IFLA_IFNAME")
        loops = False
        spec = links[0].get_attr("IFLA_AF_SPEC")
        inet = spec.get_attr("AF_INET") if spec is not None else None
        if inet is not None:
            loops = bool(inet.get("forwarding"))
        mac = None
        for n in ipr.get_neighbours(dst=peer, ifindex=oif):
            ll = n.get_attr("NDA_LLADDR")
            if ll and n["state"] not in (0x01, 0x20):          # not INCOMPLETE / FAILED
                mac = bytes.fromhex(ll.replace(":", ""))
        return EchoPath(ifname, mac, loops)
