"""Churn soak (issue 19): Services created and deleted at a steady rate for a long time in the
network-namespace lab, while the controller's and every agent's memory, threads and file
descriptors, the pinned BPF objects, the VIP map and the lab's namespaces are sampled. Nothing
may grow with time: the figure per resource is the first and last sample after warm-up and the
least-squares slope per hour.

Real parts: the lab (`metalxdp lab up`: etcd + kube-apiserver, the controller, one agent per
node with XDP and ExaBGP, FRR). The churn: a rolling window of ``--window`` LoadBalancer
Services in their own pool (198.51.100.128/25, announced over L2 from every node); every
1/``--rate`` s the oldest is deleted and a new one created, so ``--rate`` creations and as many
deletions per second reach the controller and the agents.

Prints figures and writes bench/results/churn_soak.json (every sample included).
Usage (root): python bench/churn_soak.py [--minutes 60] [--rate 10] [--window 100] [--sample-s 30]
Exit status 1 if a resource grew (see GROWTH_LIMITS).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchstats import arg_parser, write_json  # noqa: E402
from metalxdp.kube import api_client, client  # noqa: E402
from metalxdp.lab.cluster import Lab, kubectl, running_lab  # noqa: E402
from metalxdp.lab.spec import NAMESPACE  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

POOL = "soak"
NODES = ("node1", "node2", "node3")
# growth over the whole run (last fit value - first fit value) that counts as a leak
GROWTH_LIMITS = {"rss_kib": 20 * 1024, "threads": 3, "fds": 10, "children": 1,
                 "pinned": 0, "netns": 0}


def proc_facts(pid: int) -> dict:
    """RSS (KiB, the process and its children: ExaBGP under the agent), threads, fds, children."""
    def one(p: int) -> tuple[int, int]:
        rss = threads = 0
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        return rss, threads
    rss, threads = one(pid)
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    for k in kids:
        try:
            rss += one(k)[0]
        except OSError:
            pass
    return {"rss_kib": rss, "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "children": len(kids)}


def pinned_objects(lab_id: str) -> int:
    """Pinned maps and programs of this lab's nodes (/sys/fs/bpf/metalxdp/<lab id>-<node>)."""
    base = Path("/sys/fs/bpf/metalxdp")
    dirs = [d for d in base.iterdir() if d.name.startswith(lab_id)] if base.exists() else []
    return sum(len(files) for d in dirs for _, _, files in os.walk(d))


def netns_count(lab_id: str) -> int:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith(lab_id))


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den * 3600 if den else 0.0


def svc(name: str) -> dict:
    return {"metadata": {"name": name, "annotations": {"metallb.io/address-pool": POOL}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "soak"},
                     "ports": [{"port": 80, "targetPort": 8080}]}}


class Churn(threading.Thread):
    """(Method names avoid threading.Thread._delete, which the thread calls when it ends.)
    Every 1/rate s: one create, and one delete of the oldest Service once ``window`` exist.
    The calls go through a small pool of API clients so the rate does not depend on one
    call's latency; a Service is deleted only after its create returned."""

    def __init__(self, core, rate: float, window: int, workers: int = 8):
        super().__init__(daemon=True)
        self.core, self.rate, self.window = core, rate, window
        self.pool = ThreadPoolExecutor(workers)
        self.live: deque = deque()       # (name, future of its create)
        self.created = self.deleted = self.errors = 0
        self.stop = threading.Event()

    def _call(self, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception as e:   # noqa: BLE001 - counted and reported; the soak goes on
            self.errors += 1
            if self.errors <= 5:
                print(f"churn: {e}", file=sys.stderr, flush=True)
            return False

    def _delete_svc(self, name: str, created) -> None:
        if created.result() and self._call(self.core.delete_namespaced_service, name, "default"):
            self.deleted += 1

    def _create_svc(self, name: str) -> bool:
        ok = self._call(self.core.create_namespaced_service, "default", svc(name))
        self.created += ok
        return ok

    def run(self) -> None:
        i, period = 0, 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            if len(self.live) >= self.window:
                self.pool.submit(self._delete_svc, *self.live.popleft())
            name = f"soak-{i}"
            self.live.append((name, self.pool.submit(self._create_svc, name)))
            i += 1
            # behind schedule (the machine is busy): skip the missed slots rather than burst,
            # so the rate reported is the one sustained
            nxt = max(nxt + period, time.monotonic() - period)
            time.sleep(max(0.0, nxt - time.monotonic()))
        self.pool.shutdown(wait=True)


def sample(lab: Lab, core, t0: float) -> dict:
    """Resource facts, plus how many of the soak's live Services have an address (the system
    must be doing the work, not just not growing)."""
    st = lab.load()
    soak = [x for x in core.list_namespaced_service("default").items if x.metadata.name.startswith("soak-")]
    with_ip = sum(1 for x in soak if x.status.load_balancer and x.status.load_balancer.ingress)
    s = {"t_s": round(time.monotonic() - t0, 1), "pinned": pinned_objects(st["id"]),
         "netns": netns_count(st["id"]), "services": len(soak), "with_ip": with_ip}
    for name in ["controller"] + [f"agent-{n}" for n in NODES]:
        s[name] = proc_facts(st["pids"][name])
    return s


def main() -> None:
    ap = arg_parser(__doc__, "churn_soak")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rate", type=float, default=10, help="Services created (and deleted) per second")
    ap.add_argument("--window", type=int, default=100, help="Services alive at once")
    ap.add_argument("--sample-s", type=float, default=30)
    ap.add_argument("--warmup-s", type=float, default=120, help="samples before this are not fitted")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mx-soak-"))
    with running_lab("soak", root) as lab:
        kc = lab.kubeconfig()
        for obj in (
                {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                 "metadata": {"name": POOL, "namespace": NAMESPACE},
                 "spec": {"addresses": ["198.51.100.128/25"], "autoAssign": False}},
                {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                 "metadata": {"name": POOL, "namespace": NAMESPACE}, "spec": {"ipAddressPools": [POOL]}}):
            import json
            kubectl(kc, "apply", "-f", "-", input_=json.dumps(obj))
        for n in NODES:
            lab.add_backend(f"soak-{n}", n, {"app": "soak"})
        core = client.CoreV1Api(api_client(kc))
        churn = Churn(core, a.rate, a.window)
        t0 = time.monotonic()
        churn.start()
        samples = []
        end = t0 + a.minutes * 60
        while time.monotonic() < end:
            samples.append(sample(lab, core, t0))
            s = samples[-1]
            print(f"  t={s['t_s']:7.0f}s created {churn.created} deleted {churn.deleted} errors "
                  f"{churn.errors}; controller {s['controller']['rss_kib'] // 1024} MiB "
                  f"{s['controller']['threads']} thr {s['controller']['fds']} fd; agent-node1 "
                  f"{s['agent-node1']['rss_kib'] // 1024} MiB {s['agent-node1']['threads']} thr "
                  f"{s['agent-node1']['fds']} fd; pinned {s['pinned']}; netns {s['netns']}; "
                  f"{s['with_ip']}/{s['services']} with an IP", flush=True)
            time.sleep(max(0.0, min(a.sample_s, end - time.monotonic())))
        churn.stop.set()
        churn.join()
        # drain: delete the window, then everything must be released
        for name, created in list(churn.live):
            if created.result():
                core.delete_namespaced_service(name, "default")
        wait_for("the soak's Services gone", lambda: not [
            x for x in core.list_namespaced_service("default").items if x.metadata.name.startswith("soak-")], 120)
        time.sleep(5)
        samples.append(sample(lab, core, t0))
        fitted = [s for s in samples[:-1] if s["t_s"] >= a.warmup_s] or samples[:-1]
        rows, grew = {}, []
        for who in ["controller"] + [f"agent-{n}" for n in NODES] + ["lab"]:
            keys = ("pinned", "netns") if who == "lab" else ("rss_kib", "threads", "fds", "children")
            for k in keys:
                ys = [(s[k] if who == "lab" else s[who][k]) for s in fitted]
                ts = [s["t_s"] for s in fitted]
                sl = slope_per_hour(ts, ys)
                growth = sl * (ts[-1] - ts[0]) / 3600 if len(ts) > 1 else 0.0
                rows[f"{who}.{k}"] = {"first": ys[0], "last": ys[-1], "min": min(ys), "max": max(ys),
                                      "slope_per_h": round(sl, 2), "fitted_growth": round(growth, 2)}
                if growth > GROWTH_LIMITS[k]:
                    grew.append(f"{who}.{k}")
        after = samples[-1]
        print(f"\n{'resource':24} {'first':>9} {'last':>9} {'min':>9} {'max':>9} {'slope/h':>9}")
        for k, r in rows.items():
            print(f"{k:24} {r['first']:9} {r['last']:9} {r['min']:9} {r['max']:9} {r['slope_per_h']:9.1f}")
        print(f"\n{a.minutes:g} min, {churn.created} Services created and {churn.deleted} deleted "
              f"({churn.errors} API errors); after the drain: pinned {after['pinned']}, netns "
              f"{after['netns']}; grew: {', '.join(grew) or 'nothing'}")
        write_json(Path(a.out), {
            "minutes": a.minutes, "rate_per_s": a.rate, "window": a.window, "created": churn.created,
            "deleted": churn.deleted, "api_errors": churn.errors, "growth_limits": GROWTH_LIMITS,
            "resources": rows, "grew": grew, "after_drain": after, "samples": samples})
        if grew:
            sys.exit(1)


if __name__ == "__main__":
    main()
