"""BGP unnumbered (BGPPeer ``interface``): the session runs between the IPv6 link-local
addresses of one interface, and IPv4 prefixes travel with an IPv6 next hop (RFC 8950 extended
next hop), as MetalLB's FRR mode does with ``neighbor <if> interface``.

Neither end is configured with the other's address; each learns it from the other's IPv6
Router Advertisements (RFC 4861). FRR, on the router, sends RAs on an interface peer and learns
ours from the RAs we send. So, per interface in use, ``Unnumbered``:

* sends a Router Solicitation at start (the router answers at once instead of at its next
  periodic RA, up to 10 s later) and our own RA at start, three times at 1 s, then every 10 s:
  router lifetime 0, so no host on the link takes this node for a default router, and only a
  source link-layer address option;
* listens for RAs (a raw ICMPv6 socket bound to the interface, filtered to type 134) and keeps
  the source of the newest valid one as the router's address. RFC 4861 §6.1.2's validity
  rules decide what is valid: hop limit 255, link-local source, code 0, length >= 16, every
  option of non-zero length. Anything else is counted and ignored;
* falls back to the kernel's neighbour table (a link-local entry flagged as a router) when no
  RA has been heard yet, e.g. right after an agent restart.

``resolve_peers`` (pure) turns each interface peer into a concrete one (``peer_address`` = the
router's link-local, ``source_address`` = ours) or leaves it out with the reason.

    u = Unnumbered(on_change=wake_reconcile)        # netns= for tests
    peers, waiting = resolve_peers(active, u.links(p.interface for p in active.values()))
    u.close()
"""
from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Optional

from metalxdp.config.types import BGPPeer
from metalxdp.log import get_logger

from ..bfd.runner import _enter_netns     # the BFD thread enters a namespace the same way

log = get_logger("agent")

ICMP6_RS, ICMP6_RA = 133, 134
ICMP6_FILTER = 1                     # IPPROTO_ICMPV6 level, linux/icmpv6.h
ALL_NODES, ALL_ROUTERS = "ff02::1", "ff02::2"
RA_BURST = (0.0, 1.0, 2.0, 3.0)      # seconds after an interface comes into use
RA_INTERVAL_S = 10.0
NTF_ROUTER = 0x80


@dataclass(frozen=True)
class LinkInfo:
    """What the agent knows about one interface: our link-local address and the router's."""
    ifname: str
    local: Optional[ipaddress.IPv6Address] = None
    router: Optional[ipaddress.IPv6Address] = None
    exists: bool = True
    known: bool = True                 # False: not looked up yet


def resolve_peers(peers: Mapping[str, BGPPeer],
                  links: Mapping[str, LinkInfo]) -> tuple[dict[str, BGPPeer], dict[str, str]]:
    """Pure: (peers ready to configure, {peer name: why it waits}). Numbered peers pass as they
    are; an interface peer gets the router's link-local as ``peer_address`` and ours as
    ``source_address`` (``sourceAddress`` cannot apply: the session is link-local)."""
    ready: dict[str, BGPPeer] = {}
    waiting: dict[str, str] = {}
    for name, p in peers.items():
        if not p.interface:
            ready[name] = p
            continue
        link = links.get(p.interface)
        if link is None or not link.known:
            waiting[name] = f"looking up interface {p.interface}"
        elif not link.exists:
            waiting[name] = f"interface {p.interface} does not exist on this node"
        elif link.local is None:
            waiting[name] = f"interface {p.interface} has no IPv6 link-local address (is IPv6 on?)"
        elif link.router is None:
            waiting[name] = f"no router advertisement heard on {p.interface} yet"
        else:
            ready[name] = replace(p, peer_address=link.router, source_address=link.local)
    return ready, waiting


# ---- packets (pure) ----------------------------------------------------------------------------
def router_advertisement(mac: bytes) -> bytes:
    """Our RA: cur hop limit 0, no flags, router lifetime 0 (not a default router), reachable and
    retrans timers 0 (unspecified), one source link-layer address option. The kernel fills in
    the checksum of a raw ICMPv6 socket."""
    return struct.pack("!BBHBBHII", ICMP6_RA, 0, 0, 0, 0, 0, 0, 0) + struct.pack("!BB", 1, 1) + mac


def router_solicitation(mac: bytes) -> bytes:
    return struct.pack("!BBHI", ICMP6_RS, 0, 0, 0) + struct.pack("!BB", 1, 1) + mac


def valid_ra(data: bytes, src: str, hop_limit: int) -> Optional[str]:
    """None if ``data`` (the ICMPv6 message) is a valid RA by RFC 4861 §6.1.2, else why not.
    (The checksum is checked by the kernel for raw ICMPv6 sockets.)"""
    if hop_limit != 255:
        return f"hop limit {hop_limit}, not 255"
    try:
        if not ipaddress.IPv6Address(src.split("%")[0]).is_link_local:
            return f"source {src} is not link-local"
    except ValueError:
        return f"source {src!r} is not an IPv6 address"
    if len(data) < 16:
        return f"{len(data)} bytes, shorter than 16"
    if data[0] != ICMP6_RA:
        return f"type {data[0]}, not 134"
    if data[1] != 0:
        return f"code {data[1]}, not 0"
    off = 16
    while off < len(data):
        if off + 2 > len(data) or data[off + 1] == 0:
            return "an option has length 0"
        off += data[off + 1] * 8
    if off != len(data):
        return "an option runs past the end"
    return None


# ---- I/O -----------------------------------------------------------------------------------
class _Port:
    """One interface in use: its raw ICMPv6 socket and what it heard."""

    def __init__(self, ifname: str, now: float):
        self.ifname = ifname
        self.sock: Optional[socket.socket] = None
        self.index = 0
        self.mac = b""
        self.local: Optional[ipaddress.IPv6Address] = None
        self.router: Optional[ipaddress.IPv6Address] = None
        self.exists = False
        self.started = now
        self.sent = 0
        self.next_ra = now
        self.ignored = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Unnumbered:
    """The RA sender/listener for every interface an unnumbered peer uses, on one thread."""

    def __init__(self, on_change: Optional[Callable[[], None]] = None, *,
                 netns: Optional[str] = None):
        self._on_change = on_change
        self._netns = netns
        self._ports: dict[str, _Port] = {}
        self._want: set[str] = set()
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        started = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(started,), name="unnumbered",
                                        daemon=True)
        self._thread.start()
        started.wait(10)
        if self._error:
            raise self._error

    # ---- public ----------------------------------------------------------------------------
    def links(self, ifnames: Iterable[str]) -> dict[str, LinkInfo]:
        """Use these interfaces (and only these from now on); what is known about each."""
        want = set(ifnames)
        with self._lock:
            changed = want != self._want
            self._want = want
            out = {n: LinkInfo(n, p.local, p.router, p.exists) for n, p in self._ports.items()
                   if n in want}
        if changed:
            self._wake_w.send(b"x")
        for n in want - set(out):
            out[n] = LinkInfo(n, known=False)             # being looked up by the thread
        return out

    def wait_router(self, ifname: str, timeout: float) -> Optional[ipaddress.IPv6Address]:
        """Tests: block until the router's link-local on ``ifname`` is known."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            link = self.links(self._want | {ifname}).get(ifname)
            if link and link.router is not None:
                return link.router
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._wake_r.close()
        self._wake_w.close()

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self, started: threading.Event) -> None:
        try:
            if self._netns:
                _enter_netns(self._netns)
        except OSError as e:
            self._error = e
            started.set()
            return
        started.set()
        next_refresh = 0.0
        while not self._stop:
            now = time.monotonic()
            with self._lock:
                want = set(self._want)
            for gone in set(self._ports) - want:
                port = self._ports.pop(gone)
                if port.sock is not None:
                    self._sel.unregister(port.sock)
                port.close()
            if want - set(self._ports) or now >= next_refresh:
                self._refresh(want, now)
                next_refresh = now + 5.0
            for port in self._ports.values():
                if port.sock is not None and now >= port.next_ra:
                    self._send_ra(port, now)
            deadlines = [p.next_ra for p in self._ports.values() if p.sock is not None] + [next_refresh]
            timeout = max(0.0, min(deadlines) - time.monotonic())
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    try:
                        self._wake_r.recv(64)
                    except BlockingIOError:
                        pass
                else:
                    self._read(key.data)
        for port in self._ports.values():
            port.close()
        self._sel.close()

    def _refresh(self, want: set[str], now: float) -> None:
        """Interface facts from netlink; open the socket of a new interface; the neighbour table
        as a fallback for a router we have not heard yet."""
        from pyroute2 import IPRoute
        changed = False
        with IPRoute() as ipr:
            for name in sorted(want):
                port = self._ports.get(name)
                if port is None:
                    port = self._ports[name] = _Port(name, now)
                links = ipr.link_lookup(ifname=name)
                exists = bool(links)
                local = None
                if exists:
                    port.index = links[0]
                    link = ipr.get_links(port.index)[0]
                    mac = link.get_attr("IFLA_ADDRESS")
                    port.mac = bytes.fromhex(mac.replace(":", "")) if mac else b""
                    for a in ipr.get_addr(family=socket.AF_INET6, index=port.index):
                        addr = ipaddress.IPv6Address(a.get_attr("IFA_ADDRESS"))
                        if addr.is_link_local:
                            local = addr
                            break
                    if port.router is None:
                        for n in ipr.get_neighbours(family=socket.AF_INET6, ifindex=port.index):
                            dst = n.get_attr("NDA_DST")
                            if dst and n["flags"] & NTF_ROUTER and ipaddress.IPv6Address(dst).is_link_local \
                                    and n["state"] not in (0x01, 0x20):
                                port.router = ipaddress.IPv6Address(dst)
                                changed = True
                                log.info("router found in the neighbour table", event="unnumberedRouter",
                                         interface=name, router=dst, source="neighbours")
                                break
                if (exists, local) != (port.exists, port.local):
                    changed = True
                port.exists, port.local = exists, local
                if exists and local is not None and port.sock is None:
                    self._open(port, now)
                elif (not exists or local is None) and port.sock is not None:
                    self._sel.unregister(port.sock)
                    port.close()
        if changed and self._on_change:
            self._on_change()

    def _open(self, port: _Port, now: float) -> None:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError as e:
            log.error(f"cannot open a raw ICMPv6 socket for BGP unnumbered: {e.strerror}",
                      event="unnumberedError", interface=port.ifname)
            return
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, port.ifname.encode())
            # ICMP6_FILTER: a set bit blocks the type; pass only RAs
            blocked = [0xFFFFFFFF] * 8
            blocked[ICMP6_RA >> 5] &= ~(1 << (ICMP6_RA & 31))
            s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, port.index)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.bind((str(port.local), 0, 0, port.index))
            s.setblocking(False)
        except OSError as e:
            s.close()
            log.error(f"cannot set up BGP unnumbered on {port.ifname}: {e.strerror}",
                      event="unnumberedError", interface=port.ifname)
            return
        port.sock = s
        port.started, port.sent, port.next_ra = now, 0, now
        self._sel.register(s, selectors.EVENT_READ, port)
        try:
            s.sendto(router_solicitation(port.mac), (ALL_ROUTERS, 0, 0, port.index))
        except OSError:
            pass

    def _send_ra(self, port: _Port, now: float) -> None:
        try:
            port.sock.sendto(router_advertisement(port.mac), (ALL_NODES, 0, 0, port.index))
        except OSError as e:
            log.debug(f"router advertisement not sent: {e.strerror}", event="unnumberedError",
                      interface=port.ifname)
        port.sent += 1
        port.next_ra = (port.started + RA_BURST[port.sent] if port.sent < len(RA_BURST)
                        else now + RA_INTERVAL_S)

    def _read(self, port: _Port) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, addr = port.sock.recvmsg(1500, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            hop = -1
            for level, typ, val in anc:
                if level == socket.IPPROTO_IPV6 and typ == socket.IPV6_HOPLIMIT:
                    hop = struct.unpack("i", val[:4])[0]
            src = addr[0].split("%")[0]
            why = valid_ra(data, src, hop)
            if why:
                port.ignored += 1
                log.debug("router advertisement ignored", event="unnumberedBadRA",
                          interface=port.ifname, source=src, reason=why)
                continue
            router = ipaddress.IPv6Address(src)
            if router != port.router:
                old = port.router
                with self._lock:
                    port.router = router
                log.info("router found", event="unnumberedRouter", interface=port.ifname,
                         router=str(router), previous=str(old) if old else "", source="ra")
                if self._on_change:
                    self._on_change()
