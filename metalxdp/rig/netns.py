"""Network topology builder for the lab and the tests: uniquely named network namespaces on a
shared L2 segment (a Linux bridge inside its own "switch" namespace), joined by veth pairs.

    with Topology() as topo:                       # names: "mx<6 hex>-<host>"
        n1 = topo.add_host("node1", ipv4=["192.0.2.11/24"], ipv6=["2001:db8:0:1::11/64"])
        c = topo.add_host("client", ipv4=["192.0.2.100/24"])
        c.run(["ping", "-c1", "192.0.2.11"])

Each host has one interface ``eth0`` whose peer ``<host>`` is a port of bridge ``br0`` in the
switch namespace (``Host.peer_ifname`` / ``Topology.switch_netns``: native XDP on a veth needs
a program on the peer too). ``destroy`` kills every process left in the namespaces and deletes
them; it tolerates half-built state and runs twice without harm. Nothing is created in the
root namespace.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from .procs import RigError, run

# Lab and test addresses come only from the documentation ranges.
ALLOWED_NETS = [ipaddress.ip_network(n) for n in
                ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15",
                 "2001:db8::/32")]


def check_lab_address(cidr: str) -> None:
    """Refuse any address outside the documentation ranges (the lab must never look real)."""
    ip = ipaddress.ip_interface(cidr).ip
    if not any(ip in n for n in ALLOWED_NETS):
        raise ValueError(f"{cidr} is outside the documentation ranges allowed for the lab "
                         f"({', '.join(map(str, ALLOWED_NETS))})")


@dataclass
class Host:
    name: str
    netns: str
    ifname: str = "eth0"
    peer_ifname: str = ""
    ipv4: list[str] = field(default_factory=list)   # "192.0.2.11/24"
    ipv6: list[str] = field(default_factory=list)
    mac: str = ""

    @property
    def ip4(self) -> str:
        """First IPv4 address without prefix length."""
        return self.ipv4[0].split("/")[0]

    @property
    def ip6(self) -> str:
        return self.ipv6[0].split("/")[0]

    def run(self, cmd: Sequence[str], check: bool = True, timeout: float = 60,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        return run(cmd, netns=self.netns, check=check, timeout=timeout, input=input)

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], **kw)

    def ifindex(self, ifname: Optional[str] = None) -> int:
        out = self.run(["ip", "-j", "link", "show", ifname or self.ifname]).stdout
        return json.loads(out)[0]["ifindex"]


def new_lab_id(prefix: str = "mx") -> str:
    return prefix + secrets.token_hex(3)


class Topology:
    """Namespaces + one bridge. Use as a context manager, or call ``destroy`` yourself."""

    def __init__(self, lab_id: Optional[str] = None):
        self.id = lab_id or new_lab_id()
        self.switch_netns = f"{self.id}-sw"
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []   # in creation order, for cleanup
        self._switch_ready = False

    # ---- building ----------------------------------------------------------------------
    def _add_netns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "link", "set", "lo", "up"], netns=name)
        # tests need fast, deterministic IPv6: no DAD delay, no router solicitations
        for k, v in (("net.ipv6.conf.all.accept_dad", "0"), ("net.ipv6.conf.default.accept_dad", "0"),
                     ("net.ipv6.conf.all.forwarding", "0")):
            run(["sysctl", "-qw", f"{k}={v}"], netns=name, check=False)

    def _ensure_switch(self) -> None:
        if self._switch_ready:
            return
        self._add_netns(self.switch_netns)
        sw = self.switch_netns
        run(["ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"], netns=sw)
        # no multicast snooping: NDP solicited-node multicast must reach every port
        run(["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"], netns=sw)
        run(["ip", "link", "set", "br0", "up"], netns=sw)
        self._switch_ready = True

    def add_host(self, name: str, ipv4: Sequence[str] = (), ipv6: Sequence[str] = (),
                 forwarding: bool = False) -> Host:
        """A namespace with ``eth0`` on the shared segment and the given addresses."""
        if len(name) > 15 or not name.replace("-", "").isalnum():
            raise ValueError(f"host name {name!r}: at most 15 letters, digits or '-'")
        for a in (*ipv4, *ipv6):
            check_lab_address(a)
        self._ensure_switch()
        ns = f"{self.id}-{name}"
        self._add_netns(ns)
        tmp = f"{self.id}{len(self.hosts)}"   # temporary names in the switch ns
        run(["ip", "link", "add", tmp + "a", "type", "veth", "peer", "name", name], netns=self.switch_netns)
        run(["ip", "link", "set", tmp + "a", "netns", ns], netns=self.switch_netns)
        run(["ip", "link", "set", tmp + "a", "name", "eth0"], netns=ns)
        run(["ip", "link", "set", "dev", name, "master", "br0", "up"], netns=self.switch_netns)
        for a in ipv4:
            run(["ip", "addr", "add", a, "dev", "eth0"], netns=ns)
        for a in ipv6:
            run(["ip", "addr", "add", a, "dev", "eth0", "nodad"], netns=ns)
        run(["ip", "link", "set", "eth0", "up"], netns=ns)
        if forwarding:
            for k in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
                run(["sysctl", "-qw", f"{k}=1"], netns=ns)
            # a router on the same segment as its next hops must not send ICMP redirects
            run(["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"], netns=ns)
            run(["sysctl", "-qw", "net.ipv4.conf.eth0.send_redirects=0"], netns=ns)
        link = json.loads(run(["ip", "-j", "link", "show", "eth0"], netns=ns).stdout)[0]
        h = Host(name, ns, "eth0", name, list(ipv4), list(ipv6), link["address"])
        self.hosts[name] = h
        return h

    def add_behind(self, name: str, via: str, via_addr: str, addr: str) -> Host:
        """A namespace reachable only through host ``via`` (a router, ``forwarding=True``): a
        point-to-point veth with ``via_addr`` on via's end and ``addr`` on the new host's
        ``eth0``, whose default route points at via (a peer some hops away)."""
        for a in (via_addr, addr):
            check_lab_address(a)
        gw = self.hosts[via]
        ns = f"{self.id}-{name}"
        self._add_netns(ns)
        run(["ip", "link", "add", f"to-{name}"[:15], "type", "veth", "peer", "name", "eth0", "netns", ns],
            netns=gw.netns)
        run(["ip", "addr", "add", via_addr, "dev", f"to-{name}"[:15]], netns=gw.netns)
        run(["ip", "link", "set", f"to-{name}"[:15], "up"], netns=gw.netns)
        run(["ip", "addr", "add", addr, "dev", "eth0"], netns=ns)
        run(["ip", "link", "set", "eth0", "up"], netns=ns)
        run(["ip", "route", "add", "default", "via", via_addr.split("/")[0]], netns=ns)
        link = json.loads(run(["ip", "-j", "link", "show", "eth0"], netns=ns).stdout)[0]
        h = Host(name, ns, "eth0", f"to-{name}"[:15], [addr], [], link["address"])
        self.hosts[name] = h
        return h

    def set_link(self, host: str, up: bool) -> None:
        """Cut (or restore) a host's cable: its port on the bridge goes down."""
        run(["ip", "link", "set", "dev", self.hosts[host].peer_ifname, "up" if up else "down"],
            netns=self.switch_netns)

    # ---- cleanup ----------------------------------------------------------------------
    def destroy(self) -> None:
        destroy_namespaces(self.namespaces)
        self.namespaces.clear()
        self._switch_ready = False

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    # ---- state ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"id": self.id, "switch_netns": self.switch_netns, "namespaces": self.namespaces,
                "hosts": {n: asdict(h) for n, h in self.hosts.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Topology":
        t = cls(d["id"])
        t.namespaces = list(d.get("namespaces", []))
        t.hosts = {n: Host(**h) for n, h in d.get("hosts", {}).items()}
        t._switch_ready = t.switch_netns in t.namespaces
        return t


def netns_pids(ns: str) -> list[int]:
    r = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def destroy_namespaces(namespaces: Sequence[str]) -> None:
    """Kill every process inside the namespaces, then delete them. Missing ones are fine."""
    existing = set(list_namespaces())
    todo = [ns for ns in namespaces if ns in existing]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for ns in todo for p in netns_pids(ns)]
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while pids and time.monotonic() < deadline:
            pids = [p for ns in todo for p in netns_pids(ns)]
            time.sleep(0.05)
    errors = []
    for ns in reversed(todo):
        r = run(["ip", "netns", "del", ns], check=False)
        if r.returncode != 0 and ns in list_namespaces():
            errors.append(f"{ns}: {r.stderr.strip()}")
    if errors:
        raise RigError("could not delete namespaces: " + "; ".join(errors))


def list_namespaces() -> list[str]:
    r = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
