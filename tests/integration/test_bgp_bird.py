"""The same announce/withdraw behaviour against a second real router implementation: BIRD 2.

BIRD imports every node's routes (``import all; export none``), merges equal BGP paths into
one ECMP kernel route (``merge paths on``), and we check both ``birdc show route`` and the
router's kernel.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from metalxdp.config.parse import parse
from metalxdp.rig.netns import Host
from metalxdp.rig.procs import Proc, RigError, run, start, wait_for

from .test_bgp_frr import (NODE_ASN, ROUTER_ASN, V4, V6, add_nodes, lab_resources, service)

pytestmark = pytest.mark.integration
BIRD = "/usr/sbin/bird"


def render_bird_conf(router: Host, nodes, log: Path) -> str:
    out = [f'log "{log}" all;', "router id 192.0.2.1;",
           "protocol device { scan time 1; }"]
    for fam in ("ipv4", "ipv6"):
        # merge paths: equal BGP paths from several nodes become one multipath kernel route
        out.append(f"protocol kernel kernel_{fam} {{ {fam} {{ import none; export all; }}; "
                   f"merge paths on; }}")
    for n in nodes:
        for fam, local, addr in (("ipv4", router.ip4, n.host.ip4), ("ipv6", router.ip6, n.host.ip6)):
            out.append(f"protocol bgp {n.host.name}_{fam} {{ local {local} as {ROUTER_ASN}; "
                       f"neighbor {addr} as {NODE_ASN}; hold time 9; keepalive time 3; "
                       f"connect retry time 1; {fam} {{ import all; export none; }}; }}")
    return "\n".join(out) + "\n"


class Bird:
    def __init__(self, host: Host, workdir: Path):
        self.host, self.workdir = host, workdir
        self.sock = workdir / "bird.ctl"
        self.proc: Proc | None = None

    def start(self, conf: str) -> None:
        if not Path(BIRD).exists():
            raise RigError("BIRD 2 is not installed (/usr/sbin/bird): run `make setup`")
        (self.workdir / "bird.conf").write_text(conf)
        self.proc = start("bird", [BIRD, "-f", "-c", str(self.workdir / "bird.conf"), "-s", str(self.sock)],
                          self.workdir, netns=self.host.netns)
        wait_for("BIRD's control socket", self.sock.exists, 15, proc=self.proc)

    def birdc(self, cmd: str) -> str:
        # birdc exits 1 for "Network not found": the output says what happened
        return run(["birdc", "-s", str(self.sock), *cmd.split()], netns=self.host.netns, check=False).stdout

    def established(self) -> set[str]:
        return {line.split()[0] for line in self.birdc("show protocols").splitlines()
                if "Established" in line}

    def kernel_nexthops(self, prefix: str) -> set[str]:
        fam = "-6" if ":" in prefix else "-4"
        routes = json.loads(run(["ip", "-j", fam, "route", "show", prefix], netns=self.host.netns).stdout or "[]")
        hops = set()
        for r in routes:
            if r.get("gateway"):
                hops.add(r["gateway"])
            hops |= {nh["gateway"] for nh in r.get("nexthops", []) if nh.get("gateway")}
        return hops

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


@pytest.fixture
def bird_lab(topology):
    work = Path(tempfile.mkdtemp(prefix="metalxdp-bird-"))
    router = topology.add_host("router", ipv4=["192.0.2.1/24"], ipv6=["2001:db8:0:1::1/64"],
                               forwarding=True)
    bird = Bird(router, work)
    nodes = add_nodes(topology, 2, work / "nodes")
    try:
        yield bird, router, nodes, work
    finally:
        for n in nodes:
            n.speaker.close()
        bird.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_announce_and_withdraw_against_bird(bird_lab):
    bird, router, nodes, work = bird_lab
    bird.start(render_bird_conf(router, nodes, work / "bird.log"))
    config = parse(lab_resources())
    for n in nodes:
        n.apply(config, [service()])
    names = {f"{n.host.name}_{f}" for n in nodes for f in ("ipv4", "ipv6")}
    wait_for("4 BGP sessions Established in BIRD", lambda: bird.established() == names, 30)
    all4, all6 = {n.host.ip4 for n in nodes}, {n.host.ip6 for n in nodes}
    wait_for(f"{V4}/32 via both nodes in the kernel", lambda: bird.kernel_nexthops(f"{V4}/32") == all4, 30)
    wait_for(f"{V6}/128 via both nodes in the kernel", lambda: bird.kernel_nexthops(f"{V6}/128") == all6, 30)
    shown = bird.birdc(f"show route {V4}/32 all")
    assert "BGP.as_path: 64513" in shown and all(a in shown for a in all4)

    for n in nodes:
        n.apply(config, [])
    wait_for("withdrawn from BIRD's kernel routes", lambda: not bird.kernel_nexthops(f"{V4}/32")
             and not bird.kernel_nexthops(f"{V6}/128"), 20)
    assert "Network not found" in bird.birdc(f"show route {V4}/32")
    assert bird.established() == names
