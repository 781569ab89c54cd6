"""An ARP/NDP responder in userspace over AF_PACKET: what MetalLB's speaker does. It exists
only as the benchmark baseline for the XDP program; it answers by the same rules
(``packets.answer_for``) but every request crosses into Python and back.

    python -m agent.userspace_responder --iface eth0 --vip 192.0.2.200 [--duration 10]
    python -m agent.userspace_responder --iface eth0 --vip 192.0.2.200 --listen-only

``--listen-only`` counts the requests for the VIPs that reach the socket without answering:
tests use it to show that requests answered by XDP never reach the stack (XDP runs before
AF_PACKET taps). On exit it prints one JSON line with its counts and its CPU time.
"""
from __future__ import annotations

import ipaddress
import json
import resource
import select
import signal
import socket
import struct
import sys
import time
from typing import Iterable, Optional

import click

from . import packets

SOL_PACKET, PACKET_STATISTICS = 263, 6
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4


class UserspaceResponder:
    def __init__(self, ifname: str, vips: Iterable[str], mac: Optional[bytes] = None, answer: bool = True):
        from .libbpf import interface_mac
        self.ifname = ifname
        self.vips = {ipaddress.ip_address(v) for v in vips}
        self.mac = mac or interface_mac(ifname)[1]
        self.answer = answer
        self.requests = 0   # requests for our VIPs seen
        self.replies = 0
        self.send_failures = 0   # replies the kernel refused (send buffer full): dropped, as a flood would
        self._socks = []
        for proto in (ETH_P_ARP, ETH_P_IPV6):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
            s.bind((ifname, proto))
            s.setblocking(False)
            self._socks.append(s)

    def socket_stats(self) -> dict:
        """Frames the sockets received and dropped (queue full) since the last call (the
        kernel's PACKET_STATISTICS resets on read)."""
        got = dropped = 0
        for s in self._socks:
            packets_, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            got, dropped = got + packets_, dropped + drops
        return {"socket_packets": got, "socket_drops": dropped}

    def close(self) -> None:
        for s in self._socks:
            s.close()

    def is_vip(self, ip) -> bool:
        return ip in self.vips

    def handle(self, frame: bytes) -> None:
        reply = packets.answer_for(frame, self.mac, self.is_vip if self.answer else self._count_only)
        if reply is not None:
            self.requests += 1
            try:
                self._socks[0].send(reply)
            except (BlockingIOError, OSError):   # ENOBUFS/EAGAIN under a flood: drop, keep serving
                self.send_failures += 1
                return
            self.replies += 1

    def _count_only(self, ip) -> bool:
        if ip in self.vips:
            self.requests += 1
        return False

    def run(self, deadline: float, stop=lambda: False) -> None:
        """Serve until the monotonic ``deadline`` or ``stop()``."""
        while not stop():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(self._socks, [], [], min(left, 0.2))
            for s in ready:
                for _ in range(256):  # drain, bounded
                    try:
                        frame, addr = s.recvfrom(2048)
                    except BlockingIOError:
                        break
                    if addr[2] != PACKET_OUTGOING:
                        self.handle(frame)


@click.command("userspace-responder")
@click.option("--iface", required=True)
@click.option("--vip", "vips", multiple=True, required=True)
@click.option("--duration", type=float, default=3600.0, show_default=True, help="seconds, then exit")
@click.option("--listen-only", is_flag=True, help="count requests for the VIPs, never answer")
def main(iface: str, vips: tuple[str, ...], duration: float, listen_only: bool) -> None:
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    r = UserspaceResponder(iface, vips, answer=not listen_only)
    print(json.dumps({"event": "responderReady", "iface": iface, "vips": list(vips)}), flush=True)
    try:
        r.run(time.monotonic() + duration, stop=lambda: bool(stopping))
    finally:
        stats = r.socket_stats()
        r.close()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"event": "responderDone", "requests": r.requests, "replies": r.replies,
                          "send_failures": r.send_failures, **stats,
                          "cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
