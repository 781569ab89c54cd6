"""Gratuitous announcements on takeover, MetalLB's rhythm: for each (VIP, interface) an
immediate burst, then one every 1.1 s until 5 s after the last ``start`` for it. A burst is an
ARP request + an ARP reply (IPv4: broadcast, sender = target = VIP) or one unsolicited NA
with Override=1 to ff02::1 (IPv6). Frames come from ``agent.packets``; they leave through an
AF_PACKET socket per interface (in the current network namespace), from one background
thread that never blocks the caller. ``cancel`` stops a VIP at once (withdrawn VIP).

``sent()`` counts frames per IP, for the metric ``metallb_layer2_gratuitous_sent{ip}``.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

from metalxdp.log import get_logger

from . import packets

log = get_logger("agent")

INTERVAL_S = 1.1   # MetalLB spamLoop: 1100 ms
DURATION_S = 5.0   # ... until 5 s after the last SetBalancer for the IP


def _interface_mac(ifname: str) -> bytes:
    from .libbpf import interface_mac
    return interface_mac(ifname)[1]


@dataclass
class _Job:
    ip: str
    ifname: str
    mac: bytes
    frames: list
    until: float
    next_at: float


class GratuitousSender:
    """One thread, many (VIP, interface) jobs. Use as a context manager or call ``close``."""

    def __init__(self, interval_s: float = INTERVAL_S, duration_s: float = DURATION_S,
                 send: Optional[Callable[[str, bytes], None]] = None):
        self.interval_s = interval_s
        self.duration_s = duration_s
        self._send = send or self._send_packet
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._sent: Counter = Counter()
        self._sockets: dict[str, socket.socket] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="garp", daemon=True)
        self._thread.start()

    def __enter__(self) -> "GratuitousSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, ip, ifname: str, mac: Optional[bytes] = None) -> None:
        """Announce ``ip`` on ``ifname`` now and keep going for duration_s (restarts the window)."""
        ip = str(ipaddress.ip_address(ip))
        mac = mac or _interface_mac(ifname)
        now = time.monotonic()
        with self._cond:
            job = self._jobs.get((ip, ifname))
            if job:
                job.until = now + self.duration_s  # like MetalLB: 5 s after the last takeover
            else:
                self._jobs[(ip, ifname)] = _Job(ip, ifname, mac, packets.gratuitous_frames(ip, mac),
                                                now + self.duration_s, now)
            self._cond.notify()

    def cancel(self, ip, ifname: Optional[str] = None) -> None:
        """Stop at once (the IP was withdrawn); all interfaces unless ``ifname``."""
        ip = str(ipaddress.ip_address(ip))
        with self._cond:
            for key in [k for k in self._jobs if k[0] == ip and (ifname is None or k[1] == ifname)]:
                del self._jobs[key]
            self._cond.notify()

    def active(self) -> list[tuple[str, str]]:
        with self._cond:
            return sorted(self._jobs)

    def sent(self) -> dict[str, int]:
        """Frames sent so far per IP (monotonic, like a Prometheus counter)."""
        with self._cond:
            return dict(self._sent)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify()
        self._thread.join(timeout=2)
        for s in self._sockets.values():
            s.close()
        self._sockets.clear()

    def _send_packet(self, ifname: str, frame: bytes) -> None:
        s = self._sockets.get(ifname)
        if s is None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((ifname, 0))
            self._sockets[ifname] = s
        s.send(frame)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                due = [j for j in self._jobs.values() if j.next_at <= now]
                for job in due:
                    for frame in job.frames:
                        try:
                            self._send(job.ifname, frame)
                            self._sent[job.ip] += 1
                        except OSError as e:
                            log.warning("gratuitous send failed", event="gratuitousFailed", ip=job.ip,
                                        interface=job.ifname, error=str(e))
                    job.next_at = now + self.interval_s
                    if job.next_at > job.until:
                        del self._jobs[(job.ip, job.ifname)]
                if due:
                    log.debug("gratuitous announcement sent", event="gratuitousSent",
                              ips=sorted({j.ip for j in due}))
                wait = min((j.next_at for j in self._jobs.values()), default=now + 3600) - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
