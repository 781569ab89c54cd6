"""metalxdp the way users run it (issue 15): real kubelets, containerd and kube-proxy on three
nodes, the project's own image, installed with `kubectl apply -k`; L2 and BGP Services reached
from the client over IPv4 and IPv6, a node cable cut, a killed speaker pod, and the uninstall.
Every assertion looks at what the client or the router sees, or at the nodes' own state."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from metalxdp.lab.spec import NAMESPACE
from metalxdp.rig.procs import wait_for

from .conftest import client_curl, parse_backend, router_nexthops, wait_curl

pytestmark = pytest.mark.integration
NODES = ("node1", "node2", "node3")
PINNED = (Path(__file__).resolve().parents[2] / "scripts" / "kube" / "VERSION").read_text().strip()


def client_neigh_mac(lab, ip: str):
    fam = "-6" if ":" in ip else "-4"
    out = lab.topo.hosts["client"].run(["ip", "-j", fam, "neigh", "show", ip], check=False).stdout
    entries = json.loads(out or "[]")
    return entries[0].get("lladdr") if entries else None


def announcer(lab, ip: str):
    """The node whose MAC the client resolved ``ip`` to (after a fresh request)."""
    lab.topo.hosts["client"].run(["ip", "neigh", "flush", "to", ip], check=False)
    client_curl(lab, ip, timeout=2)
    mac = client_neigh_mac(lab, ip)
    for n in NODES:
        if lab.topo.hosts[n].mac == mac:
            return n
    return None


def xdp_prog_id(lab, node: str):
    out = lab.node_exec(node, "ip", "-j", "link", "show", "eth0").stdout
    return (json.loads(out)[0].get("xdp") or {}).get("prog", {}).get("id")


# ---- the cluster and the install ---------------------------------------------------------------
def test_nodes_are_real_ready_and_run_the_pinned_release(cluster):
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == list(NODES)
    for n in nodes:
        info = n["status"]["nodeInfo"]
        assert info["kubeletVersion"] == PINNED, info
        assert info["containerRuntimeVersion"].startswith("containerd://"), info
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        assert n["spec"].get("podCIDRs") and len(n["spec"]["podCIDRs"]) == 2   # dual stack


def test_metalxdp_runs_as_pods_of_its_image_ready_through_their_probes(cluster):
    pods = cluster.pods()
    speakers = [p for p in pods if p["metadata"]["labels"].get("component") == "speaker"]
    controllers = [p for p in pods if p["metadata"]["labels"].get("component") == "controller"]
    assert sorted(p["spec"]["nodeName"] for p in speakers) == list(NODES)
    assert len(controllers) == 1
    ref = cluster.images["metalxdp"].ref
    for p in speakers + controllers:
        assert p["spec"]["containers"][0]["image"] == ref
        st = p["status"]["containerStatuses"][0]
        assert st["ready"] and st["state"].get("running"), st
    # no host kernel headers needed: the DaemonSet mounts neither /lib/modules nor /usr/src
    paths = {v.get("hostPath", {}).get("path") for v in speakers[0]["spec"]["volumes"]}
    assert "/lib/modules" not in paths and "/usr/src" not in paths


# ---- L2 and BGP, IPv4 and IPv6 --------------------------------------------------------------
def test_l2_dual_stack_etp_local_reaches_a_local_backend_with_the_client_address(cluster, workload):
    workload.backends("web", 2)
    v4, v6 = workload.service("web-l2", "web", etp="Local", families=["IPv4", "IPv6"], policy="RequireDualStack")
    for ip, client in ((v4, "192.0.2.100"), (v6, "2001:db8:0:1::100")):
        got = parse_backend(wait_curl(cluster, ip))
        assert got["client"] == client, got          # ETP Local: no SNAT, the backend sees the client
        node = announcer(cluster, ip)
        assert node == got["node"], (node, got)       # answered by the node that hosts the backend
    # the announcing agents attached XDP to their own node's eth0 and pinned it in that node's
    # own bpffs (one program per node, not one shared through the machine's /sys/fs/bpf)
    ids = {n: xdp_prog_id(cluster, n) for n in NODES}
    attached = {n: i for n, i in ids.items() if i}
    assert got["node"] in attached and len(set(attached.values())) == len(attached), ids
    for n in attached:
        assert cluster.node_exec(n, "ls", "/sys/fs/bpf/metalxdp").stdout.split(), f"no pins in {n}'s bpffs"


def test_bgp_service_routed_with_a_next_hop_per_node_ipv4_and_ipv6(cluster, workload):
    workload.backends("webb", 3)
    v4, v6 = workload.service("web-bgp", "webb", pool="lab-bgp", families=["IPv4", "IPv6"],
                              policy="RequireDualStack")
    node_v4 = {cluster.topo.hosts[n].ip4 for n in NODES}
    node_v6 = {cluster.topo.hosts[n].ip6 for n in NODES}
    wait_for("three IPv4 next hops", lambda: router_nexthops(cluster, v4) == node_v4, 60)
    wait_for("three IPv6 next hops", lambda: router_nexthops(cluster, v6) == node_v6, 60)
    assert parse_backend(wait_curl(cluster, v4))["pod"].startswith("webb-")
    assert parse_backend(wait_curl(cluster, v6))["pod"].startswith("webb-")


# ---- faults ---------------------------------------------------------------------------------
class Stream:
    """Requests from the client at ``rate`` per second; results as (time, ok)."""

    def __init__(self, lab, ip: str, rate: float = 20):
        self.lab, self.ip, self.gap = lab, ip, 1 / rate
        self.results: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            threading.Thread(target=lambda t=t: self.results.append(
                (t, client_curl(self.lab, self.ip, timeout=1) is not None)), daemon=True).start()
            self._stop.wait(max(0.0, self.gap - (time.monotonic() - t)))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        time.sleep(1.5)           # the last requests finish (1 s timeout)

    def failed(self) -> int:
        return sum(1 for _, ok in self.results if not ok)


def test_l2_failover_after_a_node_cable_cut_and_bgp_next_hop_removed(cluster, workload):
    workload.backends("fo", 3)
    (ip,) = workload.service("fo-l2", "fo")
    (bip,) = workload.service("fo-bgp", "fo", pool="lab-bgp")
    wait_curl(cluster, ip)
    wait_for("three BGP next hops", lambda: len(router_nexthops(cluster, bip)) == 3, 60)
    node = announcer(cluster, ip)
    assert node in NODES
    cut_at = None
    try:
        with Stream(cluster, ip, rate=10) as s:
            time.sleep(1)
            cut_at = time.monotonic()
            cluster.topo.set_link(node, up=False)
            wait_for("requests succeed again after the cut", lambda: any(
                ok for t, ok in s.results if t > cut_at + 0.2), 30)
            time.sleep(1)
        back = min(t for t, ok in s.results if ok and t > cut_at) - cut_at
        print(f"L2 failover after the cut of {node}: first success after {back:.2f} s")
        assert back < 10
        new = announcer(cluster, ip)
        assert new in NODES and new != node
        # BGP: the router drops the cut node's next hop (hold time; BFD where configured)
        cut_ip = cluster.topo.hosts[node].ip4
        t0 = time.monotonic()
        wait_for(f"{node}'s next hop gone", lambda: cut_ip not in router_nexthops(cluster, bip), 60)
        print(f"BGP next hop of {node} removed {time.monotonic() - t0 + (t0 - cut_at):.2f} s after the cut")
    finally:
        cluster.topo.set_link(node, up=True)
    wait_for("the node's next hop back", lambda: len(router_nexthops(cluster, bip)) == 3, 90)


def agent_pid(lab, node: str) -> int:
    """The host pid of the agent process of ``node``'s speaker pod (it runs in the node's netns)."""
    want = os.stat(f"/run/netns/{lab.topo.hosts[node].netns}").st_ino
    for pid in subprocess.run(["pgrep", "-f", "metalxdp agent"], capture_output=True, text=True).stdout.split():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no agent process in {node}'s namespace")


def test_speaker_killed_with_sigkill_comes_back_and_adopts_its_pinned_program(cluster, workload):
    """SIGKILL the agent of the announcing node: the kubelet restarts the container with the
    DaemonSet's capabilities (no CAP_SYS_ADMIN), it adopts the same pinned program, and the
    Service answers. Before
    the fix the restarted agent crash-looped: BCC opened the pinned maps by id
    ("could not open bpf map: mx_global, error: Operation not permitted")."""
    workload.backends("kill", 2)
    (ip,) = workload.service("kill-l2", "kill", families=["IPv4"])
    wait_curl(cluster, ip)
    node = announcer(cluster, ip)
    assert node, "nobody answers ARP"
    prog = xdp_prog_id(cluster, node)
    pod = next(p for p in cluster.pods() if p["spec"].get("nodeName") == node
               and p["metadata"]["labels"].get("component") == "speaker")
    name = pod["metadata"]["name"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    os.kill(agent_pid(cluster, node), 9)

    def back():
        p = json.loads(cluster.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout)
        st = p["status"]["containerStatuses"][0]
        return st["restartCount"] > restarts and st["ready"]
    wait_for(f"{name} restarted and Ready again", back, 180)
    logs = cluster.kubectl("logs", "-n", NAMESPACE, name).stdout
    loaded = [json.loads(line) for line in logs.splitlines() if '"xdpLoaded"' in line]
    assert loaded and loaded[-1].get("adopted") is True, logs[-2000:]
    assert xdp_prog_id(cluster, node) == prog, "the restarted agent did not keep the pinned program"
    assert wait_curl(cluster, ip)

# ---- uninstall (last: the session's cluster has no metalxdp afterwards) -------------------------
def test_uninstall_with_delete_k_detaches_xdp_and_removes_the_pins(cluster):
    """`kubectl delete -k` ends the DaemonSet: each agent sees its DaemonSet gone at SIGTERM
    (agent.uninstall), detaches its program and removes its pins. Before, the program stayed
    attached and the pins stayed on every node's bpffs, with nothing left to adopt them."""
    for n in NODES:   # every agent pinned its program and maps at start
        assert cluster.node_exec(n, "ls", "/sys/fs/bpf/metalxdp").stdout.split(), f"no pins on {n}"
    cluster.uninstall()
    wait_for("no metalxdp pods", lambda: not cluster.pods(), 120)
    for n in NODES:
        assert xdp_prog_id(cluster, n) is None, f"XDP still attached on {n}"
        left = cluster.node_exec(n, "sh", "-c", "ls /sys/fs/bpf/metalxdp 2>/dev/null; true").stdout.split()
        assert not left, f"pins left on {n}: {left}"
