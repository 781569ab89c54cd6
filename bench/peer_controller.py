"""metalxdp's controller vs MetalLB's, same API server, same run (issue 16): Service create call
sent -> IP in status (seen by a watch), single creations alternating between the two, then a burst for each; controller
CPU per allocated Service. Prints both figures and the ratio; writes every trial.

Real parts: etcd + kube-apiserver from `make setup`; the real `metalxdp controller`; the real
MetalLB controller (`make metallb`: the release in scripts/metallb/VERSION built from Go
modules). Both run at once against the same API server, each with its own configuration
namespace and pool and its own loadBalancerClass, so each sees only its own Services; both with
their webhooks disabled (admission is not what is measured). Services are created with
``allocateLoadBalancerNodePorts: false`` so that bursts do not exhaust the NodePort range.

Usage (root): python bench/peer_controller.py [--single 50] [--burst 1000] [--clients 16]
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchrig import api_server_with_crds  # noqa: E402
from bench.benchstats import arg_parser, print_table, summary, write_json  # noqa: E402
from metalxdp.kube import client  # noqa: E402
from metalxdp.rig.procs import start, wait_for  # noqa: E402
from metalxdp.service import ingress_ips  # noqa: E402
from metalxdp.watch import Informer  # noqa: E402

IMPLS = {
    # name: (config namespace, loadBalancerClass, pool)
    "metalxdp": ("mx-system", "metalxdp.io/bench", "198.18.0.0/17"),
    "metallb": ("mlb-system", "metallb.io/bench", "198.18.128.0/17"),
}


def metallb_bin() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "metallb" / "build.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return Path(out)


def svc(name: str, lb_class: str) -> dict:
    return {"metadata": {"name": name, "labels": {"bench": "peer"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": lb_class,
                     "allocateLoadBalancerNodePorts": False, "ports": [{"port": 80}]}}


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = arg_parser(__doc__, "peer_controller")
    ap.add_argument("--single", type=int, default=50, help="single creations per implementation")
    ap.add_argument("--burst", type=int, default=1000, help="Services in each implementation's burst")
    ap.add_argument("--clients", type=int, default=16, help="concurrent creators in a burst")
    a = ap.parse_args()
    mlb = metallb_bin()
    version = (ROOT / "scripts" / "metallb" / "VERSION").read_text().strip()
    procs = {}
    with ExitStack() as stack:
        work, kc, api = stack.enter_context(api_server_with_crds("mx-peer-"))
        stack.callback(lambda: [p.stop() for p in procs.values()])
        core = client.CoreV1Api(api)
        co = client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": "bench"}})
        for impl, (ns, _cls, cidr) in IMPLS.items():
            core.create_namespace({"metadata": {"name": ns}})
            co.create_namespaced_custom_object("metallb.io", "v1beta1", ns, "ipaddresspools", {
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": impl},
                "spec": {"addresses": [cidr]}})
        procs["metalxdp"] = start("metalxdp-controller", [
            sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc, "--namespace", "mx-system",
            "--lb-class", IMPLS["metalxdp"][1], "--webhook-mode", "disabled", "--metrics-port", "0",
            "--log-level", "error"], work / "logs")
        procs["metallb"] = start("metallb-controller", [
            str(mlb / "controller"), "--kubeconfig", kc, "--namespace", "mlb-system",
            "--lb-class", IMPLS["metallb"][1], "--webhook-mode", "disabled", "--disable-cert-rotation",
            # no --ml-secret-name: the memberlist key is the speakers' business, not measured here
            "--port", "17472", "--log-level", "error"], work / "logs")

        created: dict[str, float] = {}
        got_ip: dict[str, float] = {}
        ips: dict[str, str] = {}

        def on_event(typ, obj):
            name = obj["metadata"]["name"]
            if ingress_ips(obj) and name not in got_ip:
                got_ip[name] = time.perf_counter()
                ips[name] = ingress_ips(obj)[0]
        inf = Informer(api, "/api/v1/namespaces/bench/services", on_event).start()
        inf.wait_synced()
        for impl, (_ns, cls, _c) in IMPLS.items():      # warm-up: leading, config loaded
            core.create_namespaced_service("bench", svc(f"{impl}-warmup", cls))
            wait_for(f"{impl}'s warm-up Service to get an IP", lambda: f"{impl}-warmup" in got_ip, 120,
                     proc=procs[impl])

        single = {impl: [] for impl in IMPLS}
        for i in range(a.single):                        # alternating trials
            for impl, (_ns, cls, _c) in (IMPLS.items() if i % 2 == 0 else reversed(IMPLS.items())):
                name = f"{impl}-single-{i}"
                created[name] = time.perf_counter()     # from the create call being sent
                core.create_namespaced_service("bench", svc(name, cls))
                wait_for(f"{name} IP", lambda: name in got_ip, 30, proc=procs[impl])
                single[impl].append((got_ip[name] - created[name]) * 1000)

        burst, burst_rate, cpu_per = {}, {}, {}
        lock = threading.Lock()

        def create(name_cls):
            name, cls = name_cls
            with lock:
                created[name] = time.perf_counter()
            core.create_namespaced_service("bench", svc(name, cls))
        for impl, (_ns, cls, _c) in IMPLS.items():
            names = [f"{impl}-burst-{i}" for i in range(a.burst)]
            c0, t0 = cpu_s(procs[impl].popen.pid), time.perf_counter()
            with ThreadPoolExecutor(a.clients) as ex:
                list(ex.map(create, [(n, cls) for n in names]))
            wait_for(f"every {impl} burst Service has an IP", lambda: all(n in got_ip for n in names), 900,
                     proc=procs[impl], interval=0.2)
            t_done = max(got_ip[n] for n in names)
            cpu_per[impl] = (cpu_s(procs[impl].popen.pid) - c0) / a.burst * 1000
            burst[impl] = [(got_ip[n] - created[n]) * 1000 for n in names]
            burst_rate[impl] = a.burst / (t_done - t0)
        # each controller's IPs unique and from its own pool
        for impl, (_ns, _cls, cidr) in IMPLS.items():
            mine = [ip for n, ip in ips.items() if n.startswith(impl + "-")]
            assert len(set(mine)) == len(mine), f"{impl} gave an IP twice"
        rows = {f"{impl} single": summary(single[impl], "ms", 1) for impl in IMPLS}
        rows.update({f"{impl} burst": summary(burst[impl], "ms", 1) for impl in IMPLS})
        print_table("Service created -> IP", rows, "ms", 1, 18, 8)
        ratio = lambda k, f: rows[f"metallb {k}"][f] / rows[f"metalxdp {k}"][f]  # noqa: E731
        print(f"\nsingle p50: metalxdp {rows['metalxdp single']['p50_ms']} ms, MetalLB {version} "
              f"{rows['metallb single']['p50_ms']} ms (MetalLB/metalxdp {ratio('single', 'p50_ms'):.2f}x)")
        print(f"burst of {a.burst}: metalxdp {burst_rate['metalxdp']:.0f}/s, MetalLB {burst_rate['metallb']:.0f}/s; "
              f"controller CPU per Service: metalxdp {cpu_per['metalxdp']:.2f} ms, MetalLB "
              f"{cpu_per['metallb']:.2f} ms")
        write_json(Path(a.out), {
            "metallb_version": version, "single_per_impl": a.single, "burst": a.burst, "clients": a.clients,
            "summary": rows, "burst_rate_per_s": {k: round(v, 1) for k, v in burst_rate.items()},
            "cpu_ms_per_service": {k: round(v, 3) for k, v in cpu_per.items()},
            "ratio_metallb_over_metalxdp": {"single_p50": round(ratio("single", "p50_ms"), 2),
                                            "single_p99": round(ratio("single", "p99_ms"), 2),
                                            "burst_p50": round(ratio("burst", "p50_ms"), 2),
                                            "burst_rate": round(burst_rate["metallb"] / burst_rate["metalxdp"], 2),
                                            "cpu_per_service": round(cpu_per["metallb"] / cpu_per["metalxdp"], 2)},
            "trials_ms": {"single": single, "burst": burst}})
        inf.stop()


if __name__ == "__main__":
    main()
