"""BFDManager: every BFD session of the agent on one dedicated thread.

BFD timers are tens of milliseconds; the agent's asyncio loop can be blocked for longer than
that (a 100 ms blocking call there delayed timers 30 ms in our measurement). So the sessions
live on their own thread running a plain ``selectors`` loop: it sleeps until the earliest
deadline or a packet, and never runs foreign code. State changes are handed to the caller's
callback on a separate notifier thread (or on the caller's asyncio loop with
``call_soon_threadsafe``), so a slow callback cannot delay a packet either.

    bfd = BFDManager(on_state_change=lambda peer, old, new: print(peer, old, new))
    bfd.add_session("192.0.2.1", "192.0.2.11", profile)   # BFDProfile from metalxdp.config
    bfd.update_profile("192.0.2.1", faster)               # poll/final, the session stays Up
    bfd.remove_session("192.0.2.1")                       # AdminDown to the peer, then gone
    bfd.close()

All public methods are thread-safe: they run a closure on the BFD thread and wait for it.
States passed to the callback and returned by ``states()`` are the strings "AdminDown", "Down",
"Init", "Up". Run standalone (JSON log lines on stderr):

    python -m agent.bfd.runner --local 192.0.2.11 --peer 192.0.2.1 --rx 300 --tx 300 --mult 3
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ctypes
import ipaddress
import os
import queue
import random
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from metalxdp.config.types import BFDProfile
from metalxdp.log import get_logger

from .packet import PacketError, State, decode, decode_echo
from .session import Session, SessionConfig
from .transport import (ECHO_TTL_RETURNED, MULTI_HOP_PORT, SINGLE_HOP_PORT, EchoPath, EchoSocket,
                        Listener, Sender, echo_path, family_of, source_address_for, ttl_ok)

StateCallback = Callable[[str, str, str], None]     # (peer_ip, old_state, new_state)

CLONE_NEWNET = 0x40000000
MAX_DRAIN_S = 3.0        # longest we keep sending AdminDown after remove_session
MAX_RX_BURST = 64        # datagrams read per socket per wake-up (bounded work per iteration)
CALL_TIMEOUT_S = 10.0

log = get_logger("bfd")


def normalize(ip: str) -> str:
    addr, _, scope = ip.partition("%")
    return str(ipaddress.ip_address(addr)) + (f"%{scope}" if scope else "")


@dataclass(frozen=True)
class SessionInfo:
    """A snapshot of one session (what ``show bfd peers`` shows)."""
    peer: str
    local: str
    multihop: bool
    profile: str
    state: str
    local_diag: str
    remote_state: str
    local_discr: int
    remote_discr: int
    source_port: int
    tx_interval_ms: float            # negotiated, before jitter
    detection_time_ms: float
    remote_receive_interval_ms: float
    remote_transmit_interval_ms: float
    remote_detect_multiplier: int
    control_packet_input: int
    control_packet_output: int
    session_up_events: int
    session_down_events: int
    up_since: Optional[float]        # time.time() of the last transition to Up
    echo_active: bool = False
    echo_interval_ms: float = 0.0    # negotiated echo interval (0: no echo)
    local_echo_receive_interval_ms: float = 0.0   # what we advertise
    remote_echo_receive_interval_ms: float = 0.0
    echo_packet_input: int = 0
    echo_packet_output: int = 0
    last_down_diag: str = ""         # why the session last left Up ("echo_failed", ...)


@dataclass
class _Entry:
    session: Session
    sender: Sender
    profile: BFDProfile
    multihop: bool
    up_since: Optional[float] = None
    drain_until: Optional[float] = None   # set once removed: AdminDown until then
    echo: Optional[EchoPath] = None       # set when the profile asks for echo and it may run
    last_down_diag: str = ""


def up_down_callback(peer_up: Callable[[str], None], peer_down: Callable[[str], None],
                     key: Callable[[str], Optional[str]] = lambda ip: ip) -> StateCallback:
    """The BGP seam: a callback that calls ``peer_up(key(ip))`` when a session comes Up and
    ``peer_down(key(ip))`` when an Up session leaves Up. A session that never came Up does not
    hold BGP down (what FRR does too). Peers for which ``key`` returns None are ignored."""
    def on_change(peer_ip: str, old: str, new: str) -> None:
        name = key(peer_ip)
        if name is None:
            return
        if new == "Up":
            peer_up(name)
        elif old == "Up":
            peer_down(name)
    return on_change


@dataclass(frozen=True)
class SessionSpec:
    """What one BFD session should look like (the unit ``BFDManager.sync`` works in)."""
    local_ip: Optional[str]
    profile: BFDProfile
    multihop: bool = False


def sessions_for_peers(peers: Iterable, profiles: Mapping[str, BFDProfile]) -> dict[str, SessionSpec]:
    """Pure: the BFD sessions a node needs for its selected ``BGPPeer``s (those with a
    ``bfdProfile``), keyed by peer address. ``ebgpMultiHop`` peers get RFC 5883 multi-hop
    sessions, as MetalLB's FRR mode does; the source address is the peer's ``sourceAddress``
    or, when unset, whatever the kernel routes from."""
    out: dict[str, SessionSpec] = {}
    for p in peers:
        if not p.bfd_profile or p.bfd_profile not in profiles:
            continue
        if getattr(p, "interface", ""):
            continue     # BFD over an unnumbered (link-local) session: not supported yet
        out[normalize(str(p.peer_address))] = SessionSpec(
            str(p.source_address) if p.source_address else None, profiles[p.bfd_profile],
            bool(p.ebgp_multihop))
    return out


def _enter_netns(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


class BFDManager:
    def __init__(self, on_state_change: Optional[StateCallback] = None, *,
                 netns: Optional[str] = None,
                 callback_loop: Optional[asyncio.AbstractEventLoop] = None,
                 rng: Optional[random.Random] = None):
        """Start the BFD thread. ``netns``: create every socket inside that named network
        namespace (tests; the agent already runs in the node's namespace). ``callback_loop``:
        deliver callbacks on that asyncio loop instead of the notifier thread."""
        self._callback = on_state_change
        self._callback_loop = callback_loop
        self._rng = rng or random.Random()
        self._netns = netns
        self._entries: dict[str, _Entry] = {}
        self._by_discr: dict[int, str] = {}
        self._listeners: dict[tuple[int, int], Listener] = {}
        self._echo_sock: Optional[EchoSocket] = None
        self._calls: "queue.SimpleQueue[tuple[Callable, concurrent.futures.Future]]" = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._notes: "queue.SimpleQueue[Optional[tuple[str, str, str]]]" = queue.SimpleQueue()
        self._notifier = threading.Thread(target=self._notify_loop, name="bfd-notify", daemon=True)
        self._notifier.start()
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="bfd", daemon=True)
        self._thread.start()
        started.result(timeout=CALL_TIMEOUT_S)   # raises if the namespace could not be entered

    # ---- public, thread-safe API ----------------------------------------------------------
    def add_session(self, peer_ip: str, local_ip: Optional[str] = None,
                    profile: BFDProfile = BFDProfile("default"), multihop: bool = False) -> None:
        """Start a session to ``peer_ip`` (replacing one to the same peer). ``local_ip`` None:
        the address the kernel routes from. A profile with echo mode runs the echo function on
        IPv4 single-hop sessions (never on IPv6 or multi hop, as MetalLB and FRR). Raises
        ``TransportError`` when a socket cannot be created."""
        self._call(lambda: self._add(normalize(peer_ip), local_ip, profile, multihop))

    def update_profile(self, peer_ip: str, profile: BFDProfile) -> None:
        """New timers for a running session: a poll sequence while Up, no flap."""
        self._call(lambda: self._update(normalize(peer_ip), profile))

    def remove_session(self, peer_ip: str) -> None:
        """AdminDown (diagnostic 7) to the peer now, repeated for up to one detection time
        (at most 3 s) in the background; the callback reports the move to AdminDown."""
        self._call(lambda: self._remove(normalize(peer_ip)))

    def sync(self, wanted: Mapping[str, SessionSpec]) -> None:
        """Make the running sessions match ``wanted`` (peer -> SessionSpec): add the missing,
        poll/final the ones whose timers changed, re-create the ones whose local address or
        hop mode changed, AdminDown the ones no longer wanted."""
        self._call(lambda: self._sync({normalize(k): v for k, v in wanted.items()}))

    def states(self) -> dict[str, str]:
        """peer -> "AdminDown" | "Down" | "Init" | "Up" (sessions being removed excluded)."""
        return self._call(lambda: {p: e.session.state.label for p, e in self._entries.items()
                                   if e.drain_until is None})

    def sessions(self) -> dict[str, SessionInfo]:
        return self._call(lambda: {p: self._info(p, e) for p, e in self._entries.items()
                                   if e.drain_until is None})

    def close(self, admin_down: bool = True) -> None:
        """Stop: every session tells its peer AdminDown (one packet), then the thread ends."""
        if self._stop:
            return
        try:
            self._call(lambda: self._shutdown(admin_down))
        finally:
            self._stop = True
            self._wake()
            self._thread.join(timeout=CALL_TIMEOUT_S)
            self._notes.put(None)
            self._notifier.join(timeout=CALL_TIMEOUT_S)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> "BFDManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass                                  # a wake-up is already pending

    def _call(self, fn: Callable):
        if self._stop or not self._thread.is_alive():
            raise RuntimeError("the BFD manager is closed")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, fut))
        self._wake()
        return fut.result(timeout=CALL_TIMEOUT_S)

    def _notify_loop(self) -> None:
        while True:
            note = self._notes.get()
            if note is None:
                return
            try:
                self._callback(*note)
            except Exception:                     # a broken callback must not stop BFD
                log.error("BFD state callback failed", exc_info=True, event="bfdCallbackError",
                          peer=note[0])

    # ---- the BFD thread ----------------------------------------------------------------------
    def _run(self, started: concurrent.futures.Future) -> None:
        try:
            if self._netns:
                _enter_netns(self._netns)
        except OSError as e:
            started.set_exception(e)
            return
        started.set_result(None)
        while not self._stop:
            now = time.monotonic()
            deadlines = [d for e in self._entries.values()
                         for d in (e.session.next_deadline(), e.drain_until) if d is not None]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                elif key.data is self._echo_sock:
                    self._read_echo()
                else:
                    self._read(key.data)
            while True:
                try:
                    fn, fut = self._calls.get_nowait()
                except queue.Empty:
                    break
                try:
                    fut.set_result(fn())
                except BaseException as e:        # noqa: BLE001 - handed to the caller
                    fut.set_exception(e)
            self._timers(time.monotonic())
        for e in self._entries.values():
            e.sender.close()
        for lst in self._listeners.values():
            lst.close()
        if self._echo_sock is not None:
            self._echo_sock.close()

    def _timers(self, now: float) -> None:
        for peer, e in list(self._entries.items()):
            if e.drain_until is not None and now >= e.drain_until:
                self._forget(peer)
                continue
            d = e.session.next_deadline()
            if d is not None and now >= d:
                self._apply(peer, e, e.session.on_timer(now))

    def _read(self, lst: Listener) -> None:
        for _ in range(MAX_RX_BURST):
            dg = lst.recv()
            if dg is None:
                return
            try:
                pkt = decode(dg.data)
            except PacketError as err:
                log.debug("BFD packet discarded", event="bfdBadPacket", peer=dg.src, reason=str(err))
                continue
            peer = self._by_discr.get(pkt.your_discr) if pkt.your_discr else None
            if pkt.your_discr and peer is None:
                continue                          # §6.8.6: no session with that discriminator
            if peer is None:
                peer = dg.src if dg.src in self._entries else None
            e = self._entries.get(peer) if peer else None
            if e is None or e.multihop != (dg.port == MULTI_HOP_PORT) or dg.src != peer.split("%")[0]:
                continue
            if dg.dst and e.sender.local.split("%")[0] != dg.dst:
                continue
            if not ttl_ok(e.multihop, dg.ttl, e.profile.minimum_ttl):
                e.session.counters.bad_packets += 1
                log.debug("BFD packet with wrong TTL discarded", event="bfdBadPacket", peer=peer,
                          ttl=dg.ttl)
                continue
            self._apply(peer, e, e.session.receive(pkt, time.monotonic()))

    def _read_echo(self) -> None:
        now = time.monotonic()
        for _ in range(MAX_RX_BURST):
            a = self._echo_sock.recv()
            if a is None:
                return
            # ours coming back: to and from our own address, forwarded exactly once. (The
            # peer's echo packets, to its own address, pass through our forwarding plane.)
            if a.src != a.dst or a.ttl != ECHO_TTL_RETURNED:
                continue
            try:
                pkt = decode_echo(a.payload)
            except PacketError:
                continue
            peer = self._by_discr.get(pkt.my_discr)
            e = self._entries.get(peer) if peer else None
            if e is None or e.echo is None or e.sender.local != a.dst:
                continue
            e.session.echo_returned(pkt, now)

    def _echo_config(self, peer: str, local: str, profile: BFDProfile,
                     multihop: bool) -> tuple[SessionConfig, Optional[EchoPath]]:
        """The session's config and echo path: echo only for IPv4 single hop (MetalLB refuses
        echo with IPv6; RFC 5883 §3 forbids it multi hop) on a directly connected peer."""
        if not profile.echo_mode or multihop or family_of(peer) != socket.AF_INET:
            return SessionConfig.from_profile(profile, echo=False), None
        path = echo_path(peer)
        if path is None:
            log.warning("BFD echo needs a directly connected peer; running without echo",
                        event="bfdEchoUnavailable", peer=peer, profile=profile.name)
            return SessionConfig.from_profile(profile, echo=False), None
        if not path.loops_echo:
            log.warning("IPv4 forwarding is off on the interface to the peer, so this node cannot "
                        "loop the peer's echo packets; asking the peer for none "
                        "(Required Min Echo RX 0) and sending ours",
                        event="bfdEchoNotLooped", peer=peer, interface=path.ifname)
        if self._echo_sock is None:
            self._echo_sock = EchoSocket()
            self._sel.register(self._echo_sock, selectors.EVENT_READ, self._echo_sock)
        return SessionConfig.from_profile(profile, echo=True, loops_echo=path.loops_echo), path

    def _apply(self, peer: str, e: _Entry, acts) -> None:
        for p in acts.send:
            e.sender.send(p.encode())
        if acts.echo_started and e.echo is not None:
            e.echo = echo_path(peer.split("%")[0]) or e.echo     # the peer's MAC, fresh
            log.info("BFD echo started", event="bfdEchoStarted", peer=peer,
                     interval_ms=e.session.echo_interval_us() / 1000, interface=e.echo.ifname)
        if acts.echo and e.echo is not None and e.echo.peer_mac and self._echo_sock is not None:
            for p in acts.echo:
                self._echo_sock.send(e.echo.ifname, e.echo.peer_mac, e.sender.local, p.encode())
        for old, new, diag in acts.changes:
            if new == State.UP:
                e.up_since = time.time()
            elif old == State.UP:
                e.last_down_diag = diag.name.lower()
            fields = dict(peer=peer, old=old.label, new=new.label, diag=diag.name.lower())
            if new == State.UP:
                log.info("BFD session up", event="bfdSessionUp", **fields)
            elif old == State.UP:
                log.info("BFD session down", event="bfdSessionDown", **fields)
            else:
                log.debug("BFD session state changed", event="bfdStateChange", **fields)
            if self._callback is not None:
                if self._callback_loop is not None:
                    self._callback_loop.call_soon_threadsafe(self._callback, peer, old.label, new.label)
                else:
                    self._notes.put((peer, old.label, new.label))

    def _listener(self, family: int, port: int) -> None:
        if (family, port) not in self._listeners:
            lst = Listener(family, port)
            self._listeners[(family, port)] = lst
            self._sel.register(lst, selectors.EVENT_READ, lst)

    def _new_discr(self) -> int:
        for _ in range(1000):
            d = self._rng.randrange(1, 2 ** 32)
            if d not in self._by_discr:
                return d
        raise RuntimeError("no free BFD discriminator")

    def _add(self, peer: str, local: Optional[str], profile: BFDProfile, multihop: bool) -> None:
        if peer in self._entries:
            self._forget(peer)
        fam = family_of(peer)
        self._listener(fam, MULTI_HOP_PORT if multihop else SINGLE_HOP_PORT)
        local = normalize(local) if local else source_address_for(peer)
        sender = Sender(local, peer, multihop, self._rng)
        try:
            cfg, path = self._echo_config(peer, local, profile, multihop)
        except Exception:
            sender.close()
            raise
        now = time.monotonic()
        discr = self._new_discr()
        s = Session(discr, cfg, now, self._rng)
        self._entries[peer] = _Entry(s, sender, profile, multihop, echo=path)
        self._by_discr[discr] = peer
        log.info("BFD session added", event="bfdSessionAdded", peer=peer, local=local,
                 profile=profile.name, multihop=multihop, source_port=sender.port,
                 echo=path is not None)

    def _update(self, peer: str, profile: BFDProfile) -> None:
        e = self._entries.get(peer)
        if e is None or e.drain_until is not None:
            raise KeyError(f"no BFD session to {peer}")
        e.profile = profile
        cfg, e.echo = self._echo_config(peer, e.sender.local, profile, e.multihop)
        self._apply(peer, e, e.session.set_config(cfg, time.monotonic()))

    def _remove(self, peer: str) -> None:
        e = self._entries.get(peer)
        if e is None or e.drain_until is not None:
            return
        now = time.monotonic()
        s = e.session
        heard = s.remote_discr != 0
        self._apply(peer, e, s.admin_down(now))
        drain = (s.remote_detect_mult * s.tx_interval_us() / 1e6) if heard else 0.0
        e.drain_until = now + min(drain, MAX_DRAIN_S)

    def _sync(self, wanted: Mapping[str, SessionSpec]) -> None:
        for peer, e in list(self._entries.items()):
            if e.drain_until is None and peer not in wanted:
                self._remove(peer)
        for peer, spec in wanted.items():
            e = self._entries.get(peer)
            local = normalize(spec.local_ip) if spec.local_ip else None
            if e is None or e.drain_until is not None or e.multihop != spec.multihop \
                    or (local is not None and local != e.sender.local):
                self._add(peer, local, spec.profile, spec.multihop)
            elif e.profile != spec.profile:
                self._update(peer, spec.profile)

    def _forget(self, peer: str) -> None:
        e = self._entries.pop(peer)
        self._by_discr.pop(e.session.local_discr, None)
        e.sender.close()

    def _shutdown(self, admin_down: bool) -> None:
        now = time.monotonic()
        for peer, e in list(self._entries.items()):
            if admin_down and e.drain_until is None:
                self._apply(peer, e, e.session.admin_down(now))
            self._forget(peer)

    def _info(self, peer: str, e: _Entry) -> SessionInfo:
        s = e.session
        return SessionInfo(
            peer=peer, local=e.sender.local, multihop=e.multihop, profile=e.profile.name,
            state=s.state.label, local_diag=s.local_diag.name.lower(), remote_state=s.remote_state.label,
            local_discr=s.local_discr, remote_discr=s.remote_discr, source_port=e.sender.port,
            tx_interval_ms=s.tx_interval_us() / 1000, detection_time_ms=s.detection_time_us() / 1000,
            remote_receive_interval_ms=s.remote_min_rx_us / 1000,
            remote_transmit_interval_ms=s.remote_desired_min_tx_us / 1000,
            remote_detect_multiplier=s.remote_detect_mult,
            control_packet_input=s.counters.control_packet_input,
            control_packet_output=s.counters.control_packet_output,
            session_up_events=s.counters.session_up, session_down_events=s.counters.session_down,
            up_since=e.up_since, echo_active=s.echo_active,
            echo_interval_ms=s.echo_interval_us() / 1000,
            local_echo_receive_interval_ms=s.config.echo_rx_us / 1000,
            remote_echo_receive_interval_ms=s.remote_min_echo_rx_us / 1000,
            echo_packet_input=s.counters.echo_packet_input,
            echo_packet_output=s.counters.echo_packet_output, last_down_diag=e.last_down_diag)


def main(argv=None) -> None:
    from metalxdp import log as logmod
    ap = argparse.ArgumentParser(description="Run one BFD session (JSON log lines on stderr).")
    ap.add_argument("--local", help="local address (default: the routed source address)")
    ap.add_argument("--peer", required=True)
    ap.add_argument("--rx", type=int, default=300, help="receive interval, ms")
    ap.add_argument("--tx", type=int, default=300, help="transmit interval, ms")
    ap.add_argument("--mult", type=int, default=3, help="detect multiplier")
    ap.add_argument("--passive", action="store_true")
    ap.add_argument("--multihop", action="store_true")
    ap.add_argument("--minimum-ttl", type=int, default=254)
    ap.add_argument("--echo", type=int, default=0, metavar="MS",
                    help="run the echo function with this interval (IPv4 single hop)")
    ap.add_argument("--log-level", default="info")
    a = ap.parse_args(argv)
    logmod.setup(a.log_level)
    profile = BFDProfile("cli", receive_interval_ms=a.rx, transmit_interval_ms=a.tx,
                         detect_multiplier=a.mult, passive_mode=a.passive, minimum_ttl=a.minimum_ttl,
                         echo_mode=a.echo > 0, echo_interval_ms=a.echo or 50)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with BFDManager() as bfd:
        bfd.add_session(a.peer, a.local, profile, multihop=a.multihop)
        done.wait()
        bfd.remove_session(a.peer)


if __name__ == "__main__":
    main()
