"""A real FRR router (zebra + bgpd + bfdd) inside a lab namespace, and the pure renderer of its
configuration.

``render_frr_conf`` is the single source of the router's configuration: the namespace lab and
the Vagrant lab's router VM both use it, so the lab's tests exercise exactly what users get.
"""
from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .netns import Host
from .procs import RigError, wait_for

FRR_DIR = Path("/usr/lib/frr")


@dataclass(frozen=True)
class Neighbor:
    address: str                 # node address (IPv4 or IPv6)
    asn: int                     # the node's AS (myASN of the BGPPeer)
    password: str = ""
    bfd_profile: str = ""        # name of a bfd profile block, "" = no BFD


@dataclass(frozen=True)
class BFDTimers:
    name: str
    receive_ms: int = 300
    transmit_ms: int = 300
    detect_multiplier: int = 3
    passive: bool = False


@dataclass(frozen=True)
class RouterSpec:
    """What the router needs: its AS and id, the nodes it peers with, fast test timers."""
    asn: int
    router_id: str
    neighbors: tuple[Neighbor, ...]
    hostname: str = "router"
    keepalive: int = 3
    hold: int = 9
    max_paths: int = 8
    bfd_profiles: tuple[BFDTimers, ...] = ()
    graceful_restart: bool = False     # `bgp graceful-restart`: keep a restarting peer's routes


def render_frr_conf(spec: RouterSpec) -> str:
    """frr.conf for the lab router: one BGP session per node (v4 and v6 neighbours in their own
    address family), ECMP over up to ``max_paths`` next hops, no policy needed (lab only)."""
    out = ["frr defaults traditional", f"hostname {spec.hostname}", 
           "ipv6 forwarding", "ip forwarding", "!"]
    if spec.bfd_profiles:
        out.append("bfd")
        for p in spec.bfd_profiles:
            out += [f" profile {p.name}", f"  receive-interval {p.receive_ms}",
                    f"  transmit-interval {p.transmit_ms}",
                    f"  detect-multiplier {p.detect_multiplier}"]
            if p.passive:
                out.append("  passive-mode")
            out.append(" exit")
        out += ["exit", "!"]
    out += [f"router bgp {spec.asn}", f" bgp router-id {spec.router_id}",
            " no bgp ebgp-requires-policy", " no bgp network import-check",
            " bgp bestpath as-path multipath-relax",
            f" timers bgp {spec.keepalive} {spec.hold}"]
    if spec.graceful_restart:
        out.append(" bgp graceful-restart")
    v4, v6 = [], []
    for n in spec.neighbors:
        (v6 if ipaddress.ip_address(n.address).version == 6 else v4).append(n)
        out += [f" neighbor {n.address} remote-as {n.asn}",
                f" neighbor {n.address} timers {spec.keepalive} {spec.hold}",
                f" neighbor {n.address} timers connect 1"]
        if n.password:
            out.append(f" neighbor {n.address} password {n.password}")
        if n.bfd_profile:
            out += [f" neighbor {n.address} bfd", f" neighbor {n.address} bfd profile {n.bfd_profile}"]
    out += [" !", " address-family ipv4 unicast"]
    out += [f"  neighbor {n.address} activate" for n in v4]
    out += [f"  no neighbor {n.address} activate" for n in v6]
    out += [f"  maximum-paths {spec.max_paths}", f"  maximum-paths ibgp {spec.max_paths}",
            " exit-address-family", " !", " address-family ipv6 unicast"]
    out += [f"  neighbor {n.address} activate" for n in v6]
    out += [f"  maximum-paths {spec.max_paths}", f"  maximum-paths ibgp {spec.max_paths}",
            " exit-address-family", "exit", "!", ""]
    return "\n".join(out)


def route_gateways(ip_json: str) -> set[str]:
    """Next-hop gateways in ``ip -j route show PREFIX`` output (single path or ECMP)."""
    hops: set[str] = set()
    for route in json.loads(ip_json or "[]"):
        if route.get("gateway"):
            hops.add(route["gateway"])
        for nh in route.get("nexthops", []):
            if nh.get("gateway"):
                hops.add(nh["gateway"])
    return hops


def split_bfd_block(conf: str) -> tuple[str, str]:
    """(conf without the ``bfd`` block, the ``bfd`` block). With one ``-f`` file per daemon (our
    netns layout, no vtysh -b), bgpd reads a ``bfd`` node it does not know and takes its ``exit``
    lines as leaving configuration mode, losing ``router bgp``: bfdd gets the block alone."""
    lines, bfd, rest, inside = conf.splitlines(), [], [], False
    for line in lines:
        if line == "bfd":
            inside = True
        if inside:
            bfd.append(line)
            if line == "exit":
                inside = False
            continue
        rest.append(line)
    return "\n".join(rest) + "\n", ("\n".join(bfd) + "\n" if bfd else "")


@dataclass
class FRRRouter:
    """FRR daemons running in ``host``'s namespace with their own sockets under ``workdir``."""
    host: Host
    workdir: Path
    daemons: tuple[str, ...] = ("zebra", "bgpd", "bfdd")
    pids: dict[str, int] = field(default_factory=dict)
    bgp_port: int = 179          # the port bgpd listens on (bgpd -p)

    def _common(self, d: str) -> list[str]:
        w = self.workdir
        conf = "bfdd.conf" if d == "bfdd" else "frr.conf"
        return ["-d", "-f", str(w / conf), "-i", str(w / f"{d}.pid"), "--vty_socket", str(w),
                "-z", str(w / "zserv.api"), "-u", "frr", "-g", "frr", "--log", f"file:{w}/{d}.log"]

    def start(self, conf: str, timeout: float = 30) -> None:
        if not (FRR_DIR / "zebra").exists():
            raise RigError("FRR is not installed (/usr/lib/frr/zebra missing): run `make setup`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for parent in self.workdir.parents:   # the frr user must be able to reach its dir
            if str(parent).startswith(("/run/", "/tmp/")) and parent.stat().st_mode & 0o001 == 0:
                raise RigError(f"FRR's directory {self.workdir} is below {parent}, which user "
                               f"frr cannot enter; use a directory under /run/metalxdp/frr")
        shutil.chown(self.workdir, "frr", "frr")
        main, bfd = split_bfd_block(conf)
        for name, text in (("frr.conf", main), ("bfdd.conf", bfd or "!\n")):
            (self.workdir / name).write_text(text)
            shutil.chown(self.workdir / name, "frr", "frr")
        for d in self.daemons:
            argv = [str(FRR_DIR / d), *self._common(d)]
            if d == "bfdd":
                argv += ["--bfdctl", str(self.workdir / "bfdd.sock")]
            if d == "bgpd" and self.bgp_port != 179:
                argv += ["-p", str(self.bgp_port)]
            r = subprocess.run(["ip", "netns", "exec", self.host.netns, *argv],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RigError(f"FRR {d} failed to start in {self.host.netns}: {r.stderr.strip()}"
                               f"{self._log_tail(d)}")
            pidf = self.workdir / f"{d}.pid"
            wait_for(f"FRR {d} pid file", pidf.exists, 10)
            self.pids[d] = int(pidf.read_text().strip())
            if d == "zebra":
                wait_for("zebra's zserv socket", (self.workdir / "zserv.api").exists, 10)
        wait_for("bgpd to answer vtysh", lambda: "BGP" in self.vtysh("show bgp summary") or True,
                 timeout)

    def _log_tail(self, d: str) -> str:
        p = self.workdir / f"{d}.log"
        return ("\n" + "\n".join(p.read_text(errors="replace").splitlines()[-10:])) if p.exists() else ""

    def vtysh(self, *cmds: str, timeout: float = 15) -> str:
        argv = ["ip", "netns", "exec", self.host.netns, "vtysh", "--vty_socket", str(self.workdir)]
        for c in cmds:
            argv += ["-c", c]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RigError(f"vtysh {' / '.join(cmds)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def json(self, cmd: str):
        """``vtysh -c '<cmd> json'`` as Python data (``json`` is appended when missing)."""
        if not cmd.rstrip().endswith("json"):
            cmd += " json"
        out = self.vtysh(cmd)
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError as e:
            raise RigError(f"vtysh '{cmd}' did not return JSON: {out[:300]}") from e

    def established(self) -> set[str]:
        """Neighbour addresses whose BGP session is Established (IPv4 and IPv6 families)."""
        up = set()
        for af in ("ipv4", "ipv6"):
            s = self.json(f"show bgp {af} unicast summary")
            for addr, p in (s.get("peers") or {}).items():
                if p.get("state") == "Established":
                    up.add(addr)
        return up

    def kernel_nexthops(self, prefix: str) -> set[str]:
        """Next hops the router's kernel has for ``prefix`` (what forwarding really uses)."""
        fam = "-6" if ":" in prefix else "-4"
        r = subprocess.run(["ip", "netns", "exec", self.host.netns, "ip", "-j", fam, "route", "show",
                            prefix], capture_output=True, text=True)
        return route_gateways(r.stdout)

    def kill(self) -> None:
        """SIGKILL every daemon (a router crash: no NOTIFICATION, no route cleanup) and remove
        what would make the next ``start`` believe they are still up (pid files, zserv socket)."""
        import os
        import signal
        for d, pid in self.pids.items():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for d, pid in self.pids.items():
            wait_for(f"FRR {d} (pid {pid}) to die", lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or "zombie" in Path(f"/proc/{pid}/status").read_text(errors="replace"), 10)
        self.pids.clear()
        for name in [f"{d}.pid" for d in self.daemons] + ["zserv.api"]:
            (self.workdir / name).unlink(missing_ok=True)

    def stop(self) -> None:
        from .procs import stop_pid
        for d in reversed(list(self.pids)):
            stop_pid(self.pids[d], timeout=3)
        self.pids.clear()
