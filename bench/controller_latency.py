"""Controller benchmark: time from Service creation (the create call returns) to its IP in
status.loadBalancer.ingress, as seen by a watch, for single creations and for a burst; plus the
pure allocator's rate (bench/allocator_bench.py has the detailed figures).

Real parts: etcd + kube-apiserver from `make setup`, the real `metalxdp controller` process.
Prints figures and writes bench/results/controller_latency.json.
Usage: python bench/controller_latency.py [--single 50] [--burst 2000] [--writers 16]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metalxdp.kube import api_client, client  # noqa: E402
from metalxdp.lab.cluster import CRD_DIR, kubectl  # noqa: E402
from metalxdp.rig.apiserver import start_control_plane  # noqa: E402
from metalxdp.rig.procs import start, wait_for  # noqa: E402
from metalxdp.service import ingress_ips  # noqa: E402
from metalxdp.watch import Informer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def svc(name):
    return {"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--single", type=int, default=50)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16, help="concurrent creators in the burst")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mx-bench-"))
    cp = start_control_plane(work / "cp", controller_manager=False)
    ctl = None
    try:
        kc = str(cp.kubeconfig)
        kubectl(kc, "apply", "-f", str(CRD_DIR))
        kubectl(kc, "wait", "--for=condition=Established", "crd", "--all")
        api = api_client(kc)
        core = client.CoreV1Api(api)
        for ns in ("metallb-system", "bench"):
            core.create_namespace({"metadata": {"name": ns}})
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
            {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bench"},
             "spec": {"addresses": ["198.18.0.0/16"]}})
        ctl = start("controller", [sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc,
                                   "--webhook-mode", "disabled", "--metrics-port", "0", "--log-level", "error"],
                    work / "logs")
        created: dict[str, float] = {}
        got_ip: dict[str, float] = {}

        def on_event(typ, obj):
            name = obj["metadata"]["name"]
            if ingress_ips(obj) and name not in got_ip:
                got_ip[name] = time.perf_counter()
        inf = Informer(api, "/api/v1/namespaces/bench/services", on_event).start()
        inf.wait_synced()
        # warm-up: the controller must be leading and have loaded its config
        core.create_namespaced_service("bench", svc("warmup"))
        wait_for("warm-up service IP", lambda: "warmup" in got_ip, 60, proc=ctl)

        single = []
        for i in range(a.single):
            name = f"single-{i}"
            core.create_namespaced_service("bench", svc(name))
            created[name] = time.perf_counter()
            wait_for(f"{name} IP", lambda: name in got_ip, 30, proc=ctl)
            single.append((got_ip[name] - created[name]) * 1000)

        names = [f"burst-{i}" for i in range(a.burst)]
        lock = threading.Lock()

        def create(name):
            core.create_namespaced_service("bench", svc(name))
            with lock:
                created[name] = time.perf_counter()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.clients) as ex:
            list(ex.map(create, names))
        t_created = time.perf_counter()
        wait_for("every burst service has an IP", lambda: all(n in got_ip for n in names), 600, proc=ctl,
                 interval=0.2)
        t_done = max(got_ip[n] for n in names)
        burst = [(got_ip[n] - created[n]) * 1000 for n in names]
        ips = [i.ip for s in core.list_namespaced_service("bench").items
               for i in (s.status.load_balancer.ingress or [])]
        # backlog: services created while the controller is down; the controller's own rate.
        # The burst's services go first: 4,000 LoadBalancers would exhaust the NodePort range.
        ips = [i.ip for s in core.list_namespaced_service("bench").items
               for i in (s.status.load_balancer.ingress or [])]
        unique_burst = len(set(ips)) == len(ips)
        ctl.stop()
        with ThreadPoolExecutor(a.clients) as ex:
            list(ex.map(lambda n: core.delete_namespaced_service(n, "bench"), names))
        backlog = [f"backlog-{i}" for i in range(a.burst)]
        with ThreadPoolExecutor(a.clients) as ex:
            list(ex.map(lambda n: core.create_namespaced_service("bench", svc(n)), backlog))
        t_start = time.perf_counter()
        ctl = start("controller2", [sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc,
                                    "--webhook-mode", "disabled", "--metrics-port", "0", "--log-level", "error",
                                    "--lease-duration", "2"], work / "logs")
        wait_for("every backlog service has an IP", lambda: all(n in got_ip for n in backlog), 600, proc=ctl,
                 interval=0.2)
        first = min(got_ip[n] for n in backlog)
        last = max(got_ip[n] for n in backlog)
        res_backlog = {"n": a.burst, "from_start_s": round(last - t_start, 2),
                       "first_ip_after_start_s": round(first - t_start, 2),
                       "allocated_rate_per_s": round(a.burst / (last - first), 1)}
        ips = [i.ip for s in core.list_namespaced_service("bench").items
               for i in (s.status.load_balancer.ingress or [])]
        res = {
            "backlog": res_backlog,
            "single": {"n": len(single), "p50_ms": round(pct(single, 50), 1), "p99_ms": round(pct(single, 99), 1),
                       "min_ms": round(min(single), 1), "max_ms": round(max(single), 1)},
            "burst": {"n": a.burst, "clients": a.clients,
                      "create_rate_per_s": round(a.burst / (t_created - t0), 1),
                      "allocated_rate_per_s": round(a.burst / (t_done - t0), 1),
                      "p50_ms": round(pct(burst, 50), 1), "p99_ms": round(pct(burst, 99), 1),
                      "max_ms": round(max(burst), 1)},
            "unique_ips": unique_burst and len(set(ips)) == len(ips), "services_with_ip_at_end": len(ips),
            "targets": {"single_p99_ms": 200, "burst_services_per_s": 200},
        }
        print(json.dumps(res, indent=2))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "controller_latency.json").write_text(json.dumps(res, indent=2) + "\n")
        inf.stop()
    finally:
        if ctl:
            ctl.stop()
        cp.stop()


if __name__ == "__main__":
    main()
