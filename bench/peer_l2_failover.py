"""metalxdp vs MetalLB on the same real cluster, same run (issue 16): L2 failover after a node cable cut, and each one's per-node footprint.

The cluster lab (real nodes: containerd, kubelet, kube-proxy), once. Each implementation is
installed as its users install it, in turn, in blocks that alternate (metalxdp, MetalLB,
metalxdp, MetalLB, ...): metalxdp with `kubectl apply -k` of deploy/ (its image), MetalLB with
its own manifest (config/manifests/metallb-native.yaml of the pinned module) and images built
from the Go modules (scripts/metallb/image.sh). Both get the same L2 IPAddressPool and
L2Advertisement (the lab's), the same Deployment of 3 backends and one ETP Cluster Service.

A trial: the client requests the VIP 20 times a second (1 s timeout each); the node that answers
ARP for it has its cable cut; the figure is the time from the cut to the first request (sent
after the cut) that succeeds. Then the cable comes back and the service is stable again before
the next trial. Footprint: RSS of the speaker process (MetalLB) and of the agent pod's processes
(metalxdp: agent + ExaBGP + relay) per node, idle with that one Service.

After each block's cuts, ``--kills`` crash trials (default 10 per implementation): the process
of the announcing node's speaker (MetalLB) or agent (metalxdp) gets SIGKILL under 20 requests/s
and the kubelet restarts the container (the lab's kubelets restart a crashed container within
1 s, ``crashLoopBackOff.maxContainerRestartPeriod``); failed requests and VIP moves (changes of
the client's ARP entry for the VIP) are counted until the container is ready again, plus 3 s.
``--fresh-kills`` (default 10) are the same trials with a client that flushes its ARP entry for
the VIP before every request: a new client, or one whose entry expires, while the announcing
node's speaker/agent is down. Then the DaemonSet is restarted (`kubectl rollout restart`) under 20 requests/s: failed requests
and VIP moves are counted the same way.

BGP (``--bgp``, default 10 per implementation): the lab's BGP pool, BGPAdvertisement and BGPPeers
(native BGP mode for MetalLB) are applied too; a trial creates an ETP Cluster Service in the BGP
pool (through the API client) while a watcher in the router's namespace reads its kernel table
on every route notification (netlink, wall-clock stamped): create call sent -> the IP in the status, -> each
node's UPDATE at the router (tcpdump), -> the first route, -> all three next hops (ECMP); then
delete call sent -> the withdrawing UPDATEs, -> the route gone. (Until stop 35 the calls were
kubectl runs and the table was polled with `ip route` every 20 ms; until stop 40 it was polled
every 5 ms, which took ~0.6 s of CPU per trial from the 2 cores under test.)

Usage (root): python bench/peer_l2_failover.py [--cuts 20] [--kills 10] [--fresh-kills 10] [--bgp 10] [--blocks 2]
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.benchstats import arg_parser, print_table, summary, write_json  # noqa: E402
from bench.peer_bgp_stages import UpdateWatch  # noqa: E402
from metalxdp.kube import api_client, client  # noqa: E402
from metalxdp.lab import kube_tools as kt  # noqa: E402
from metalxdp.lab.kube_cluster import ClusterLab, overlay  # noqa: E402
from metalxdp.lab.spec import NAMESPACE, LabSpec, native_mode  # noqa: E402
from metalxdp.rig.kubenode import _children, _rss_kb  # noqa: E402
from metalxdp.rig.procs import RigError, wait_for  # noqa: E402

VERSION = (ROOT / "scripts" / "metallb" / "VERSION").read_text().strip()


def metallb_images() -> dict[str, tuple[str, Path]]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "metallb" / "image.sh")], check=True,
                         capture_output=True, text=True).stdout.split("\n")
    return {n: (ref, Path(tar)) for n, ref, tar in (line.split() for line in out if line.strip())}


def metallb_manifest() -> Path:
    cache = Path(os.environ.get("METALXDP_CACHE", "/var/cache/metalxdp"))
    p = cache / "gomod" / "go.universe.tf" / f"metallb@{VERSION}" / "config" / "manifests" / "metallb-native.yaml"
    if not p.exists():
        raise SystemExit(f"{p} missing: run `make metallb` (it fetches the module)")
    return p


def l2_resources(lab: ClusterLab) -> list[dict]:
    return [o for o in lab.spec.metallb_resources() if o["kind"] in ("IPAddressPool", "L2Advertisement")
            and o["metadata"]["name"] == "lab-l2"]


def bgp_resources(lab: ClusterLab) -> list[dict]:
    """The lab's BGP pool, advertisement and peer as MetalLB's native BGP mode accepts them
    (metalxdp.lab.spec.native_mode: IPv4 only, the hold time alone), applied alike to both
    implementations."""
    return [o for o in native_mode(lab.spec.metallb_resources())
            if o["metadata"]["name"] != "lab-l2" and o["kind"] in ("IPAddressPool", "BGPAdvertisement", "BGPPeer")]



def tree_memory_mb(pid: int) -> dict:
    """RSS and PSS summed over ``pid`` and its descendants (smaps_rollup), and each process's
    RSS by name. RSS counts a page shared by two processes (libpython, libssl) twice; PSS
    splits it between them, so the PSS sum is the share of the node's memory the pod holds."""
    out = {"rss_mb": 0.0, "pss_mb": 0.0, "processes": {}}
    stack = [pid]
    while stack:
        p = stack.pop()
        stack += _children(p)
        f = {}
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()[1:]:
            k, _, rest = line.partition(":")
            f[k] = int(rest.split()[0])
        argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        text = " ".join(a.decode(errors="replace") for a in argv if a)
        name = ("relay" if "api_relay" in text else "exabgp" if "exabgp" in text
                else "agent" if " agent" in text else Path(argv[0].decode(errors="replace")).name)
        out["rss_mb"] += f["Rss"] / 1024
        out["pss_mb"] += f["Pss"] / 1024
        out["processes"][name] = round(out["processes"].get(name, 0) + f["Rss"] / 1024, 1)
    out["rss_mb"], out["pss_mb"] = round(out["rss_mb"], 1), round(out["pss_mb"], 1)
    return out

# Runs inside the router's namespace (ip netns exec): its kernel routes in the pool, polled every
# 5 ms through netlink, one JSON line {"t": wall time, "routes": {prefix: next hops}} per change.
# A process of its own: pyroute2's netns support forks a child to make the socket, and in this
# many-threaded bench that child once carried on as the bench, in the router (API calls refused).
# The router's /32s and their next hops, printed (wall-clock stamped) whenever they change: woken
# by the kernel's route notifications (RTMGRP_IPV4_ROUTE), then one dump on a second socket.
# Until stop 40 this polled a dump every 5 ms: ~0.6 s of CPU per trial on the 2 cores both
# implementations run on, and stamps 5 ms coarse.
ROUTE_POLLER = r"""
import ipaddress, json, sys, time
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE
nets = [ipaddress.ip_network(n) for n in sys.argv[1:]]
events, dumps = IPRoute(), IPRoute()
events.bind(groups=RTMGRP_IPV4_ROUTE)
def table():
    cur = {}
    for r in dumps.get_routes(family=2):
        dst = r.get_attr("RTA_DST")
        if r.get("dst_len") == 32 and dst and any(ipaddress.ip_address(dst) in n for n in nets):
            mp = r.get_attr("RTA_MULTIPATH")
            cur[dst] = len(mp) if mp else (1 if r.get_attr("RTA_GATEWAY") else 0)
    return cur
t, last = time.time(), None
while True:
    cur = table()
    if cur != last:
        print(json.dumps({"t": t, "routes": cur}), flush=True)
        last = cur
    events.get()          # blocks until the kernel's routes change
    t = time.time()
"""


class BGPProbe:
    """What one_bgp measures with: the API client (the create/delete call returned = t0), the
    router's kernel table through netlink (ROUTE_POLLER: on every route notification, wall-clock stamped), and
    tcpdump of BGP on the router (the moment each node's UPDATE for the /32 arrived, announcing
    or withdrawing it)."""

    def __init__(self, lab: ClusterLab):
        router = lab.topo.hosts["router"]
        self.core = client.CoreV1Api(api_client(lab.kubeconfig))
        self.watch = UpdateWatch(router.netns)
        self.nodes = [lab.topo.hosts[n].ip4 for n in lab.spec.node_names()]
        pool = [c for c in lab.spec.bgp_pool if ":" not in c]
        self.history: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        self.poller = subprocess.Popen(["ip", "netns", "exec", router.netns, sys.executable, "-c", ROUTE_POLLER,
                                        *pool], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        wait_for("the router's route poller", lambda: bool(self.history), 30)

    def _read(self) -> None:
        for line in self.poller.stdout:
            d = json.loads(line)
            with self._lock:
                self.history.append((d["t"], d["routes"]))

    def routes(self) -> dict[str, int]:
        with self._lock:
            return dict(self.history[-1][1])

    def when(self, since: float, pred) -> Optional[float]:
        """Wall time of the first change at or after ``since`` whose routes satisfy ``pred``."""
        with self._lock:
            return next((t for t, r in self.history if t >= since and pred(r)), None)

    def close(self) -> None:
        self.watch.close()
        self.poller.kill()
        self.poller.wait()


def one_bgp(lab: ClusterLab, w, k: int, probe: BGPProbe) -> dict:
    """Create call sent -> the IP in the Service's status (read back-to-back, each read ~5-10
    ms), each node's UPDATE at the router, the first route and all next hops in its kernel;
    delete call sent -> the first and last withdrawing UPDATE, the route gone. Stages: controller = ip; node = first UPDATE - ip;
    router = all next hops - last UPDATE."""
    before = probe.routes()
    name = f"bgp-{k}"
    obj = {"metadata": {"name": name, "annotations": {"metallb.io/address-pool": "lab-bgp"}},
           "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ipFamilies": ["IPv4"],
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    probe.watch.first.clear()
    probe.watch.gone.clear()
    wall0 = time.time()
    probe.core.create_namespaced_service(w.ns, obj)
    ip = ip_t = None
    nodes = len(probe.nodes)
    new_routes = lambda r: {p: n for p, n in r.items() if p not in before}  # noqa: E731
    while time.time() < wall0 + 120:
        if ip is None:
            s = probe.core.read_namespaced_service(name, w.ns)
            ing = (s.status.load_balancer.ingress or []) if s.status and s.status.load_balancer else []
            if ing:
                ip, ip_t = ing[0].ip, time.time() - wall0
        if any(n >= nodes for n in new_routes(probe.routes()).values()):
            break
        time.sleep(0.01)
    first_t = probe.when(wall0, lambda r: bool(new_routes(r)))
    full_t = probe.when(wall0, lambda r: any(n >= nodes for n in new_routes(r).values()))
    if full_t is None:
        raise RigError(f"{name}: no route with {nodes} next hops at the router within 120 s "
                       f"(first: {first_t and first_t - wall0})")
    prefix = next(p for p, n in new_routes(probe.routes()).items() if n >= nodes)
    first, full = first_t - wall0, full_t - wall0
    time.sleep(1)
    ups = [probe.watch.first.get((prefix, n)) for n in probe.nodes]
    wall1 = time.time()
    probe.core.delete_namespaced_service(name, w.ns)
    while time.time() < wall1 + 120 and prefix in probe.routes():
        time.sleep(0.01)
    gone_t = probe.when(wall1, lambda r: prefix not in r)
    if gone_t is None:
        raise RigError(f"{name}: {prefix} still routed 120 s after the delete")
    gone = gone_t - wall1
    time.sleep(1)
    downs = [probe.watch.gone.get((prefix, n)) for n in probe.nodes]
    rel = lambda v, w0: None if v is None else round(v - w0, 3)  # noqa: E731
    row = {"prefix": prefix, "ip_s": None if ip_t is None else round(ip_t, 3),
           "first_update_s": rel(min(u for u in ups if u) if any(ups) else None, wall0),
           "last_update_s": rel(max(ups) if all(ups) else None, wall0),
           "first_route_s": round(first, 3), "all_next_hops_s": round(full, 3),
           "first_withdraw_update_s": rel(min(d for d in downs if d) if any(downs) else None, wall1),
           "last_withdraw_update_s": rel(max(downs) if all(downs) else None, wall1),
           "withdrawn_s": round(gone, 3)}
    if row["ip_s"] is not None and row["first_update_s"] is not None:
        row["stage_node_s"] = round(row["first_update_s"] - row["ip_s"], 3)
    if row["last_update_s"] is not None:
        row["stage_router_s"] = round(full - row["last_update_s"], 3)
    if row["last_withdraw_update_s"] is not None:
        row["stage_router_withdraw_s"] = round(gone - row["last_withdraw_update_s"], 3)
    row["_walls"] = (wall0, wall1, f"{w.ns}/{name}")
    return row


BGP_FIELDS = ("ip_s", "first_update_s", "last_update_s", "first_route_s", "all_next_hops_s", "stage_node_s",
              "stage_router_s", "first_withdraw_update_s", "last_withdraw_update_s", "withdrawn_s",
              "stage_router_withdraw_s", "controller_allocated_s", "agent_announce_first_s", "agent_withdraw_first_s",
              "agent_to_wire_announce_s", "agent_to_wire_withdraw_s")


def _log_wall(ts: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def agent_stamps(lab: ClusterLab, probe: "BGPProbe", row: dict, wall0: float, wall1: float, key: str) -> None:
    """metalxdp only: when the controller assigned the trial's IP (its ipAllocated log line), and
    when each node's agent sent ExaBGP the announce and the withdraw of the trial's /32 (its
    serviceAnnounced/serviceWithdrawn lines, IPv4 peer), added to ``row`` as seconds after the
    create/delete call; and per node how long from the agent's line to that node's UPDATE at
    the router (ExaBGP and the wire)."""
    out = lab.kubectl("-n", NAMESPACE, "logs", "deploy/controller", "-c", "controller", "--since=60s",
                      check=False).stdout
    for line in out.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("event") == "ipAllocated" and r.get("service") == key and _log_wall(r["ts"]) >= wall0 - 0.005:
            row["controller_allocated_s"] = round(_log_wall(r["ts"]) - wall0, 3)
            break
    sent: dict[str, dict[str, float]] = {"serviceAnnounced": {}, "serviceWithdrawn": {}}
    for node in lab.spec.node_names():
        pod = speaker_pod(lab, node)["metadata"]["name"]
        out = lab.kubectl("-n", NAMESPACE, "logs", pod, "-c", "speaker", "--since=60s", check=False).stdout
        for line in out.splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if (r.get("event") in sent and r.get("prefix", "").split("/")[0] == row["prefix"]
                    and not str(r.get("peer", "")).endswith("v6")):
                # every trial's Service gets the same /32: only this trial's lines count (log
                # stamps are ms, so 5 ms of slack before the call)
                t = _log_wall(r["ts"])
                since = wall0 if r["event"] == "serviceAnnounced" else wall1
                if t >= since - 0.005 and (r["event"] != "serviceAnnounced" or t < wall1):
                    sent[r["event"]].setdefault(lab.topo.hosts[node].ip4, t)
    ann, wd = sent["serviceAnnounced"], sent["serviceWithdrawn"]
    if ann:
        row["agent_announce_first_s"] = round(min(ann.values()) - wall0, 3)
        waits = [probe.watch.first[(row["prefix"], ip)] - t for ip, t in ann.items()
                 if (row["prefix"], ip) in probe.watch.first]
        if waits:
            row["agent_to_wire_announce_s"] = round(sorted(waits)[len(waits) // 2], 3)
    if wd:
        row["agent_withdraw_first_s"] = round(min(wd.values()) - wall1, 3)
        waits = [probe.watch.gone[(row["prefix"], ip)] - t for ip, t in wd.items()
                 if (row["prefix"], ip) in probe.watch.gone]
        if waits:
            row["agent_to_wire_withdraw_s"] = round(sorted(waits)[len(waits) // 2], 3)


def apply_through_webhook(lab: ClusterLab, objs: list[dict]) -> None:
    for obj in objs:
        def applied(obj=obj):
            r = lab.kubectl("apply", "-f", "-", input_=json.dumps(obj), check=False)
            if r.returncode and "webhook" not in r.stderr:
                raise RigError(r.stderr)
            return r.returncode == 0
        wait_for(f"{obj['kind']} {obj['metadata']['name']} admitted", applied, 120, interval=1)


class MetalXDP:
    name = "metalxdp"

    def __init__(self, lab: ClusterLab, bgp: bool = False):
        self.lab, self.bgp = lab, bgp

    def install(self) -> None:
        self.lab.kubectl("apply", "-k", str(overlay(self.lab.workdir, self.lab.images["metalxdp"].ref)))
        self.lab.wait_installed()
        apply_through_webhook(self.lab, l2_resources(self.lab) + (bgp_resources(self.lab) if self.bgp else []))

    def uninstall(self) -> None:
        self.lab.uninstall()
        wait_for("metalxdp gone", lambda: not self.lab.kubectl("get", "ns", NAMESPACE, check=False).returncode == 0, 180)

    def pid(self, node: str) -> int:
        return kt.agent_pid(self.lab, node)

    def rss_mb(self, node: str) -> float:
        return round(_rss_kb(self.pid(node)) / 1024, 1)


class MetalXDPExaBGPProcess(MetalXDP):
    """metalxdp with ExaBGP as a process of its own (METALXDP_EXABGP_IN_PROCESS=0 on the
    DaemonSet), for the A/B against the default (ExaBGP's reactor on a thread of the agent)."""
    name = "metalxdp-exabgp-process"

    def install(self) -> None:
        super().install()
        self.lab.kubectl("-n", NAMESPACE, "set", "env", "daemonset/speaker", "-c", "speaker",
                         "METALXDP_EXABGP_IN_PROCESS=0")
        self.lab.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/speaker", "--timeout=300s", timeout=310)
        self.lab.wait_installed()


class MetalLB:
    name = "metallb"

    def __init__(self, lab: ClusterLab, manifest: Path, bgp: bool = False):
        self.lab, self.manifest, self.bgp = lab, manifest, bgp

    def install(self) -> None:
        self.lab.kubectl("apply", "-f", str(self.manifest))
        if self.bgp:
            # MetalLB v0.15.2's BGPPeer CRD declares myASN/peerASN `format: int32` with `maximum:
            # 4294967295`; Kubernetes 1.36 refused the lab's BGPPeer against that schema ("Maximum
            # boundary value must be of type integer with format int32 in spec.myASN"). So with
            # BGP the lab runs MetalLB's workloads over metalxdp's CRDs (the same group, kinds,
            # versions and conversion Service; int64 there). docs/compatibility.md
            from metalxdp.lab.cluster import CRD_DIR
            self.lab.kubectl("apply", "-f", str(CRD_DIR))
        self.lab.wait_installed()          # the same names: deployment/controller, daemonset/speaker
        apply_through_webhook(self.lab, l2_resources(self.lab) + (bgp_resources(self.lab) if self.bgp else []))

    def uninstall(self) -> None:
        self.lab.kubectl("delete", "-f", str(self.manifest), "--ignore-not-found", "--wait=true", timeout=300)
        wait_for("MetalLB gone", lambda: not self.lab.kubectl("get", "ns", NAMESPACE, check=False).returncode == 0, 180)

    def pid(self, node: str) -> int:
        want = os.stat(f"/run/netns/{self.lab.topo.hosts[node].netns}").st_ino
        for pid in subprocess.run(["pgrep", "-x", "speaker"], capture_output=True, text=True).stdout.split():
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                    return int(pid)
            except OSError:
                continue
        raise RigError(f"no MetalLB speaker in {node}'s namespace")

    def rss_mb(self, node: str) -> float:
        return round(_rss_kb(self.pid(node)) / 1024, 1)


def one_cut(lab: ClusterLab, ip: str, timeout: float = 60) -> dict:
    node = kt.announcer(lab, ip)
    if node is None:
        raise RigError(f"nobody answers ARP for {ip}")
    back = None
    with kt.Stream(lab, ip, rate=20, timeout=1) as s:
        time.sleep(1)
        cut = time.monotonic()
        lab.topo.set_link(node, up=False)
        try:
            wait_for("a request succeeds after the cut", lambda: s.first_success_after(cut) is not None, timeout)
            back = s.first_success_after(cut)
        except RigError:
            pass
        finally:
            time.sleep(0.5)
    lab.topo.set_link(node, up=True)
    # stable again: answered, and the same announcer twice 2 s apart (a VIP moving back settles)
    kt.wait_curl(lab, ip, timeout=120)
    prev = None
    for _ in range(30):
        time.sleep(2)
        cur = kt.announcer(lab, ip)
        if cur and cur == prev and kt.client_curl(lab, ip):
            break
        prev = cur
    return {"node": node, "seconds": None if back is None else round(back, 3)}


class MacWatch:
    """The client's neighbour entry for ``ip``, sampled every 50 ms: each change of MAC is a
    move of the VIP."""

    def __init__(self, lab: ClusterLab, ip: str):
        import threading
        self.lab, self.ip, self.macs = lab, ip, []
        self._done = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.is_set():
            m = kt.client_neigh_mac(self.lab, self.ip)
            if m and (not self.macs or self.macs[-1] != m):
                self.macs.append(m)
            self._done.wait(0.05)

    def __enter__(self) -> "MacWatch":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._t.join()

    @property
    def moves(self) -> int:
        return max(0, len(self.macs) - 1)


def speaker_pod(lab: ClusterLab, node: str) -> dict:
    pods = json.loads(lab.kubectl("-n", NAMESPACE, "get", "pods", "-l", "component=speaker", "-o", "json").stdout)
    for p in pods["items"]:
        if p["spec"].get("nodeName") == node:
            return p
    raise RigError(f"no speaker pod on {node}")


def _restarts_and_ready(pod: dict) -> tuple[int, bool]:
    sts = pod.get("status", {}).get("containerStatuses") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in pod.get("status", {}).get("conditions") or [])
    return sum(c.get("restartCount", 0) for c in sts), ready


def one_kill(lab: ClusterLab, impl, ip: str, fresh_arp: bool = False) -> dict:
    """SIGKILL the announcing node's speaker/agent process under 20 requests/s; the kubelet
    restarts its container. Counted until the pod is ready again with one more restart, + 3 s.
    ``fresh_arp``: the client flushes its neighbour entry for the VIP before every request (a
    new client, or one whose ARP entry expires, during the restart)."""
    node = kt.announcer(lab, ip)
    if node is None:
        raise RigError(f"nobody answers ARP for {ip}")
    name = speaker_pod(lab, node)["metadata"]["name"]
    restarts0, _ = _restarts_and_ready(speaker_pod(lab, node))
    with MacWatch(lab, ip) as mw, kt.Stream(lab, ip, rate=20, timeout=1, fresh_arp=fresh_arp) as s:
        time.sleep(1)
        t0 = time.monotonic()
        os.kill(impl.pid(node), signal.SIGKILL)

        def back():
            r, ready = _restarts_and_ready(json.loads(lab.kubectl(
                "-n", NAMESPACE, "get", "pod", name, "-o", "json").stdout))
            return r > restarts0 and ready
        wait_for(f"{node}'s {impl.name} container restarted and ready", back, 180, interval=0.2)
        took = time.monotonic() - t0
        time.sleep(3)
    # stable again before the next trial: answered, the same announcer twice 2 s apart
    kt.wait_curl(lab, ip, timeout=120)
    prev = None
    for _ in range(30):
        time.sleep(2)
        cur = kt.announcer(lab, ip)
        if cur and cur == prev and kt.client_curl(lab, ip):
            break
        prev = cur
    return {"node": node, "requests": len(s.results), "failed": s.failed(), "vip_moves": mw.moves,
            "ready_again_s": round(took, 2),
            # when each failed request was sent (s after the kill) and curl's exit code (28: timed out,
            # 7: refused, 56: reset)
            "failures": [(round(t - t0, 2), rc) for t, rc in s.failures]}


def one_rollout(lab: ClusterLab, ip: str) -> dict:
    """`kubectl rollout restart daemonset/speaker` (every speaker/agent pod replaced, one node at
    a time) under 20 requests/s: failed requests, and how often the client's ARP entry for the
    VIP changed MAC (each change is a move of the VIP)."""
    with MacWatch(lab, ip) as mw, kt.Stream(lab, ip, rate=20, timeout=2) as s:
        t0 = time.monotonic()
        lab.kubectl("-n", NAMESPACE, "rollout", "restart", "daemonset/speaker")
        lab.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/speaker", "--timeout=300s", timeout=310)
        took = time.monotonic() - t0
        time.sleep(3)
    return {"requests": len(s.results), "failed": s.failed(), "vip_moves": mw.moves,
            "rollout_s": round(took, 1)}


def main() -> None:
    ap = arg_parser(__doc__, "peer_l2_failover")
    ap.add_argument("--cuts", type=int, default=20, help="cuts per implementation in total")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILL trials per implementation in total")
    ap.add_argument("--fresh-kills", type=int, default=10,
                    help="SIGKILL trials per implementation in total with a client that has no ARP entry "
                         "for the VIP at each request")
    ap.add_argument("--bgp", type=int, default=10, help="BGP Service create/delete trials per implementation in total")
    ap.add_argument("--blocks", type=int, default=2, help="alternating blocks per implementation")
    ap.add_argument("--rollouts", type=int, default=1, help="DaemonSet rollout restarts per block and implementation")
    ap.add_argument("--exabgp-process", action="store_true",
                    help="a third arm: metalxdp with METALXDP_EXABGP_IN_PROCESS=0 (ExaBGP as a process), "
                         "for the A/B against the default")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # the lab comes down (finally) on kill too
    sys.stdout.reconfigure(line_buffering=True)
    manifest = metallb_manifest()
    images = metallb_images()
    lab = ClusterLab(Path(tempfile.mkdtemp(prefix="peer-l2-")), spec=LabSpec())
    names = ["metalxdp", "metallb"] + (["metalxdp-exabgp-process"] if a.exabgp_process else [])
    trials: dict[str, list[dict]] = {n: [] for n in names}
    footprint: dict[str, dict] = {}
    footprint_detail: dict[str, dict] = {}
    rollouts: dict[str, list[dict]] = {n: [] for n in names}
    kills: dict[str, list[dict]] = {n: [] for n in names}
    fresh: dict[str, list[dict]] = {n: [] for n in names}
    bgp: dict[str, list[dict]] = {n: [] for n in names}
    t_all = time.monotonic()
    try:
        lab.up(progress=print, install=False)
        for node in lab.cluster.nodes.values():
            for _, tar in images.values():
                node.import_image(tar)
        impls = [MetalXDP(lab, bgp=a.bgp > 0), MetalLB(lab, manifest, bgp=a.bgp > 0)]
        if a.exabgp_process:
            impls.append(MetalXDPExaBGPProcess(lab, bgp=a.bgp > 0))
        per_block = a.cuts // a.blocks
        kills_per_block = a.kills // a.blocks
        for block in range(a.blocks):
            for impl in impls:
                t0 = time.monotonic()
                impl.install()
                print(f"[{impl.name} block {block + 1}] installed in {time.monotonic() - t0:.1f} s")
                w = kt.Workload(lab, ns="peer-l2")
                w.backends("web", 3)
                (ip,) = w.service("web-l2", "web", families=["IPv4"])
                kt.wait_curl(lab, ip, timeout=120)
                if impl.name not in footprint:
                    time.sleep(5)
                    footprint[impl.name] = {n: impl.rss_mb(n) for n in lab.spec.node_names()}
                    footprint_detail[impl.name] = {n: tree_memory_mb(impl.pid(n)) for n in lab.spec.node_names()}
                    print(f"  {impl.name} memory per node: {footprint_detail[impl.name]}")
                for i in range(per_block):
                    r = one_cut(lab, ip)
                    r["block"] = block
                    trials[impl.name].append(r)
                    took = "no answer within 60 s" if r["seconds"] is None else f"{r['seconds']:.2f} s"
                    print(f"  {impl.name} cut {len(trials[impl.name])}: {r['node']} -> {took}")
                for i in range(kills_per_block):
                    r = one_kill(lab, impl, ip)
                    r["block"] = block
                    kills[impl.name].append(r)
                    print(f"  {impl.name} SIGKILL {len(kills[impl.name])}: {r['node']} -> {r['failed']} of "
                          f"{r['requests']} failed, VIP moves {r['vip_moves']}, ready again after "
                          f"{r['ready_again_s']:.1f} s")
                for i in range(a.fresh_kills // a.blocks):
                    r = one_kill(lab, impl, ip, fresh_arp=True)
                    r["block"] = block
                    fresh[impl.name].append(r)
                    print(f"  {impl.name} SIGKILL, fresh ARP {len(fresh[impl.name])}: {r['node']} -> {r['failed']} "
                          f"of {r['requests']} failed, ready again after {r['ready_again_s']:.1f} s")
                probe = BGPProbe(lab) if a.bgp else None
                if a.bgp:      # warm-up, not counted: the sessions are up and the first route is in
                    one_bgp(lab, w, 1000 + block, probe)
                for i in range(a.bgp // a.blocks):
                    r = one_bgp(lab, w, len(bgp[impl.name]), probe)
                    walls = r.pop("_walls")
                    if impl.name.startswith("metalxdp"):
                        agent_stamps(lab, probe, r, *walls)
                    r["block"] = block
                    bgp[impl.name].append(r)
                    print(f"  {impl.name} BGP {len(bgp[impl.name])}: {r['prefix']} first route {r['first_route_s']:.2f} s, "
                          f"all next hops {r['all_next_hops_s']:.2f} s, withdrawn {r['withdrawn_s']:.2f} s after the delete "
                          f"(IP {r['ip_s']}, UPDATEs {r['first_update_s']}-{r['last_update_s']}, "
                          f"withdrawing UPDATEs {r['first_withdraw_update_s']}-{r['last_withdraw_update_s']} s)")
                if probe:
                    probe.close()
                for i in range(a.rollouts):
                    r = one_rollout(lab, ip)
                    rollouts[impl.name].append(r)
                    print(f"  {impl.name} rollout restart of the DaemonSet: {r}")
                w.close()
                impl.uninstall()
    finally:
        lab.down(remove=True)
    rows = {k: summary(ok, "s", 3) if (ok := [t["seconds"] for t in v if t["seconds"] is not None]) else {"n": 0}
            for k, v in trials.items()}
    print_table("L2 failover (cut -> first success)", rows, "s", 2, 36, 7)
    ratio = (rows["metallb"]["p50_s"] / rows["metalxdp"]["p50_s"]
             if rows["metalxdp"]["n"] and rows["metallb"]["n"] and rows["metalxdp"]["p50_s"] else None)
    if ratio:
        print(f"p50 ratio MetalLB / metalxdp: {ratio:.1f}x")
    for k, v in footprint.items():
        print(f"RSS per node, {k}: {v} MB")
    for k, v in footprint_detail.items():
        print(f"PSS per node, {k}: { {n: m['pss_mb'] for n, m in v.items()} } MB; RSS by process: "
              f"{ {n: m['processes'] for n, m in v.items()} }")
    for k, v in rollouts.items():
        print(f"DaemonSet rollout restart under 20 req/s, {k}: "
              f"{sum(r['failed'] for r in v)} of {sum(r['requests'] for r in v)} requests failed, "
              f"VIP moves {[r['vip_moves'] for r in v]}")
    def kill_summary(v: list[dict]) -> dict:
        return {"trials": len(v), "requests": sum(r["requests"] for r in v),
                "failed": sum(r["failed"] for r in v),
                "failed_per_trial": summary([r["failed"] for r in v], "n", 0),
                "vip_moves_per_trial": summary([r["vip_moves"] for r in v], "n", 0),
                "ready_again_s": summary([r["ready_again_s"] for r in v], "s", 2)}
    kill_rows = {k: kill_summary(v) for k, v in kills.items() if v}
    fresh_rows = {k: kill_summary(v) for k, v in fresh.items() if v}
    for label, rows_ in (("", kill_rows), (", client without an ARP entry at each request", fresh_rows)):
        for k, r in rows_.items():
            trials_ = (kills if rows_ is kill_rows else fresh)[k]
            print(f"SIGKILL of the {'speaker' if k == 'metallb' else 'agent'} under 20 req/s{label}, {k}: "
                  f"{r['failed']} of {r['requests']} requests failed over {r['trials']} kills, "
                  f"VIP moves {[t['vip_moves'] for t in trials_]}")
    bgp_rows = {}
    for k, v in bgp.items():
        if v:
            bgp_rows[k] = {f: summary(vals, "s", 3) for f in BGP_FIELDS
                           if (vals := [r[f] for r in v if r.get(f) is not None])}
    for arm in [n for n in names if n.startswith("metalxdp") and bgp_rows.get(n)]:
        for f in BGP_FIELDS:
            if f not in bgp_rows[arm]:
                continue
            mx = bgp_rows[arm][f]["p50_s"]
            if f not in bgp_rows.get("metallb", {}):
                print(f"BGP {f[:-2].replace('_', ' ')}: {arm} p50 {mx:.3f} s")
                continue
            ml = bgp_rows["metallb"][f]["p50_s"]
            print(f"BGP {f[:-2].replace('_', ' ')}: {arm} p50 {mx:.3f} s, MetalLB p50 {ml:.3f} s "
                  f"(MetalLB/{arm} {ml / mx:.2f}x)" if mx else f"BGP {f}: {arm} {mx}, MetalLB {ml}")
    write_json(Path(a.out), {
        "metallb_version": VERSION, "cuts_per_impl": a.cuts, "blocks": a.blocks,
        "summary": rows, "p50_ratio_metallb_over_metalxdp": round(ratio, 2) if ratio else None,
        "failed_cuts": {k: sum(1 for t in v if t["seconds"] is None) for k, v in trials.items()},
        "footprint_rss_mb": footprint, "footprint_memory": footprint_detail, "rollouts": rollouts, "kills": kill_rows, "kill_trials": kills,
        "kills_fresh_arp": fresh_rows, "kill_fresh_arp_trials": fresh,
        "bgp": bgp_rows, "bgp_trials": bgp, "trials": trials, "seconds_total": round(time.monotonic() - t_all, 1)})


if __name__ == "__main__":
    main()
