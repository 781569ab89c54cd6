"""Helpers for the BFD integration tests and benchmark: FRR bfdd peers configured through vtysh,
a BIRD2 instance with ``protocol bfd``, and a packet sniffer (AF_PACKET, kernel timestamps)
running in a namespace, all real. Every start has a matching stop that tolerates half-started
state."""
from __future__ import annotations

import ctypes
import os
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from agent.bfd.packet import ControlPacket, PacketError, decode
from metalxdp.rig.frr import FRRRouter
from metalxdp.rig.netns import Host
from metalxdp.rig.procs import RigError

CLONE_NEWNET = 0x40000000
SO_TIMESTAMPNS = 35          # Linux; SCM_TIMESTAMPNS has the same value
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def wait_until(what: str, fn: Callable, timeout: float, interval: float = 0.05):
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 2):
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# ---- FRR bfdd -----------------------------------------------------------------------------
def frr_add_peer(frr: FRRRouter, peer: str, local: str, rx: int = 300, tx: int = 300,
                 mult: int = 3, passive: bool = False, multihop: bool = False,
                 echo: int = 0) -> None:
    """A bfdd peer; ``echo`` > 0: echo mode with that transmit and receive interval (ms)."""
    head = f"peer {peer}" + (" multihop" if multihop else "") + f" local-address {local}"
    cmds = ["configure terminal", "bfd", head, f"receive-interval {rx}", f"transmit-interval {tx}",
            f"detect-multiplier {mult}", "passive-mode" if passive else "no passive-mode"]
    if echo:
        cmds += ["echo-mode", f"echo transmit-interval {echo}", f"echo receive-interval {echo}"]
    frr.vtysh(*cmds)


def frr_peer(frr: FRRRouter, peer: str) -> Optional[dict]:
    for p in frr.json("show bfd peers") or []:
        if p.get("peer") == peer:
            return p
    return None


def frr_counters(frr: FRRRouter, peer: str) -> Optional[dict]:
    for p in frr.json("show bfd peers counters") or []:
        if p.get("peer") == peer:
            return p
    return None


def frr_status(frr: FRRRouter, peer: str) -> str:
    p = frr_peer(frr, peer)
    return p["status"] if p else "absent"


# ---- BIRD2 --------------------------------------------------------------------------------
@dataclass
class BirdRouter:
    """BIRD 2 in ``host``'s namespace with its own control socket under ``workdir``."""
    host: Host
    workdir: Path
    proc: Optional[subprocess.Popen] = None

    def start(self, conf: str, timeout: float = 15) -> None:
        if not Path("/usr/sbin/bird").exists():
            raise RigError("BIRD2 is not installed (/usr/sbin/bird missing)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "bird.conf").write_text(conf)
        r = subprocess.run(["/usr/sbin/bird", "-p", "-c", str(self.workdir / "bird.conf")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RigError(f"BIRD rejected its configuration: {r.stderr.strip()}")
        self.log = open(self.workdir / "bird.out", "wb")
        self.proc = self.host.popen(["/usr/sbin/bird", "-f", "-c", str(self.workdir / "bird.conf"),
                                     "-s", str(self.sock)], stdout=self.log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        wait_until("BIRD's control socket", lambda: self.proc.poll() is not None or
                   self.sock.exists(), timeout)
        if self.proc.poll() is not None:
            raise RigError(f"BIRD exited: {(self.workdir / 'bird.out').read_text()[-500:]}")

    @property
    def sock(self) -> Path:
        return self.workdir / "bird.ctl"

    def birdc(self, *cmd: str) -> str:
        r = subprocess.run(["birdc", "-s", str(self.sock), *cmd], capture_output=True, text=True,
                           timeout=10)
        if r.returncode != 0:
            raise RigError(f"birdc {' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def bfd_sessions(self) -> dict[str, dict]:
        """``show bfd sessions``: address -> {state, interface, since, interval, timeout}."""
        out = {}
        for line in self.birdc("show", "bfd", "sessions").splitlines():
            f = line.split()
            if len(f) >= 6 and re.match(r"^[0-9a-fA-F:.]+$", f[0]) and ("." in f[0] or ":" in f[0]):
                out[f[0]] = {"interface": f[1], "state": f[2], "since": " ".join(f[3:-2]),
                             "interval": f[-2], "timeout": f[-1]}
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
        if getattr(self, "log", None):
            self.log.close()


def bird_bfd_conf(peers: list[tuple[str, str]], rx: int = 300, tx: int = 300, mult: int = 3,
                  router_id: str = "192.0.2.1") -> str:
    """A BIRD 2 config with only BFD: static sessions to ``peers`` [(neighbor, local), ...]."""
    lines = [f"router id {router_id};", "protocol device { scan time 1; }", "protocol bfd {",
             f'  interface "*" {{ min rx interval {rx} ms; min tx interval {tx} ms; '
             f"idle tx interval 1000 ms; multiplier {mult}; }};"]
    lines += [f"  neighbor {n} local {l};" for n, l in peers]
    lines += ["}", ""]
    return "\n".join(lines)


# ---- packet capture -------------------------------------------------------------------------
@dataclass(frozen=True)
class Captured:
    ts: float              # kernel receive timestamp (CLOCK_REALTIME seconds)
    outgoing: bool         # sent by this namespace (True) or received (False)
    src: str
    dst: str
    sport: int
    dport: int
    ttl: int
    packet: ControlPacket


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


@dataclass
class Sniffer:
    """Captures BFD control packets (UDP 3784/4784) on ``ifname`` inside ``netns``."""
    netns: str
    ifname: str = "eth0"
    packets: list[Captured] = field(default_factory=list)
    _stop: bool = False
    _thread: Optional[threading.Thread] = None
    _ready: threading.Event = field(default_factory=threading.Event)
    error: Optional[BaseException] = None

    def __enter__(self) -> "Sniffer":
        self._thread = threading.Thread(target=self._run, daemon=True, name="bfd-sniffer")
        self._thread.start()
        if not self._ready.wait(10) or self.error:
            raise RigError(f"sniffer in {self.netns} did not start: {self.error}")
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            _enter(self.netns)
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((self.ifname, 0))
            s.settimeout(0.1)
        except BaseException as e:  # noqa: BLE001 - reported by __enter__
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        with s:
            while not self._stop:
                try:
                    data, anc, _f, addr = s.recvmsg(2048, 64)
                except socket.timeout:
                    continue
                ts = time.time()
                for level, typ, val in anc:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", val[:16])
                        ts = sec + nsec / 1e9
                c = self._parse(data, addr, ts)
                if c:
                    self.packets.append(c)

    @staticmethod
    def _parse(data: bytes, addr, ts: float) -> Optional[Captured]:
        proto = addr[1]
        if proto == 0x0800 and len(data) >= 20 and data[9] == 17:
            ihl = (data[0] & 0xF) * 4
            ttl, src, dst = data[8], socket.inet_ntop(socket.AF_INET, data[12:16]), \
                socket.inet_ntop(socket.AF_INET, data[16:20])
            udp = data[ihl:]
        elif proto == 0x86DD and len(data) >= 40 and data[6] == 17:
            ttl, src, dst = data[7], socket.inet_ntop(socket.AF_INET6, data[8:24]), \
                socket.inet_ntop(socket.AF_INET6, data[24:40])
            udp = data[40:]
        else:
            return None
        if len(udp) < 8:
            return None
        sport, dport = struct.unpack("!HH", udp[:4])
        if dport not in (3784, 4784):
            return None
        try:
            pkt = decode(udp[8:])
        except PacketError:
            return None
        return Captured(ts, addr[2] == PACKET_OUTGOING, src, dst, sport, dport, ttl, pkt)

    def from_(self, src: str) -> list[Captured]:
        return [c for c in list(self.packets) if c.src == src]
