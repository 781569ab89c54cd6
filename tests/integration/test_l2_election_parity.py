"""L2 election parity with MetalLB's own speakers, every VIP (issue 16, item 3).

The same process lab is brought up twice, once with MetalLB (``LabSpec(lb="metallb")``: the
release pinned in scripts/metallb/VERSION, its controller and one speaker per node, built from
Go modules and cached) and once with metalxdp, with the same nodes, pools, backends and
Services (each Service asks for its IP, so both hold the same VIPs). For every VIP the node
that answers ARP/NDP on the wire, as the client sees it, must be the same under both:

* 14 IPv4 and 10 IPv6 Services with externalTrafficPolicy Cluster (every node eligible: the
  choice is the election hash alone);
* 6 IPv4 and 6 IPv6 Services with externalTrafficPolicy Local whose backends run on node2 and
  node3 only (node1 is not eligible: the hash among the nodes with a ready local endpoint).

A VIP answered by no node or by two fails too. The failure message is the table of every VIP
with both answers.
"""
from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from metalxdp.lab import tools as lt
from metalxdp.lab.cluster import Lab
from metalxdp.lab.spec import LabSpec
from metalxdp.rig.procs import wait_for

pytestmark = pytest.mark.integration

CLUSTER4 = [f"192.0.2.{200 + i}" for i in range(14)]
LOCAL4 = [f"192.0.2.{214 + i}" for i in range(6)]
CLUSTER6 = [f"2001:db8:0:1::{0x200 + i:x}" for i in range(10)]
LOCAL6 = [f"2001:db8:0:1::{0x20a + i:x}" for i in range(6)]


def scenario(lab: Lab) -> None:
    for node in ("node1", "node2", "node3"):
        lab.add_backend(f"all-{node}", node, {"app": "all"})
    for node in ("node2", "node3"):
        lab.add_backend(f"local-{node}", node, {"app": "local"})
    for i, ip in enumerate(CLUSTER4 + CLUSTER6 + LOCAL4 + LOCAL6):
        local = ip in LOCAL4 or ip in LOCAL6
        lt.apply_service(lab, f"vip-{i:02d}", etp="Local" if local else "Cluster",
                         selector={"app": "local" if local else "all"},
                         families=["IPv6" if ":" in ip else "IPv4"],
                         annotations={"metallb.io/loadBalancerIPs": ip})
    for i, ip in enumerate(CLUSTER4 + CLUSTER6 + LOCAL4 + LOCAL6):
        assert lt.wait_service_ips(lab, f"vip-{i:02d}") == [ip]


def kernel_resolved(lab: Lab, ip: str) -> set:
    """The node the client's own kernel resolves ``ip`` to (IPv6: ndisc6 ignores MetalLB's
    Neighbor Advertisements, which carry no Override flag; the kernel accepts them)."""
    c = lab.host("client")
    c.run(["ip", "neigh", "flush", "to", ip], check=False)
    c.run(["ping", "-c", "1", "-W", "1", ip], check=False)
    node = lt.host_by_mac(lab, lt.neighbour_mac(lab, ip))
    return {node} if node else set()


def announcers(lab: Lab, ips: list[str]) -> dict[str, set]:
    """IPv4: every node answering two ARP requests on the wire (two nodes = split brain)."""
    def one(ip: str) -> set:
        return kernel_resolved(lab, ip) if ":" in ip else lt.announcing_nodes(lab, ip)
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(ips, pool.map(one, ips)))


def elected(lab: Lab) -> dict[str, str]:
    """VIP -> the one node answering for it, once every VIP has exactly one and the answer held
    for a second look."""
    ips = CLUSTER4 + CLUSTER6 + LOCAL4 + LOCAL6
    seen: dict[str, set] = {}

    def settled() -> bool:
        nonlocal seen
        first = announcers(lab, ips)
        if not all(len(v) == 1 for v in first.values()):
            seen = first
            return False
        seen = announcers(lab, ips)
        return seen == first
    try:
        wait_for("every VIP answered by exactly one node, twice alike", settled, 120)
    except Exception as e:
        bad = {ip: sorted(map(str, v)) for ip, v in seen.items() if len(v) != 1}
        raise AssertionError(f"{lab.spec_lb}: VIPs not answered by exactly one node: {bad}") from e
    return {ip: next(iter(v)) for ip, v in seen.items()}


def run(tmp_path_factory, lb: str) -> dict[str, str]:
    lab = Lab(name=f"elect-{lb[:5]}-{secrets.token_hex(2)}", root=tmp_path_factory.mktemp(f"elect-{lb}"))
    lab.spec_lb = lb
    try:
        lab.up(LabSpec(lb=lb), progress=lambda _m: None)
        scenario(lab)
        return elected(lab)
    finally:
        lab.down(progress=lambda _m: None)


def test_every_vip_is_announced_from_the_node_metallb_elects(tmp_path_factory):
    theirs = run(tmp_path_factory, "metallb")
    ours = run(tmp_path_factory, "metalxdp")
    # the scenario means something only if it spreads VIPs and honours the local endpoints
    assert len(set(theirs.values())) == 3, theirs
    assert all(theirs[ip] in ("node2", "node3") for ip in LOCAL4 + LOCAL6), theirs
    table = "\n".join(f"  {ip:22} MetalLB {theirs[ip]:6} metalxdp {ours[ip]:6}{'' if theirs[ip] == ours[ip] else '  <- differs'}"
                      for ip in theirs)
    assert ours == theirs, f"the L2 announcer differs from MetalLB's:\n{table}"
