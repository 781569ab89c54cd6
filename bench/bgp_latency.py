"""BGP agent -> router latency: how long from ``BGPSpeaker.set(...)`` until the router's kernel
forwards (or stops forwarding) to the nodes.

Lab as seed 002: FRR router (AS 64512, timers 3/9, ECMP) and 3 nodes (AS 64513), one ExaBGP per
node driven by BGPSpeaker, all in fresh network namespaces. Per trial a new 198.18.x.y/32:
  announce_first  set() on the 3 speakers -> the prefix in the router's kernel (any next hop)
  announce_all    set() on the 3 speakers -> the kernel route has all 3 next hops
  withdraw        set() without it on the 3 speakers -> the kernel route gone
  peer_down       speaker.peer_down() on one node -> that next hop gone (BFD hook path)
The router's kernel is polled through a pyroute2 NetNS handle (about 1 ms per poll).
Prints p50/p99/min/max and writes bench/results/bgp_latency.json.
Usage: python bench/bgp_latency.py [--trials 25] [--peer-down-trials 8]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyroute2 import NetNS  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from agent.bgp.advertise import Route  # noqa: E402
from agent.bgp.config_render import NodeAddresses  # noqa: E402
from agent.bgp.exabgp import BGPSpeaker  # noqa: E402
from metalxdp.config.types import BGPPeer  # noqa: E402
from metalxdp.rig.frr import FRRRouter, Neighbor, RouterSpec, render_frr_conf  # noqa: E402
from metalxdp.rig.netns import Topology  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

ip = ipaddress.ip_address
POLL_LIMIT = 10.0   # seconds: a trial that takes longer than this is reported as failed


def kernel_hops(ns: NetNS, prefix: ipaddress.IPv4Network) -> set[str]:
    hops = set()
    # a plain dump filtered here: pyroute2's dst= filter does a route lookup ("get"), which
    # answers for the default route or fails, not "is this exact prefix installed"
    for r in ns.get_routes(family=2):
        if r.get("dst_len") != prefix.prefixlen or r.get_attr("RTA_DST") != str(prefix.network_address):
            continue
        gw = r.get_attr("RTA_GATEWAY")
        if gw:
            hops.add(gw)
        for nh in r.get_attr("RTA_MULTIPATH") or []:
            g = nh.get_attr("RTA_GATEWAY")
            if g:
                hops.add(g)
    return hops


def wait_hops(ns: NetNS, prefix, cond) -> float:
    """Poll until cond(hops) holds; return the monotonic time it first held."""
    deadline = time.monotonic() + POLL_LIMIT
    while time.monotonic() < deadline:
        if cond(kernel_hops(ns, prefix)):
            return time.monotonic()
        time.sleep(0.001)
    raise TimeoutError(f"{prefix}: condition not met within {POLL_LIMIT}s")


def summary(ms: list[float]) -> dict:
    s = sorted(ms)
    pct = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]  # noqa: E731
    return {"n": len(s), "p50_ms": round(statistics.median(s), 1), "p99_ms": round(pct(0.99), 1),
            "min_ms": round(s[0], 1), "max_ms": round(s[-1], 1),
            "mean_ms": round(statistics.fmean(s), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--peer-down-trials", type=int, default=8)
    args = ap.parse_args()

    results: dict[str, list[float]] = {"announce_first": [], "announce_all": [], "withdraw": [],
                                       "peer_down": []}
    with Topology() as topo:
        rh = topo.add_host("router", ipv4=["192.0.2.1/24"], forwarding=True)
        frr = FRRRouter(rh, Path(tempfile.mkdtemp(prefix="metalxdp-frr-")))
        speakers = []
        try:
            hosts = [topo.add_host(f"node{i}", ipv4=[f"192.0.2.1{i}/24"]) for i in (1, 2, 3)]
            frr.start(render_frr_conf(RouterSpec(64512, "192.0.2.1",
                                                 tuple(Neighbor(h.ip4, 64513) for h in hosts))))
            peer = BGPPeer("router", 64513, 64512, ip("192.0.2.1"), hold_time=9, keepalive_time=3)
            work = Path(tempfile.mkdtemp(prefix="metalxdp-bgpbench-"))
            for h in hosts:
                sp = BGPSpeaker(NodeAddresses(h.name, ip(h.ip4)), work / h.name, netns=h.netns,
                                registry=CollectorRegistry())
                sp.set_peers([peer])
                speakers.append(sp)
            wait_for("3 sessions up", lambda: len(frr.established()) == 3, 30)
            all_hops = {h.ip4 for h in hosts}
            ns = NetNS(rh.netns)
            try:
                for i in range(args.trials):
                    prefix = ipaddress.ip_network(f"198.18.{i // 250}.{i % 250 + 1}/32")
                    t0 = time.monotonic()
                    for sp in speakers:
                        sp.set({"router": {Route(prefix)}})
                    first = wait_hops(ns, prefix, bool)
                    full = wait_hops(ns, prefix, lambda h: h == all_hops)
                    results["announce_first"].append((first - t0) * 1000)
                    results["announce_all"].append((full - t0) * 1000)
                    t0 = time.monotonic()
                    for sp in speakers:
                        sp.set({"router": set()})
                    gone = wait_hops(ns, prefix, lambda h: not h)
                    results["withdraw"].append((gone - t0) * 1000)
                prefix = ipaddress.ip_network("198.19.0.1/32")
                for sp in speakers:
                    sp.set({"router": {Route(prefix)}})
                wait_hops(ns, prefix, lambda h: h == all_hops)
                for i in range(args.peer_down_trials):
                    t0 = time.monotonic()
                    speakers[0].peer_down("router")
                    gone = wait_hops(ns, prefix, lambda h: hosts[0].ip4 not in h and h)
                    results["peer_down"].append((gone - t0) * 1000)
                    speakers[0].peer_up("router")
                    wait_hops(ns, prefix, lambda h: h == all_hops)
            finally:
                ns.close()
        finally:
            for sp in speakers:
                sp.close()
            frr.stop()

    out = {"benchmark": "bgp_latency", "host": platform.node(), "python": platform.python_version(),
           "setup": "FRR 8.4 router + 3 ExaBGP 5 nodes in netns, eBGP 64513->64512, timers 3/9",
           "trials": args.trials, "results": {k: summary(v) for k, v in results.items() if v},
           "raw_ms": {k: [round(x, 1) for x in v] for k, v in results.items()}}
    for k, s in out["results"].items():
        print(f"{k:15s} n={s['n']:3d}  p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  "
              f"min {s['min_ms']:7.1f}  max {s['max_ms']:7.1f}")
    dest = ROOT / "bench" / "results" / "bgp_latency.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
