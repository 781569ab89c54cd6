"""Where the time goes from a BGP Service's creation to its route at the router, metalxdp vs
MetalLB itself, same run (issue 16: the announce row where metalxdp was behind, profiled).

Two process labs run at once (``metalxdp lab up`` and ``metalxdp lab up --lb metallb``: MetalLB
v(scripts/metallb/VERSION)'s controller and speakers, native BGP), each with 3 nodes peering
with its own FRR router; trials alternate between them (metalxdp first in even trials). Per
trial a Service in ``lab-bgp`` is created, and these moments are taken:

  ip            the create call returned -> the IP in the Service's status (the controller)
  update_first  -> the first BGP UPDATE carrying the /32 reaches the router (tcpdump in the
                router's namespace: the speaker / agent path, incl. ExaBGP for metalxdp)
  update_all    -> the UPDATE of the third node
  route_first   -> the /32 in the router's kernel (pyroute2, polled every 5 ms)
  route_all     -> with all 3 next hops
and the stages: controller = ip; node = update_first - ip; router = route_all - update_all.
Then the Service is deleted and the route's disappearance awaited.

Usage (root): python bench/peer_bgp_stages.py [--trials 20]
Writes bench/results/peer_bgp_stages.json (every trial).
"""
from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyroute2 import NetNS  # noqa: E402

from bench.benchstats import arg_parser, write_json  # noqa: E402
from bench.bgp_service_latency import pool_routes, service  # noqa: E402  (the same lab-bgp /32s, Service)
from metalxdp.kube import api_client, client  # noqa: E402
from metalxdp.lab.cluster import running_lab  # noqa: E402
from metalxdp.lab.spec import LabSpec  # noqa: E402
from metalxdp.rig.frr import FRRRouter  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

IMPLS = ("metalxdp", "metallb")
TIMEOUT = 15.0


class UpdateWatch:
    """tcpdump of BGP on the router: wall-clock time of the first UPDATE announcing each /32
    from each node (``first[(prefix, node_ip)]``), and of the first withdrawing it (``gone``)."""

    def __init__(self, netns: str):
        self.first: dict[tuple[str, str], float] = {}
        self.gone: dict[tuple[str, str], float] = {}
        self.p = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-i", "eth0", "-nn", "-tt", "-v", "-l",
                                   "tcp port 179"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        ts, src, section = 0.0, "", ""
        for line in self.p.stdout:
            m = re.match(r"^(\d+\.\d+) IP", line)   # with -v: "<ts> IP (tos ...)", then "    <src>.<port> > ..."
            if m:
                ts, src, section = float(m.group(1)), "", ""
                continue
            m = re.match(r"^\s+(\d+\.\d+\.\d+\.\d+)\.\d+ > ", line)
            if m and not src:
                src = m.group(1)
                continue
            s = line.strip()
            if s.startswith("Updated routes:"):
                section = "up"
            elif s.startswith("Withdrawn routes:"):
                section = "down"
            elif section in ("up", "down") and re.match(r"^\d+\.\d+\.\d+\.\d+/32", s):
                (self.first if section == "up" else self.gone).setdefault((s.split()[0].split("/")[0], src), ts)

    def close(self) -> None:
        self.p.terminate()


class Side:
    def __init__(self, lab, impl: str):
        self.lab, self.impl = lab, impl
        self.core = client.CoreV1Api(api_client(lab.kubeconfig()))
        self.ns = NetNS(lab.host("router").netns)
        self.watch = UpdateWatch(lab.host("router").netns)
        self.nodes = [lab.host(n).ip4 for n in ("node1", "node2", "node3")]

    def trial(self, name: str) -> dict:
        assert not pool_routes(self.ns), "stale routes in the pool"
        self.core.create_namespaced_service("default", service(name))
        t0, wall_t0 = time.monotonic(), time.time()   # the call returned (tcpdump stamps wall clock)
        ip = ip_t = route_first = route_all = None
        while time.monotonic() - t0 < TIMEOUT:
            now = time.monotonic()
            if ip is None:
                s = self.core.read_namespaced_service(name, "default")
                ing = (s.status.load_balancer.ingress or []) if s.status and s.status.load_balancer else []
                if ing:
                    ip, ip_t = ing[0].ip, now
            if ip:
                hops = pool_routes(self.ns).get(ip, 0)
                if hops and route_first is None:
                    route_first = now
                if hops >= 3:
                    route_all = now
                    break
            time.sleep(0.005)
        if route_all is None:
            raise RuntimeError(f"{self.impl} {name}: no route with 3 next hops within {TIMEOUT} s (ip {ip})")
        time.sleep(0.3)
        ups = [self.watch.first.get((ip, n)) for n in self.nodes]
        if None in ups:
            raise RuntimeError(f"{self.impl} {name}: UPDATEs seen from {ups} for {ip}")
        row = {"ip": ip_t - t0, "update_first": min(ups) - wall_t0, "update_all": max(ups) - wall_t0,
               "route_first": route_first - t0, "route_all": route_all - t0}
        row = {k: round(v * 1000, 1) for k, v in row.items()}
        row["stage_controller"] = row["ip"]
        row["stage_node"] = round(row["update_first"] - row["ip"], 1)
        row["stage_nodes_spread"] = round(row["update_all"] - row["update_first"], 1)
        row["stage_router"] = round(row["route_all"] - row["update_all"], 1)
        self.core.delete_namespaced_service(name, "default")
        for d in (self.watch.first, self.watch.gone):
            for k in [k for k in d if k[0] == ip]:
                del d[k]
        wait_for(f"{ip} withdrawn", lambda: ip not in pool_routes(self.ns), 30, interval=0.02)
        time.sleep(0.3)
        return row

    def close(self) -> None:
        self.watch.close()
        self.ns.close()


def stats(v: list[float]) -> dict:
    return {"p50": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def main() -> None:
    ap = arg_parser(__doc__, "peer_bgp_stages")
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {i: [] for i in IMPLS}
    with contextlib.ExitStack() as stack:
        sides = {}
        for impl in IMPLS:
            print(f"bringing the {impl} lab up ...", flush=True)
            lab = stack.enter_context(running_lab(f"stg{impl[:4]}", Path(tempfile.mkdtemp(prefix="mx-stages-")),
                                                  LabSpec(lb=impl)))
            frr = FRRRouter(lab.host("router"), Path(lab.load()["frr_dir"]))
            want = 6 if impl == "metalxdp" else 3      # MetalLB's native mode: the IPv4 peer only
            wait_for(f"{impl}: {want} BGP sessions", lambda: len(frr.established()) >= want, 90)
            lab.add_backend("lat", "node2", {"app": "lat"})
            sides[impl] = stack.enter_context(contextlib.closing(Side(lab, impl)))
        for impl in IMPLS:                      # warm-up, not counted
            sides[impl].trial("warm")
        for i in range(a.trials):
            for impl in (IMPLS if i % 2 == 0 else IMPLS[::-1]):
                r = sides[impl].trial(f"s{i}")
                rows[impl].append(r)
                print(f"trial {i:2} {impl:8s} " + "  ".join(f"{k} {v:6.1f}" for k, v in r.items()), flush=True)
    keys = list(rows["metalxdp"][0])
    summ = {impl: {k: stats([r[k] for r in rows[impl]]) for k in keys} for impl in IMPLS}
    ratio = {k: (summ["metallb"][k]["p50"] / summ["metalxdp"][k]["p50"] if summ["metalxdp"][k]["p50"] else None)
             for k in keys}
    print(f"\n{'ms (p50, min-max)':22s} {'metalxdp':>24s} {'MetalLB':>24s}  MetalLB/metalxdp")
    for k in keys:
        x, m = summ["metalxdp"][k], summ["metallb"][k]
        print(f"{k:22s} {x['p50']:8.1f} ({x['min']:6.1f}-{x['max']:6.1f}) {m['p50']:8.1f} ({m['min']:6.1f}-{m['max']:6.1f})  "
              f"{'' if ratio[k] is None else f'{ratio[k]:.2f}x'}")
    write_json(Path(a.out), {"trials": a.trials, "summary_ms": summ, "ratio_metallb_over_metalxdp": ratio,
                             "raw_ms": rows})


if __name__ == "__main__":
    main()
