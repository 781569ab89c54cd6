"""What metalxdp costs per node (issue 20): every process of the agent pod, idle and with many
Services announced, on the cluster lab (real nodes: containerd, kubelet, kube-proxy; metalxdp
installed with `kubectl apply -k` of deploy/ from its image).

Per node and per process of the agent pod (the agent, ExaBGP, its API relay): RSS, PSS and
USS (private pages) from /proc/<pid>/smaps_rollup, and CPU (utime + stime) over a quiet window.
Measured twice: idle with one L2 Service, then with ``--services`` more LoadBalancer Services
(half from an L2 pool, half from a BGP pool, both advertised; 198.18.0.0/15 addresses).

Also the agent's cold start: the DaemonSet is deleted (the agents uninstall: XDP detached, pins
removed, nobody answers ARP for the VIP), then created again; the client asks for the VIP's MAC
every ~20 ms. Reported: DaemonSet created -> first ARP reply, and the answering agent's process
start (/proc/<pid>/stat) -> its XDP program attached (first seen on eth0) -> first ARP reply.

Usage (root): python bench/footprint.py [--services 1000] [--window 30] [--cold-starts 3]
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchstats import arg_parser, write_json  # noqa: E402
from metalxdp.lab import kube_tools as kt  # noqa: E402
from metalxdp.lab.kube_cluster import ClusterLab  # noqa: E402
from metalxdp.lab.spec import NAMESPACE, LabSpec  # noqa: E402
from metalxdp.rig.kubenode import _children  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    out = [pid]
    for c in _children(pid):
        out += process_tree(c)
    return out


def proc_name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    if "metalxdp agent" in text or "metalxdp.cli agent" in text:
        return "agent"
    if "exabgp" in text and "relay" not in text:
        return "exabgp"
    if "relay" in text:
        return "relay"
    return Path(argv[0].decode(errors="replace")).name or str(pid)


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (Private_Clean + Private_Dirty) of one process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, _, rest = line.partition(":")
        fields[k] = int(rest.split()[0])
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2:].split()
    return (int(after[11]) + int(after[12])) / CLK_TCK   # utime, stime (fields 14, 15)


def measure(lab: ClusterLab, window: float) -> dict:
    """Per node: each agent-pod process's memory (MB) and CPU share over ``window`` seconds."""
    trees = {n: process_tree(kt.agent_pid(lab, n)) for n in lab.spec.node_names()}
    cpu0 = {p: cpu_s(p) for t in trees.values() for p in t}
    t0 = time.monotonic()
    time.sleep(window)
    took = time.monotonic() - t0
    out = {}
    for node, pids in trees.items():
        procs = {}
        for p in pids:
            try:
                m = memory_kb(p)
                c = cpu_s(p) - cpu0.get(p, 0.0)
            except OSError:
                continue
            name = proc_name(p)
            while name in procs:
                name += "+"
            procs[name] = {k + "_mb": round(v / 1024, 1) for k, v in m.items()}
            procs[name]["cpu_pct"] = round(100 * c / took, 2)
        total = {k: round(sum(v[k] for v in procs.values()), 1) for k in ("rss_mb", "pss_mb", "uss_mb", "cpu_pct")}
        out[node] = {"processes": procs, "total": total}
    return out


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def proc_start_boottime(pid: int) -> float:
    """A process's start, in seconds of CLOCK_BOOTTIME (field 22 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19]) / CLK_TCK


def arping(lab: ClusterLab, ip: str, *opts: str) -> list[str]:
    """The MACs that answered ARP for ``ip`` at the client (arping reads the replies itself)."""
    r = subprocess.run(["ip", "netns", "exec", lab.topo.hosts["client"].netns, "arping", "-r", *opts,
                        "-i", "eth0", ip], capture_output=True, text=True, timeout=240)
    return [line.strip().lower() for line in r.stdout.splitlines() if line.strip()]


def cold_start(lab: ClusterLab, ip: str) -> dict:
    """DaemonSet deleted and created again: the times to the first ARP reply for ``ip``."""
    ds = json.loads(lab.kubectl("get", "ds", "speaker", "-n", NAMESPACE, "-o", "json").stdout)
    meta = ds["metadata"]
    ds["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    ds["metadata"].get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    ds.pop("status", None)
    lab.kubectl("delete", "ds", "speaker", "-n", NAMESPACE, "--wait=true", "--timeout=120s")
    wait_for("every agent gone", lambda: not lab.kubectl("get", "pods", "-n", NAMESPACE, "-l", "component=speaker",
                                                          "-o", "name").stdout.strip(), 120, interval=0.5)
    wait_for(f"nobody answers ARP for {ip}", lambda: not arping(lab, ip, "-c", "1", "-w", "1"), 60, interval=0.5)
    nodes = lab.spec.node_names()
    attached: dict[str, float] = {}
    # a request every 20 ms until the first reply (-C 1), which arping prints and exits on
    t_create = boottime()
    lab.kubectl("create", "-f", "-", input_=json.dumps(ds))
    probe = concurrent.futures.ThreadPoolExecutor(1).submit(
        arping, lab, ip, "-C", "1", "-c", "10000", "-W", "0.02", "-w", "180")
    while not probe.done():
        for n in nodes:
            if n not in attached and kt.xdp_prog_id(lab, n):
                attached[n] = boottime()
        time.sleep(0.05)
    t_arp = boottime()
    macs = probe.result()
    if not macs:
        raise SystemExit(f"footprint: no ARP reply for {ip} within 180 s of creating the DaemonSet")
    node = next(n for n in nodes if lab.topo.hosts[n].mac == macs[0])
    started = proc_start_boottime(kt.agent_pid(lab, node))
    out = {"node": node, "ds_created_to_first_arp_ms": round(1000 * (t_arp - t_create)),
           "agent_start_to_first_arp_ms": round(1000 * (t_arp - started))}
    if node in attached:
        out["agent_start_to_xdp_attached_ms"] = round(1000 * (attached[node] - started))
    wait_for("every agent Ready again", lambda: lab.kubectl(
        "rollout", "status", "ds/speaker", "-n", NAMESPACE, "--timeout=5s", check=False).returncode == 0, 180, interval=1)
    return out


def extra_resources(services: int) -> list[dict]:
    half = max(1, services // 2)
    return [
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "fp-l2", "namespace": NAMESPACE}, "spec": {"addresses": ["198.18.16.0/21"]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
         "metadata": {"name": "fp-l2", "namespace": NAMESPACE}, "spec": {"ipAddressPools": ["fp-l2"]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "fp-bgp", "namespace": NAMESPACE},
         "spec": {"addresses": ["198.18.32.0/21"], "autoAssign": False}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
         "metadata": {"name": "fp-bgp", "namespace": NAMESPACE}, "spec": {"ipAddressPools": ["fp-bgp"]}},
    ] if half <= 2048 else []


def print_rows(title: str, m: dict) -> None:
    print(f"\n{title} (MB; CPU % of one core)")
    print(f"  {'node':8} {'process':8} {'RSS':>7} {'PSS':>7} {'USS':>7} {'CPU%':>6}")
    for node, row in m.items():
        for name, v in row["processes"].items():
            print(f"  {node:8} {name:8} {v['rss_mb']:7.1f} {v['pss_mb']:7.1f} {v['uss_mb']:7.1f} {v['cpu_pct']:6.2f}")
        t = row["total"]
        print(f"  {node:8} {'total':8} {t['rss_mb']:7.1f} {t['pss_mb']:7.1f} {t['uss_mb']:7.1f} {t['cpu_pct']:6.2f}")


def main() -> None:
    ap = arg_parser(__doc__, "footprint")
    ap.add_argument("--services", type=int, default=1000, help="Services announced in the second measurement")
    ap.add_argument("--window", type=float, default=30, help="seconds of each CPU window")
    ap.add_argument("--cold-starts", type=int, default=3, help="DaemonSet delete/create cycles timed to the first ARP")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # the lab comes down (finally) on kill too
    lab = ClusterLab(Path(tempfile.mkdtemp(prefix="footprint-")), spec=LabSpec())
    t_all = time.monotonic()
    result: dict = {"services": a.services, "window_s": a.window}
    try:
        lab.up(progress=print)
        w = kt.Workload(lab, ns="footprint")
        w.backends("web", 3)
        (ip,) = w.service("web-l2", "web", families=["IPv4"])
        kt.wait_curl(lab, ip, timeout=120)
        time.sleep(5)
        result["idle"] = measure(lab, a.window)
        print_rows("idle, one L2 Service", result["idle"])
        result["cold_starts"] = []
        for i in range(a.cold_starts):
            c = cold_start(lab, ip)
            result["cold_starts"].append(c)
            print(f"cold start {i + 1} on {c['node']}: DaemonSet created -> first ARP {c['ds_created_to_first_arp_ms']} ms; "
                  f"agent process start -> XDP attached {c.get('agent_start_to_xdp_attached_ms', '?')} ms "
                  f"-> first ARP {c['agent_start_to_first_arp_ms']} ms")
            kt.wait_curl(lab, ip, timeout=120)
        for obj in extra_resources(a.services):
            wait_for(f"{obj['kind']} {obj['metadata']['name']} applied",
                     lambda obj=obj: lab.kubectl("apply", "-f", "-", input_=json.dumps(obj), check=False).returncode == 0,
                     60, interval=1)
        t0 = time.monotonic()
        half = a.services // 2
        w.many_services("fpl", half, "fp-l2")
        w.many_services("fpb", a.services - half, "fp-bgp")
        result["allocate_s"] = round(time.monotonic() - t0, 1)
        print(f"{a.services} Services with IPs in {result['allocate_s']} s")
        time.sleep(20)   # the agents announce them (L2 elections, BGP updates)
        result["loaded"] = measure(lab, a.window)
        print_rows(f"with {a.services} more Services (L2 and BGP)", result["loaded"])
        w.close()
    finally:
        lab.down(remove=True)
    result["seconds_total"] = round(time.monotonic() - t_all, 1)
    write_json(Path(a.out), result)


if __name__ == "__main__":
    main()
