"""Service -> route latency through the whole system, in the network-namespace lab: how long
from a LoadBalancer Service's creation (the API call returns) until the router's kernel has the
/32, and from its deletion until the route is gone.

Path measured: API server -> controller (allocates from ``lab-bgp``, writes status) -> the three
agents (watch, plan) -> ExaBGP -> FRR bgpd -> zebra -> the router's kernel FIB.

Lab as seed 002 (``metalxdp lab up``: router AS 64512, 3 nodes AS 64513, eBGP, ECMP). One backend
on node2; per trial a new Service ``lat-N`` in pool ``lab-bgp`` (ETP Cluster, so all 3 nodes
advertise). The router's kernel is polled every ``--poll-ms`` (default 10 ms) through a pyroute2
NetNS handle; a trial measures:
  create_first  Service created -> the VIP's /32 in the router's kernel (any next hop)
  create_all    Service created -> the /32 with all 3 next hops (ECMP complete)
  delete_gone   Service deleted -> the /32 gone from the router's kernel
  delete_gone_from_call  the same, from the moment the delete call was issued (the agents may
                act on the watch event before the call's response is back: delete_gone can be ~0)
  create_call / delete_call  how long the API calls themselves took
Prints p50/p99/min/max/mean/stdev (ms) and writes bench/results/bgp_service_latency.json.
Target (issue 7): create p50 <= 300 ms.
Usage: python bench/bgp_service_latency.py [--trials 25] [--poll-ms 10]
"""
from __future__ import annotations

import contextlib
import ipaddress
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
from metalxdp.kube import api_client, client  # noqa: E402
from metalxdp.lab.cluster import running_lab  # noqa: E402
from metalxdp.rig.frr import FRRRouter  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

POOL = ipaddress.ip_network("203.0.113.0/26")     # lab-bgp's IPv4 range
TRIAL_TIMEOUT = 10.0


def pool_routes(ns: NetNS) -> dict[str, int]:
    """/32 routes inside the lab-bgp pool in the router's kernel: address -> number of next hops."""
    out = {}
    for r in ns.get_routes(family=2):
        if r.get("dst_len") != 32:
            continue
        dst = r.get_attr("RTA_DST")
        if dst and ipaddress.ip_address(dst) in POOL:
            mp = r.get_attr("RTA_MULTIPATH")
            out[dst] = len(mp) if mp else (1 if r.get_attr("RTA_GATEWAY") else 0)
    return out


def service(name: str) -> dict:
    return {"metadata": {"name": name, "annotations": {"metallb.io/address-pool": "lab-bgp"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "lat"}, "externalTrafficPolicy": "Cluster",
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "name": "http"}]}}


def run(trials: int, poll_s: float) -> dict:
    print("bringing the lab up ...", flush=True)
    with running_lab("bench", Path(tempfile.mkdtemp(prefix="metalxdp-bench-"))) as lab:
        frr = FRRRouter(lab.host("router"), Path(lab.load()["frr_dir"]))
        wait_for("6 BGP sessions", lambda: len(frr.established()) == 6, 90)
        lab.add_backend("lat", "node2", {"app": "lat"})
        core = client.CoreV1Api(api_client(lab.kubeconfig()))
        with contextlib.closing(NetNS(lab.host("router").netns)) as ns:
            res: dict[str, list[float]] = {k: [] for k in ("create_first", "create_all", "delete_gone",
                                                           "delete_gone_from_call", "create_call", "delete_call")}
            failed = []
            for i in range(trials + 1):               # trial 0 warms every path up, not counted
                name = f"lat-{i}"
                before = pool_routes(ns)
                assert not before, f"stale routes in the pool: {before}"
                c0 = time.monotonic()
                core.create_namespaced_service("default", service(name))
                t0 = time.monotonic()
                first = all_ = None
                vip = None
                while time.monotonic() - t0 < TRIAL_TIMEOUT:
                    routes = pool_routes(ns)
                    now = time.monotonic()
                    if routes and first is None:
                        first, vip = now, next(iter(routes))
                    if vip and routes.get(vip, 0) >= 3:
                        all_ = now
                        break
                    time.sleep(poll_s)
                d0 = time.monotonic()
                core.delete_namespaced_service(name, "default")
                t1 = time.monotonic()
                gone = None
                while time.monotonic() - t1 < TRIAL_TIMEOUT:
                    if not pool_routes(ns):
                        gone = time.monotonic()
                        break
                    time.sleep(poll_s)
                row = {k: (v - base) * 1000 if v else None
                       for k, v, base in (("create_first", first, t0), ("create_all", all_, t0),
                                          ("delete_gone", gone, t1))}
                # the agents can act on a watch event before the API call's response is back, so
                # also from the moment the call was issued, and how long the calls took
                row.update(delete_gone_from_call=(gone - d0) * 1000 if gone else None,
                           create_call=(t0 - c0) * 1000, delete_call=(t1 - d0) * 1000)
                print(f"trial {i:2}{' (warm-up)' if i == 0 else ''}: " +
                      "  ".join(f"{k} {v:7.1f} ms" if v is not None else f"{k} FAILED" for k, v in row.items()),
                      flush=True)
                if i == 0:
                    continue
                if None in row.values():
                    failed.append(i)
                for k, v in row.items():
                    if v is not None:
                        res[k].append(v)
                time.sleep(0.3)                       # let the agents settle between trials
            return {"benchmark": "bgp_service_latency", "trials": trials, "failed_trials": failed,
                    "poll_ms": poll_s * 1000, "host": platform.node(), "kernel": platform.release(),
                    "lab": "3 nodes eBGP (AS 64513) -> FRR router AS 64512, ETP Cluster, pool lab-bgp",
                    "results": {k: summary(v, "ms", 1) for k, v in res.items() if v},
                    "raw_ms": {k: [round(x, 1) for x in v] for k, v in res.items()}}


def main() -> None:
    ap = arg_parser(__doc__, "bgp_service_latency")
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--poll-ms", type=float, default=10.0)
    a = ap.parse_args()
    out = run(a.trials, a.poll_ms / 1000)
    print_table("measure", out["results"], "ms", 1, 22, 8)
    if out["failed_trials"]:
        print(f"failed trials (no route within {TRIAL_TIMEOUT:.0f} s): {out['failed_trials']}")
    p50 = out["results"].get("create_first", {}).get("p50_ms")
    print(f"target create p50 <= 300 ms: {'met' if p50 is not None and p50 <= 300 else 'NOT met'} ({p50} ms)")
    write_json(Path(a.out), out)


if __name__ == "__main__":
    main()
