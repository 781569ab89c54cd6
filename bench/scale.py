"""Scale (issue 20): 5,000 LoadBalancer Services in the network-namespace lab. What one more
Service costs the agents (created -> IP in status -> the elected node answers ARP for it), how
long one agent reconcile pass takes with that many Services, and the controller's full resync
of all of them when a new leader starts.

Real parts: the lab (`metalxdp lab up`: etcd + kube-apiserver + kube-controller-manager, the
controller, one agent per node with XDP and ExaBGP, FRR). The lab's kube-proxy stand-in is
stopped first: it re-renders one nftables ruleset for every Service on each change, which is
the lab's cost, not metalxdp's, and would compete for the same two cores. The Services have no
selector; each gets one EndpointSlice (one ready endpoint) written by the bench, so every
Service is announced over L2 by the node MetalLB's hash elects (pool 198.19.0.0/19).

1. Burst: ``--services`` Services (and their EndpointSlices) created by 8 clients; figures:
   created -> every one has an IP, -> the agents announce every one (sum of
   metallb_speaker_announced over the nodes).
2. Per change: ``--trials`` more Services, one at a time, each asking for its own IP
   (metallb.io/loadBalancerIPs); the client sends an ARP request for that IP every 10 ms from
   before the create. Figures: create -> IP in status (a watch), create -> first ARP reply,
   and their difference (what the agent and XDP add). Each node's
   metalxdp_agent_reconcile_seconds during these trials gives the mean pass.
3. Full resync: ``--resyncs`` times the controller is stopped (SIGTERM) and a new one started;
   figures: the resync the new leader logs (resyncFinished: listing the Services, learning
   their IPs, reprocessing each; target < 2 s), process start -> resync finished, and that it
   wrote nothing.

Prints the figures and writes bench/results/scale.json (every trial included).
Usage (root): python bench/scale.py [--services 5000] [--trials 20] [--resyncs 5]
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchstats import arg_parser, print_table, summary, write_json  # noqa: E402
from metalxdp.kube import ApiException, api_client, apply, client  # noqa: E402
from metalxdp.lab import tools as lt  # noqa: E402
from metalxdp.lab.cluster import running_lab  # noqa: E402
from metalxdp.lab.spec import NAMESPACE, LabSpec  # noqa: E402
from metalxdp.rig.procs import start, stop_pid, wait_for  # noqa: E402
from metalxdp.service import ingress_ips  # noqa: E402
from metalxdp.watch import Informer  # noqa: E402

NS = "scale"
POOL = "198.19.0.0/19"          # 8,192 addresses: the burst takes the lowest, trials ask for the top
TRIAL_BASE = IPv4Address("198.19.31.0")
NODES = ("node1", "node2", "node3")


def service(name: str, ip: str = "") -> dict:
    ann = {"metallb.io/loadBalancerIPs": ip} if ip else {}
    return {"metadata": {"name": name, "annotations": ann},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                     "ports": [{"port": 80, "protocol": "TCP"}]}}


def endpoint_slice(name: str, i: int) -> dict:
    node = NODES[i % len(NODES)]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-bench", "labels": {
                "kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "bench.metalxdp.io"}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP", "name": ""}],
            "endpoints": [{"addresses": [f"198.18.{1 + i % len(NODES)}.10"], "nodeName": node,
                           "conditions": {"ready": True, "serving": True, "terminating": False}}]}


def announced(lab) -> int:
    total = 0
    for n in NODES:
        total += sum(1 for (name, labels), v in lt.node_metrics(lab, n).items()
                     if name == "metallb_speaker_announced" and v == 1 and ("protocol", "layer2") in labels
                     and dict(labels).get("service", "").startswith(f"{NS}/"))
    return total


def reconcile_hist(lab) -> dict[str, tuple[float, float]]:
    out = {}
    for n in NODES:
        m = lt.node_metrics(lab, n)
        out[n] = (lt.metric(m, "metalxdp_agent_reconcile_seconds_sum") or 0.0,
                  lt.metric(m, "metalxdp_agent_reconcile_seconds_count") or 0.0)
    return out


class FirstIP:
    """Watches the bench namespace: monotonic time each Service was first seen with an IP."""

    def __init__(self, api):
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.inf = Informer(api, f"/api/v1/namespaces/{NS}/services", self._event)

    def _event(self, _typ: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if ingress_ips(obj):
            with self.lock:
                self.seen.setdefault(name, time.monotonic())


def arp_probe(lab, ip: str, out: dict) -> None:
    """ARP requests for ``ip`` every 10 ms until the first reply; out['t'] = when it came."""
    r = subprocess.run(["ip", "netns", "exec", lab.topology().hosts["client"].netns, "arping", "-r", "-C", "1",
                        "-c", "100000", "-W", "0.01", "-w", "60", "-i", "eth0", ip],
                       capture_output=True, text=True, timeout=90)
    out["t"] = time.monotonic()
    out["mac"] = r.stdout.strip().lower()


def controller_cmd(kc: str, port: int, identity: str) -> list[str]:
    return [sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc, "--namespace", NAMESPACE,
            "--webhook-mode", "disabled", "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
            "--lease-duration", "5", "--identity", identity]


def log_event(path: Path, event: str) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def main() -> None:
    ap = arg_parser(__doc__, "scale")
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--resyncs", type=int, default=5)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("scale: needs root (network namespaces, XDP)")
    root = Path(tempfile.mkdtemp(prefix="mx-scale-"))
    res: dict = {"services": a.services, "nodes": len(NODES)}
    with running_lab("scale", root, LabSpec(webhook=False)) as lab:
        try:
            run(lab, a, res)
        except BaseException:
            keep = Path(tempfile.mkdtemp(prefix="mx-scale-logs-"))
            shutil.copytree(lab.dir / "logs", keep / "logs", dirs_exist_ok=True)
            print(f"scale: failed; the lab's logs are kept in {keep}", file=sys.stderr, flush=True)
            raise
    report(a, res)


def run(lab, a, res: dict) -> None:
    if True:
        state = lab.load()
        stop_pid(state["pids"]["lab-proxy"])
        kc = lab.kubeconfig()
        api = api_client(kc)
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        for obj in ({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                     "metadata": {"name": "scale", "namespace": NAMESPACE}, "spec": {"addresses": [POOL]}},
                    {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                     "metadata": {"name": "scale", "namespace": NAMESPACE}, "spec": {"ipAddressPools": ["scale"]}}):
            apply(api, obj)
        watch = FirstIP(api)
        watch.inf.start()
        watch.inf.wait_synced(60)

        # ---- 1. the burst ------------------------------------------------------------------
        names = [f"s{i:05d}" for i in range(a.services)]

        def create(i: int) -> None:
            for attempt in range(5):
                try:
                    disc.create_namespaced_endpoint_slice(NS, endpoint_slice(names[i], i))
                    break
                except ApiException as e:
                    if e.status == 409:
                        break
                    time.sleep(0.2 * (attempt + 1))
            last = None
            for attempt in range(5):
                try:
                    core.create_namespaced_service(NS, service(names[i]))
                    return
                except ApiException as e:
                    if e.status == 409:
                        return
                    last = f"{e.status} {e.reason}: {(e.body or '')[:300]}"
                    time.sleep(0.2 * (attempt + 1))
            raise RuntimeError(f"could not create {names[i]}: {last}")
        print(f"creating {a.services} Services with their EndpointSlices ...", flush=True)
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(create, range(a.services)))
        t_created = time.monotonic() - t0
        wait_for("every Service has an IP", lambda: sum(1 for n in names if n in watch.seen) == a.services,
                 900, interval=1)
        t_ips = max(watch.seen[n] for n in names) - t0
        wait_for("every Service announced", lambda: announced(lab) >= a.services, 900, interval=2)
        t_announced = time.monotonic() - t0
        res["burst"] = {"created_s": round(t_created, 1), "all_ips_s": round(t_ips, 1),
                        "all_announced_s": round(t_announced, 1)}
        print(f"burst: created in {t_created:.1f} s, every IP after {t_ips:.1f} s, "
              f"every VIP announced after {t_announced:.1f} s", flush=True)
        time.sleep(10)      # let the agents' and the API server's after-burst work settle

        # ---- 2. one more Service at a time ---------------------------------------------------
        before = reconcile_hist(lab)
        trials = []
        for k in range(a.trials):
            name, ip = f"t{k:03d}", str(TRIAL_BASE + k)
            disc.create_namespaced_endpoint_slice(NS, endpoint_slice(name, k))
            probe: dict = {}
            th = threading.Thread(target=arp_probe, args=(lab, ip, probe))
            th.start()
            time.sleep(0.3)     # arping is sending
            tc = time.monotonic()
            core.create_namespaced_service(NS, service(name, ip))
            th.join()
            if "t" not in probe or not probe["mac"]:
                raise SystemExit(f"scale: no ARP reply for {ip} within 60 s")
            wait_for(f"{name} seen with its IP", lambda: name in watch.seen, 30)
            status_s, arp_s = watch.seen[name] - tc, probe["t"] - tc
            trials.append({"service": name, "ip": ip, "node": lt.host_by_mac(lab, probe["mac"]),
                           "create_to_status_ms": round(1000 * status_s, 1),
                           "create_to_arp_ms": round(1000 * arp_s, 1),
                           "status_to_arp_ms": round(1000 * (arp_s - status_s), 1)})
            print(f"  trial {k + 1}/{a.trials}: {trials[-1]}", flush=True)
            time.sleep(1)
        after = reconcile_hist(lab)
        passes = {n: {"passes": after[n][1] - before[n][1],
                      "mean_ms": round(1000 * (after[n][0] - before[n][0]) / max(1, after[n][1] - before[n][1]), 1)}
                  for n in NODES}
        res["per_change"] = {"trials": trials, "agent_reconcile_pass": passes} if not trials else {
            "trials": trials,
            "create_to_status": summary([t["create_to_status_ms"] for t in trials], "ms", 1),
            "create_to_arp": summary([t["create_to_arp_ms"] for t in trials], "ms", 1),
            "status_to_arp": summary([t["status_to_arp_ms"] for t in trials], "ms", 1),
            "agent_reconcile_pass": passes}

        # ---- 3. the controller's full resync -------------------------------------------------
        logs = lab.dir / "logs"
        resyncs = []
        pid = state["pids"]["controller"]
        for k in range(a.resyncs):
            os.killpg(pid, signal.SIGTERM)
            wait_for("the controller to exit", lambda: not Path(f"/proc/{pid}").exists()
                     or Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z", 30, interval=0.1)
            stop_pid(pid)
            t_start = time.monotonic()
            proc = start(f"controller-scale-{k}", controller_cmd(kc, 0, f"scale-{k}"), logs)
            pid = proc.pid
            wait_for("resyncFinished", lambda: log_event(proc.log_path, "resyncFinished"), 120, proc=proc, interval=0.05)
            t_done = time.monotonic() - t_start
            rec = log_event(proc.log_path, "resyncFinished")[0]
            writes = [r for r in log_event(proc.log_path, "ipAllocated") + log_event(proc.log_path, "clearAssignment")]
            resyncs.append({"resync_s": rec["seconds"], "services": rec["services"],
                            "writes_pending": rec["writes_pending"], "allocations_or_clears": len(writes),
                            "process_start_to_finished_s": round(t_done, 2)})
            print(f"  resync {k + 1}/{a.resyncs}: {resyncs[-1]}", flush=True)
        state = lab.load()
        state["pids"]["controller"] = pid      # lab down stops the last one
        lab._save(state)
        res["resync"] = {"trials": resyncs,
                         "resync": summary([r["resync_s"] for r in resyncs], "s", 3),
                         "process_start_to_finished": summary([r["process_start_to_finished_s"] for r in resyncs], "s", 2)}
        watch.inf.stop()


def report(a, res: dict) -> None:
    if res["per_change"]["trials"]:
        print_table("per change (one more Service)", {k: res["per_change"][k] for k in
                                                     ("create_to_status", "create_to_arp", "status_to_arp")},
                    "ms", 1, 20, 8)
    for n, p in res["per_change"]["agent_reconcile_pass"].items():
        print(f"{n}: {p['passes']:.0f} reconcile passes during the trials, mean {p['mean_ms']} ms")
    print_table(f"controller full resync of {a.services} Services",
                {k: res["resync"][k] for k in ("resync", "process_start_to_finished")}, "s", 3, 28, 7)
    write_json(Path(a.out), res)


if __name__ == "__main__":
    main()
