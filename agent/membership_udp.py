"""The UDP transport for agent.membership: a socket, a thread that drives the pure state machine
with real time, and a small CLI to run one member by hand or from a test.

    sock = open_socket("192.0.2.11", 7946)               # binds in the current netns
    runner = MembershipRunner(Membership("node1", ("192.0.2.11", 7946), derive_key(secret),
                                         seeds=[("192.0.2.12", 7946)]), sock,
                              on_join=..., on_leave=...).start()
    runner.members()   # thread-safe snapshot; runner.version bumps on every change
    runner.stop()      # says goodbye (graceful leave), joins the thread, closes the socket

The callbacks run on the runner's thread: an asyncio agent hands them over with
``loop.call_soon_threadsafe``. The agent runs inside its node's network namespace, so the
socket simply binds there; ``open_socket(..., netns=...)`` exists for tests that run several
members in one process (a socket belongs to the namespace of the thread that created it).

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
import threading
import time
from typing import Callable, Optional

from agent.membership import (DEFAULT_PORT, Addr, Membership, MembershipConfig, Outgoing,
                              derive_key)
from metalxdp.log import get_logger

CLONE_NEWNET = 0x40000000
MAX_WAIT = 0.05        # the loop wakes at least this often (seconds), e.g. to notice stop()
MAX_BATCH = 256        # datagrams handled per wake-up before timers get a turn

log = get_logger("membership")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_socket(bind_ip: str, port: int = DEFAULT_PORT, netns: Optional[str] = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind_ip:port``; created inside ``/run/netns/<netns>``
    when given (this thread enters it just long enough, then returns)."""
    fam = socket.AF_INET6 if ipaddress.ip_address(bind_ip).version == 6 else socket.AF_INET
    root = target = None
    if netns:
        root = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if netns:
            _setns(target)
        try:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((bind_ip, port))
                s.setblocking(False)
            except OSError:
                s.close()
                raise
            return s
        finally:
            if netns:
                _setns(root)
    finally:
        for fd in (root, target):
            if fd is not None:
                os.close(fd)


class MembershipRunner:
    """Drives one ``Membership`` with a socket and ``time.monotonic`` on a daemon thread."""

    def __init__(self, membership: Membership, sock: socket.socket,
                 on_join: Optional[Callable[[str], None]] = None,
                 on_leave: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.m, self.sock, self.clock = membership, sock, clock
        self.on_join, self.on_leave = on_join, on_leave
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._members: frozenset[str] = frozenset({membership.name})
        self.version = 0
        self.send_errors = 0

    # ---- thread-safe views ----------------------------------------------------------------
    def members(self) -> frozenset[str]:
        with self._lock:
            return self._members

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.m.stats, "send_errors": self.send_errors}

    def states(self) -> dict[str, str]:
        with self._lock:
            return self.m.states()

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "MembershipRunner":
        self._thread = threading.Thread(target=self._run, name=f"membership-{self.m.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, leave: bool = True, timeout: float = 2.0) -> None:
        """Stop the thread (graceful leave first unless ``leave=False``) and close the socket."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if leave:
            with self._lock:
                out = self.m.leave(self.clock())
            self._send(out)
        self.sock.close()

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
        try:
            readable, _, _ = select.select([self.sock], [], [], min(max(wait, 0.0), MAX_WAIT))
        except (OSError, ValueError):
            if self._stop.is_set():
                return
            raise
        out: list[Outgoing] = []
        with self._lock:
            if readable:
                for _ in range(MAX_BATCH):
                    try:
                        data, src = self.sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break     # e.g. ECONNREFUSED reported for an earlier send
                    out += self.m.receive(self.clock(), (src[0], src[1]), data)
            out += self.m.tick(self.clock())
            events = self.m.drain_events()
            if events:
                self._members = self.m.members(self.clock())
                self.version = self.m.version
        self._send(out)
        for kind, name in events:
            if kind == "joined":
                log.info("member joined", event="memberJoined", node=self.m.name, member=name)
                if self.on_join:
                    self.on_join(name)
            else:
                log.info("member left", event="memberLeft", node=self.m.name, member=name)
                if self.on_leave:
                    self.on_leave(name)


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
