"""Node failure -> router drops the node's next hop, with and without BFD, in the full lab.

Two labs in turn (``metalxdp lab up`` as seed 002, 3 nodes, FRR router, BGP hold 9 s /
keepalive 3 s): one with ``--bfd`` (300 ms x 3 on the router and in the BFDProfile the agents
use), one without. In each, a Service from ``lab-bgp`` gives a /32 with 3 next hops; per trial
one node's link is cut (the node's veth on the switch goes down, so nothing says goodbye) and the
router's kernel is polled every 10 ms until that node's next hop is gone; then the link is
restored and the full ECMP route awaited before the next trial. Cuts rotate over the nodes.

  detect   link cut -> the node's next hop gone from the router's kernel
Theory: BFD 300 ms x 3 -> 0.6-0.9 s (+ FRR's route update); no BFD -> BGP hold 9 s (6-9 s after
the last keepalive). Prints p50/p99/min/max and writes bench/results/bfd_lab_failover.json.
Usage: python bench/bfd_lab_failover.py [--cuts 20] [--cuts-without-bfd 20]
"""
from __future__ import annotations

import contextlib
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pyroute2 import NetNS  # noqa: E402

from benchstats import arg_parser, print_table, summary, write_json  # noqa: E402
from bgp_latency import kernel_hops  # noqa: E402
from metalxdp.lab import tools as lt  # noqa: E402
from metalxdp.lab.cluster import running_lab  # noqa: E402
from metalxdp.lab.spec import LabSpec  # noqa: E402
from metalxdp.rig.frr import FRRRouter  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

import ipaddress  # noqa: E402

NODE4 = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
TIMEOUT = 30.0


def run_lab(spec: LabSpec, cuts: int, label: str) -> list[float]:
    print(f"[{label}] bringing the lab up ...", flush=True)
    out = []
    with running_lab("bfdb", Path(tempfile.mkdtemp(prefix="metalxdp-bench-")), spec) as lab:
        frr = FRRRouter(lab.host("router"), Path(lab.load()["frr_dir"]))
        wait_for("6 BGP sessions", lambda: len(frr.established()) == 6, 90)
        lab.add_backend("web", "node2", {"app": "fo"})
        lt.apply_service(lab, "fo", pool="lab-bgp", selector={"app": "fo"})
        vip = ipaddress.ip_network(lt.wait_service_ips(lab, "fo")[0] + "/32")
        with contextlib.closing(NetNS(lab.host("router").netns)) as ns:
            wait_for("3 next hops", lambda: kernel_hops(ns, vip) == set(NODE4.values()), 60)
            time.sleep(3)
            for i in range(cuts):
                node = list(NODE4)[i % 3]
                lab.set_link(node, up=False)
                cut = time.monotonic()
                took = None
                while time.monotonic() - cut < TIMEOUT:
                    if NODE4[node] not in kernel_hops(ns, vip):
                        took = time.monotonic() - cut
                        break
                    time.sleep(0.01)
                lab.set_link(node, up=True)
                print(f"[{label}] cut {i + 1:2} {node}: " + (f"{took:.3f} s" if took is not None else "NOT detected"),
                      flush=True)
                if took is not None:
                    out.append(took)
                wait_for("3 next hops again", lambda: kernel_hops(ns, vip) == set(NODE4.values()), 90)
                if spec.bfd_profile:
                    wait_for("6 BFD sessions up", lambda: sum(p["status"] == "up" for p in frr.json("show bfd peers")) == 6, 30)
                time.sleep(2)   # let the sessions settle before the next cut
            return out


def main() -> None:
    ap = arg_parser(__doc__, "bfd_lab_failover")
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--cuts-without-bfd", type=int, default=20)
    a = ap.parse_args()
    results = {}
    raw = {}
    for label, spec, n in (("bfd_300x3", LabSpec(bfd_profile="bench", bfd_timers=(300, 300, 3)), a.cuts),
                           ("no_bfd_hold9s", LabSpec(), a.cuts_without_bfd)):
        if n <= 0:
            continue
        xs = run_lab(spec, n, label)
        raw[label] = [round(x, 3) for x in xs]
        results[label] = {**summary(xs, "s", 3), "undetected": n - len(xs)} if xs else {"n": 0, "undetected": n}
    print_table("setup", results, "s", 3, 14, 7,
                note=lambda s: f"  undetected {s['undetected']}" if s["undetected"] else "")
    out = {"benchmark": "bfd_lab_failover", "host": platform.node(), "kernel": platform.release(),
           "poll_ms": 10, "lab": "3 nodes eBGP -> FRR router, hold 9 s keepalive 3 s; BFD 300/300/3 on both sides",
           "results": results, "raw_s": raw}
    write_json(Path(a.out), out)


if __name__ == "__main__":
    main()
