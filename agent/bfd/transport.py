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
