"""The transport for agent.membership: a UDP socket for the protocol, a TCP listener on the same
port for the fallback probes (memberlist's "TCP ping"), a thread that drives the pure state
machine with real time, and a small CLI to run one member by hand or from a test.

    sock = open_socket("192.0.2.11", 7946)               # binds in the current netns
    stream = open_stream_socket("192.0.2.11", 7946)       # optional: TCP fallback probes
    runner = MembershipRunner(Membership("node1", ("192.0.2.11", 7946), derive_key(secret),
                                         seeds=[("192.0.2.12", 7946)]), sock, stream_sock=stream,
                              on_join=..., on_leave=...).start()
    runner.members()   # thread-safe snapshot; runner.version bumps on every change
    runner.stop()      # says goodbye (graceful leave), joins the thread, closes the socket

The callbacks run on the runner's thread: an asyncio agent hands them over with
``loop.call_soon_threadsafe``. The agent runs inside its node's network namespace, so the
socket simply binds there; ``open_socket(..., netns=...)`` exists for tests that run several
members in one process (a socket belongs to the namespace of the thread that created it;
the runner then needs ``netns=`` too, for the TCP connections it opens).

The stream framing is a 2-byte big-endian length, then one packet (authenticated like every
other). A connection carries one PING and its ACK and is closed; the listener serves at most
``MAX_STREAMS`` connections at once, each for at most ``STREAM_TIMEOUT``, and never trusts what
it reads beyond what ``Membership.receive`` verifies.

CLI (JSON log lines on stderr, events ``memberJoined``/``memberLeft``):
    python -m agent.membership_udp --name node1 --bind 192.0.2.11 --peer 192.0.2.12 \
        --peer 192.0.2.13 --key-file /etc/metalxdp/memberlist/secretkey [--duration 30]
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import ipaddress
import os
import select
import signal
import socket
import struct
import threading
import time
from typing import Callable, Optional

from agent.membership import (DEFAULT_PORT, STATE_NAMES, Addr, Membership, MembershipConfig,
                              Outgoing, derive_key)
from metalxdp.log import get_logger

CLONE_NEWNET = 0x40000000
MAX_WAIT = 0.05        # the loop wakes at least this often (seconds), e.g. to notice stop()
MAX_BATCH = 256        # datagrams handled per wake-up before timers get a turn
MAX_STREAMS = 16       # TCP connections served (and opened) at once; more are refused/skipped
STREAM_TIMEOUT = 1.0   # seconds a TCP exchange may take, connect included
_FRAME = struct.Struct("!H")

log = get_logger("membership")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _socket_in(netns: Optional[str], fam: int, kind: int) -> socket.socket:
    """A new socket created inside ``/run/netns/<netns>`` when given (this thread enters it just
    long enough, then returns), else in the current namespace."""
    if not netns:
        return socket.socket(fam, kind)
    root = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                return socket.socket(fam, kind)
            finally:
                _setns(root)
        finally:
            os.close(target)
    finally:
        os.close(root)


def _family(ip: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def _bound(bind_ip: str, port: int, netns: Optional[str], kind: int) -> socket.socket:
    s = _socket_in(netns, _family(bind_ip), kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind_ip, port))
        if kind == socket.SOCK_STREAM:
            s.listen(MAX_STREAMS)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def open_socket(bind_ip: str, port: int = DEFAULT_PORT, netns: Optional[str] = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind_ip:port`` (in ``netns`` when given)."""
    return _bound(bind_ip, port, netns, socket.SOCK_DGRAM)


def open_stream_socket(bind_ip: str, port: int = DEFAULT_PORT,
                       netns: Optional[str] = None) -> socket.socket:
    """A non-blocking TCP listener on ``bind_ip:port`` for the fallback probes."""
    return _bound(bind_ip, port, netns, socket.SOCK_STREAM)


def _read_exact(conn: socket.socket, n: int, deadline: float) -> Optional[bytes]:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("stream deadline passed")
        conn.settimeout(left)
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(conn: socket.socket, deadline: float) -> Optional[bytes]:
    """One length-prefixed packet, or None at a clean end of stream; a peer that trickles bytes
    cannot hold the connection past ``deadline`` (time.monotonic)."""
    head = _read_exact(conn, _FRAME.size, deadline)
    if head is None:
        return None
    (n,) = _FRAME.unpack(head)
    return _read_exact(conn, n, deadline)


def frame(data: bytes) -> bytes:
    return _FRAME.pack(len(data)) + data


class MembershipRunner:
    """Drives one ``Membership`` with a socket and ``time.monotonic`` on a daemon thread."""

    def __init__(self, membership: Membership, sock: socket.socket,
                 on_join: Optional[Callable[[str], None]] = None,
                 on_leave: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 stream_sock: Optional[socket.socket] = None, netns: Optional[str] = None,
                 on_held: Optional[Callable[[str], None]] = None):
        """stream_sock: the TCP listener (``open_stream_socket``); without it the fallback
        probes are neither served nor sent. netns: where to open outgoing TCP connections when
        the runner's thread is not already in the node's namespace (tests)."""
        self.m, self.sock, self.clock = membership, sock, clock
        self.stream_sock, self.netns = stream_sock, netns
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.on_join, self.on_leave, self.on_held = on_join, on_leave, on_held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._members: frozenset[str] = frozenset({membership.name})
        self._held: frozenset[str] = frozenset()
        self.version = 0
        self.send_errors = 0
        self.stream_errors = 0

    # ---- thread-safe views ----------------------------------------------------------------
    def members(self) -> frozenset[str]:
        with self._lock:
            return self._members

    def held(self) -> frozenset[str]:
        """The crash-held members (Membership.crash_held), thread-safe."""
        with self._lock:
            return self._held

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.m.stats, "send_errors": self.send_errors,
                    "stream_errors": self.stream_errors}

    def states(self) -> dict[str, str]:
        with self._lock:
            return self.m.states()

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "MembershipRunner":
        self._thread = threading.Thread(target=self._run, name=f"membership-{self.m.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, leave: bool = True, timeout: float = 2.0, restarting: bool = False) -> None:
        """Stop the thread (graceful leave first unless ``leave=False``; ``restarting``: as a
        member that comes back, see Membership.leave) and close the socket."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if leave:
            with self._lock:
                out = self.m.leave(self.clock(), restarting=restarting)
            self._send(out)
        self.sock.close()
        if self.stream_sock is not None:
            self.stream_sock.close()

    def __enter__(self) -> "MembershipRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- the loop -------------------------------------------------------------------------
    def _send(self, out: list[Outgoing]) -> None:
        for addr, data in out:
            try:
                self.sock.sendto(data, addr)
            except OSError as e:     # link down, no route, buffer full: UDP is lossy anyway
                self.send_errors += 1
                if self._stop.is_set():
                    return            # a stream worker finishing after stop() closed the socket
                if e.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAGAIN,
                                   errno.ENOBUFS, errno.EPERM, errno.ECONNREFUSED, errno.EINVAL):
                    log.warning("send failed", event="membershipSendFailed", to=addr, error=str(e))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:   # a bug must not silently stop failure detection: log, go on
                log.error("membership loop error", exc_info=True, event="membershipLoopError",
                          node=self.m.name)
                time.sleep(MAX_WAIT)

    def _step(self) -> None:
        with self._lock:
            wait = self.m.next_deadline() - self.clock()
        socks = [self.sock] + ([self.stream_sock] if self.stream_sock is not None else [])
        try:
            readable, _, _ = select.select(socks, [], [], min(max(wait, 0.0), MAX_WAIT))
        except (OSError, ValueError):
            if self._stop.is_set():
                return
            raise
        if self.stream_sock is not None and self.stream_sock in readable:
            self._accept()
        out: list[Outgoing] = []
        with self._lock:
            if self.sock in readable:
                for _ in range(MAX_BATCH):
                    try:
                        data, src = self.sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break     # e.g. ECONNREFUSED reported for an earlier send
                    out += self.m.receive(self.clock(), (src[0], src[1]), data)
            out += self.m.tick(self.clock())
            stream = self.m.drain_stream()
            events = self.m.drain_events()
            if events:
                self._members = self.m.members(self.clock())
                self.version = self.m.version
            self._held = self.m.crash_held() if self.m.cfg.crash_hold > 0 else frozenset()
        self._send(out)
        if self.stream_sock is not None:
            for addr, data in stream:
                self._spawn(self._probe_over_stream, addr, data)
        for kind, name in events:
            if kind == "joined":
                log.info("member joined", event="memberJoined", node=self.m.name, member=name)
                if self.on_join:
                    self.on_join(name)
            elif kind == "held":
                log.info("member's agent is down but its node answers: keeping it for the crash "
                         "hold", event="memberCrashHeld", node=self.m.name, member=name,
                         hold_s=self.m.cfg.crash_hold)
                if self.on_held:
                    self.on_held(name)
            elif kind == "released":
                m = self.m.member(name)
                log.info("crash hold ended", event="memberCrashHoldEnded", node=self.m.name, member=name,
                         state=STATE_NAMES.get(m.state, "?") if m else "forgotten")
                if self.on_held:
                    self.on_held(name)
            else:
                log.info("member left", event="memberLeft", node=self.m.name, member=name)
                if self.on_leave:
                    self.on_leave(name)


    # ---- the TCP fallback probes --------------------------------------------------------------
    def _spawn(self, fn, *args) -> None:
        if not self._streams.acquire(blocking=False):
            self.stream_errors += 1           # at the limit: skip (a probe) or refuse (a peer)
            if args and isinstance(args[0], socket.socket):
                args[0].close()
            return
        threading.Thread(target=self._bounded, args=(fn, *args), daemon=True,
                         name=f"membership-stream-{self.m.name}").start()

    def _bounded(self, fn, *args) -> None:
        try:
            fn(*args)
        except (OSError, ValueError):
            self.stream_errors += 1
        finally:
            self._streams.release()

    def _accept(self) -> None:
        for _ in range(MAX_STREAMS):
            try:
                conn, src = self.stream_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._spawn(self._serve_stream, conn, (src[0], src[1]))

    def _deliver(self, src: Addr, data: bytes) -> list[Outgoing]:
        with self._lock:
            return self.m.receive(self.clock(), src, data)

    def _serve_stream(self, conn: socket.socket, src: Addr) -> None:
        """A peer's fallback PING: answer on the same connection, send the rest by UDP."""
        with conn:
            deadline = time.monotonic() + STREAM_TIMEOUT
            data = read_frame(conn, deadline)
            if not data:
                return
            out = self._deliver(src, data)
            back = [d for a, d in out if a == src]
            self._send([(a, d) for a, d in out if a != src])
            if back:
                conn.sendall(b"".join(frame(d) for d in back))

    def _probe_over_stream(self, addr: Addr, data: bytes) -> None:
        conn = _socket_in(self.netns, _family(addr[0]), socket.SOCK_STREAM)
        with conn:
            wait = min(STREAM_TIMEOUT, self.m.cfg.probe_interval)
            deadline = time.monotonic() + wait
            conn.settimeout(wait)
            try:
                conn.connect(addr)
            except ConnectionRefusedError:
                # a RST: the node's kernel is up, its agent is not (Membership.refused)
                with self._lock:
                    self.m.refused(self.clock(), addr)
                return
            conn.sendall(frame(data))
            conn.shutdown(socket.SHUT_WR)
            while (reply := read_frame(conn, deadline)) is not None:
                self._send(self._deliver(addr, reply))


# ---- CLI ---------------------------------------------------------------------------------

def parse_peer(text: str, default_port: int = DEFAULT_PORT) -> Addr:
    """"192.0.2.12", "192.0.2.12:7946", "2001:db8::12", "[2001:db8::12]:7946" -> (ip, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    else:
        host, port = text, default_port
    return str(ipaddress.ip_address(host)), port


def read_key_file(path: str) -> bytes:
    """The Secret's value as mounted (trailing newline ignored)."""
    with open(path, "rb") as f:
        return f.read().strip()


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="this node's name")
    ap.add_argument("--bind", required=True, help="address to bind and advertise")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--peer", action="append", default=[], help="seed ip[:port] (repeat)")
    ap.add_argument("--key-file", required=True, help="file holding the shared secret")
    ap.add_argument("--probe-interval", type=float, default=MembershipConfig.probe_interval)
    ap.add_argument("--probe-timeout", type=float, default=MembershipConfig.probe_timeout)
    ap.add_argument("--suspicion-mult", type=float, default=MembershipConfig.suspicion_mult)
    ap.add_argument("--duration", type=float, default=0, help="exit after N seconds (0 = run)")
    a = ap.parse_args(argv)
    cfg = MembershipConfig(probe_interval=a.probe_interval, probe_timeout=a.probe_timeout,
                           suspicion_mult=a.suspicion_mult)
    m = Membership(a.name, (a.bind, a.port), derive_key(read_key_file(a.key_file)),
                   seeds=[parse_peer(p, a.port) for p in a.peer], config=cfg,
                   epoch=time.time_ns() // 1_000_000)
    runner = MembershipRunner(m, open_socket(a.bind, a.port))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    log.info("membership started", event="membershipStarted", node=a.name, bind=a.bind,
             port=a.port, seeds=a.peer)
    runner.start()
    done.wait(a.duration or None)
    runner.stop()
    log.info("membership stopped", event="membershipStopped", node=a.name, stats=runner.stats())


if __name__ == "__main__":
    main()
