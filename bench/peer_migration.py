"""MetalLB -> metalxdp migration on the cluster lab, measured (issue 16, item 4): IPs kept, every Service reachable afterwards, the outage per path.

The cluster lab (real nodes: containerd, kubelet, kube-proxy; FRR router), once per trial.
MetalLB (the release pinned in scripts/metallb/VERSION: its own manifest, images built from the
Go modules) is installed as its users install it, with the lab's resources (an L2 pool and
L2Advertisement, a BGP pool, BGPAdvertisement and the IPv4 BGPPeer, as MetalLB's native BGP
mode accepts them) admitted by MetalLB's webhook (over metalxdp's CRDs: MetalLB v0.15.2's own
BGPPeer CRD refuses the lab's BGPPeer on Kubernetes 1.36, docs/compatibility.md);
one L2 Service and one BGP Service (IPv4) in front of 3 backends. Then docs/migration.md is
followed to the letter:

1. ``metalxdp config validate`` of the exported resources (must pass);
2. MetalLB's workloads removed, its CRDs and the resources kept: the ``speaker`` DaemonSet, the
   ``controller`` Deployment, ``metallb-webhook-configuration`` and ``metallb-webhook-service``
   (waiting until the speaker pods are gone, so no two announcers ever share port 7946);
3. ``kubectl apply -k`` of deploy/ (an overlay that only sets the image).

Throughout, the client requests each VIP 20 times a second (1 s timeout); the client's ARP entry
for the L2 VIP and the router's kernel route for the BGP VIP are sampled every 50 ms. Figures
per path: failed requests, the longest outage (first failed request -> first success after it),
VIP moves (ARP entry changes), time without a route at the router. Asserted: the same IPs before
and after, both Services answer afterwards. Exit status 1 when an assertion fails.

Usage (root): python bench/peer_migration.py [--trials 2]
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchstats import arg_parser, summary, write_json  # noqa: E402
from bench.peer_l2_failover import (VERSION, MacWatch, MetalLB, metallb_images,  # noqa: E402
                                    metallb_manifest)
from metalxdp.lab import kube_tools as kt  # noqa: E402
from metalxdp.lab.kube_cluster import ClusterLab, overlay  # noqa: E402
from metalxdp.lab.spec import NAMESPACE, LabSpec  # noqa: E402
from metalxdp.rig.procs import RigError, wait_for  # noqa: E402

# docs/migration.md, step 2 (native manifests): what is removed
REMOVE = [("daemonset", "speaker"), ("deployment", "controller"),
          ("validatingwebhookconfiguration", "metallb-webhook-configuration"),
          ("service", "metallb-webhook-service")]


class RouteWatch:
    """The router's kernel route for ``prefix``, sampled every 50 ms: (time, has a next hop)."""

    def __init__(self, lab: ClusterLab, prefix: str):
        self.lab, self.prefix, self.samples = lab, prefix, []
        self._done = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic(), bool(kt.router_nexthops(self.lab, self.prefix))))
            self._done.wait(0.05)

    def __enter__(self) -> "RouteWatch":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._t.join()

    def gaps(self) -> list[float]:
        out, start = [], None
        for t, ok in self.samples:
            if not ok and start is None:
                start = t
            elif ok and start is not None:
                out.append(round(t - start, 2))
                start = None
        if start is not None:
            out.append(round(self.samples[-1][0] - start, 2))
        return out


def outages(results: list[tuple[float, bool]]) -> list[float]:
    """Each run of failed requests: from the first failed one's send to the next success's send."""
    out, start = [], None
    for t, ok in sorted(results):
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            out.append(round(t - start, 2))
            start = None
    if start is not None:
        out.append(float("inf"))
    return out


def one_trial(lab: ClusterLab, k: int, manifest: Path, log) -> dict:
    mlb = MetalLB(lab, manifest, bgp=True)     # the lab's L2 and (native-mode) BGP resources
    t0 = time.monotonic()
    mlb.install()
    log(f"[trial {k}] MetalLB {VERSION} installed with the lab's resources in {time.monotonic() - t0:.1f} s")
    w = kt.Workload(lab, ns="migrate")
    w.backends("web", 3)
    (l2_ip,) = w.service("web-l2", "web", families=["IPv4"])
    (bgp_ip,) = w.service("web-bgp", "web", pool="lab-bgp", families=["IPv4"])
    kt.wait_curl(lab, l2_ip, timeout=120)
    kt.wait_curl(lab, bgp_ip, timeout=120)
    wait_for(f"the router's route to {bgp_ip}", lambda: kt.router_nexthops(lab, f"{bgp_ip}/32"), 120)
    before = w.ips()
    l2_node = kt.announcer(lab, l2_ip)
    log(f"  MetalLB serves L2 {l2_ip} (announced by {l2_node}) and BGP {bgp_ip} "
        f"(next hops {sorted(kt.router_nexthops(lab, f'{bgp_ip}/32'))})")

    # step 1: the resources validate with the parser metalxdp's controller and webhook use
    kinds = "ipaddresspools,l2advertisements,bgpadvertisements,bgppeers,bfdprofiles,communities"
    exported = lab.workdir / "metallb-resources.yaml"
    exported.write_text(lab.kubectl("get", kinds, "-A", "-o", "yaml").stdout)
    v = subprocess.run([sys.executable, "-m", "metalxdp.cli", "config", "validate", "-f", str(exported),
                        "--namespace", NAMESPACE], capture_output=True, text=True)
    if v.returncode:
        raise RigError(f"metalxdp config validate refused MetalLB's resources:\n{v.stdout}{v.stderr}")

    with MacWatch(lab, l2_ip) as mw, RouteWatch(lab, f"{bgp_ip}/32") as rw, \
            kt.Stream(lab, l2_ip, rate=20, timeout=1) as s_l2, kt.Stream(lab, bgp_ip, rate=20, timeout=1) as s_bgp:
        time.sleep(3)
        t_start = time.monotonic()
        # step 2: MetalLB's workloads go, its CRDs and the resources stay
        for kind, name in REMOVE:
            ns = [] if kind == "validatingwebhookconfiguration" else ["-n", NAMESPACE]
            lab.kubectl("delete", kind, name, *ns, "--ignore-not-found", "--wait=true", timeout=180)
        wait_for("MetalLB's speaker and controller pods gone", lambda: not [
            p for p in lab.pods() if p["metadata"].get("labels", {}).get("app") == "metallb"], 180, interval=0.5)
        t_removed = time.monotonic()
        # step 3: install metalxdp
        lab.kubectl("apply", "-k", str(overlay(lab.workdir, lab.images["metalxdp"].ref)))
        lab.wait_installed()
        t_installed = time.monotonic()
        wait_for(f"{l2_ip} and {bgp_ip} answering again", lambda: kt.client_curl(lab, l2_ip, timeout=1)
                 and kt.client_curl(lab, bgp_ip, timeout=1), 180, interval=0.2)
        time.sleep(10)                       # and steady: a late move or withdrawal would show
    after = w.ips()
    res = {"trial": k, "l2_ip": l2_ip, "bgp_ip": bgp_ip, "ips_before": before, "ips_after": after,
           "ips_unchanged": before == after,
           "metallb_removed_s": round(t_removed - t_start, 1), "metalxdp_installed_s": round(t_installed - t_start, 1)}
    for path, s in (("l2", s_l2), ("bgp", s_bgp)):
        o = outages(s.results)
        res[path] = {"requests": len(s.results), "failed": s.failed(), "outages_s": o,
                     "longest_outage_s": max(o) if o else 0.0,
                     "answers_after": kt.client_curl(lab, l2_ip if path == "l2" else bgp_ip, timeout=2) is not None}
    res["l2"]["vip_moves"] = mw.moves
    res["l2"]["announcer_before"] = l2_node
    res["l2"]["announcer_after"] = kt.announcer(lab, l2_ip)
    res["bgp"]["route_gaps_s"] = rw.gaps()
    log(f"  migrated: IPs {'unchanged' if res['ips_unchanged'] else 'CHANGED'}; MetalLB gone after "
        f"{res['metallb_removed_s']} s, metalxdp rolled out after {res['metalxdp_installed_s']} s")
    for path in ("l2", "bgp"):
        r = res[path]
        log(f"  {path}: {r['failed']} of {r['requests']} requests failed, longest outage {r['longest_outage_s']} s"
            + (f", VIP moves {r['vip_moves']} ({r['announcer_before']} -> {r['announcer_after']})" if path == "l2"
               else f", router without a route {r['route_gaps_s']} s"))
    w.close()
    lab.uninstall()
    wait_for("metalxdp gone", lambda: lab.kubectl("get", "ns", NAMESPACE, check=False).returncode != 0, 180)
    # MetalLB's leftovers (RBAC, CRDs, the namespace's other objects) go with its manifest
    lab.kubectl("delete", "-f", str(manifest), "--ignore-not-found", "--wait=true", timeout=300, check=False)
    return res


def main() -> None:
    ap = arg_parser(__doc__, "peer_migration")
    ap.add_argument("--trials", type=int, default=2)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    manifest = metallb_manifest()
    images = metallb_images()
    lab = ClusterLab(Path(tempfile.mkdtemp(prefix="peer-mig-")), spec=LabSpec())
    trials, t_all = [], time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)
    try:
        lab.up(progress=print, install=False)
        for node in lab.cluster.nodes.values():
            for _, tar in images.values():
                node.import_image(tar)
        for k in range(a.trials):
            trials.append(one_trial(lab, k + 1, manifest, print))
    finally:
        lab.down(remove=True)
    ok = all(t["ips_unchanged"] and t["l2"]["answers_after"] and t["bgp"]["answers_after"] for t in trials)
    rows = {p: {"failed_requests": [t[p]["failed"] for t in trials],
                "longest_outage": summary([t[p]["longest_outage_s"] for t in trials], "s", 2)} for p in ("l2", "bgp")}
    rows["l2"]["vip_moves"] = [t["l2"]["vip_moves"] for t in trials]
    rows["bgp"]["route_gap"] = summary([max(t["bgp"]["route_gaps_s"] or [0.0]) for t in trials], "s", 2)
    print(f"\nMetalLB {VERSION} -> metalxdp, {len(trials)} trials: IPs unchanged and both Services answer "
          f"afterwards: {'yes' if ok else 'NO'}")
    for p, r in rows.items():
        print(f"  {p}: failed requests {r['failed_requests']}, longest outage p50 {r['longest_outage']['p50_s']} s "
              f"(max {r['longest_outage']['max_s']} s)"
              + (f", VIP moves {r['vip_moves']}" if p == "l2" else
                 f", router without a route max {r['route_gap']['max_s']} s"))
    write_json(Path(a.out), {"metallb_version": VERSION, "trials": trials, "summary": rows, "ok": ok,
                             "seconds_total": round(time.monotonic() - t_all, 1)})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
