"""A real Kubernetes cluster on lab hosts: the control plane on a host of its own
(``apiserver.start_control_plane`` with ``ClusterOptions``) plus one real node (``kubenode``)
per lab host, all on the lab segment as a kind cluster is on its Docker network:

* kubelets, kube-proxy and every pod reach the API server at the control-plane host's address
  (pods through the ``kubernetes`` Service); the host reaches it at 127.0.0.1:PORT;
* the API server reaches webhooks in pods at their pod IPs;
* pod CIDRs come from node IPAM; every node and the control-plane host route the others' pod
  CIDRs (kindnet's job).

Images are docker-archive tarballs imported into every node's containerd (no registry).
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .apiserver import SERVICE_CIDRS, ClusterOptions, ControlPlane
from .kubenode import KubeNode, NodeSpec, pod_routes, start_node, start_proxy_only, wait_ready
from .netns import Host
from .procs import Proc, RigError


@dataclass
class Cluster:
    cp: ControlPlane
    opts: ClusterOptions
    nodes: dict[str, KubeNode] = field(default_factory=dict)
    cp_proxy: Optional[Proc] = None
    pod_cidrs: dict[str, list[str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def stop(self) -> None:
        for n in list(self.nodes.values()):
            n.stop()
        self.nodes.clear()
        if self.cp_proxy:
            self.cp_proxy.stop()
            self.cp_proxy = None

    def memory_kb(self) -> dict[str, dict[str, int]]:
        return {name: n.memory_kb() for name, n in self.nodes.items()}


def start_cluster(cp: ControlPlane, opts: ClusterOptions, hosts: Sequence[Host], workdir: Path,
                  sandbox_image: str, images: Sequence[Path] = (), proxy_mode: str = "nftables",
                  taints: Optional[dict[str, Sequence[str]]] = None,
                  progress: Callable[[str], None] = lambda _m: None) -> Cluster:
    """Make every host in ``hosts`` a Ready node of ``cp``; return the running cluster. On any
    failure everything started here is stopped again."""
    cl = Cluster(cp, opts)
    logs = workdir / "logs"
    try:
        t0 = time.monotonic()
        for h in hosts:
            progress(f"  node {h.name}: containerd, kubelet, kube-proxy")
            spec = NodeSpec(h.name, h.netns, h.ip4, h.ip6 if h.ipv6 else None, workdir / "nodes" / h.name,
                            sandbox_image, cp.node_kubeconfig, opts.cluster_cidr, proxy_mode=proxy_mode,
                            taints=tuple((taints or {}).get(h.name, ())))
            cl.nodes[h.name] = start_node(spec, logs)
        t1 = time.monotonic()
        for kn in cl.nodes.values():
            for img in images:
                kn.import_image(img)
        cl.timings["images_s"] = time.monotonic() - t1
        wait_ready(cp.api_get, list(cl.nodes.values()))
        cl.pod_cidrs = pod_routes(cp.api_get, list(cl.nodes.values()), _run_in_node)
        for node, cidrs in cl.pod_cidrs.items():      # the API server calls webhooks in pods
            for cidr in cidrs:
                spec = cl.nodes[node].spec
                via = spec.ipv6 if ":" in cidr else spec.ipv4
                if via:
                    _run_in(opts.netns, ["ip", "route", "replace", cidr, "via", via])
        # ... at their Service's ClusterIP: kube-proxy on the control-plane host, as in kind
        cl.cp_proxy = start_proxy_only(NodeSpec("control-plane", opts.netns, opts.address, None,
                                                workdir / "nodes" / "control-plane", sandbox_image,
                                                cp.node_kubeconfig, opts.cluster_cidr, proxy_mode=proxy_mode), logs)
        for cidr in SERVICE_CIDRS.split(","):
            _run_in(opts.netns, ["ip", "route", "replace", cidr, "dev", "eth0"])
        # a socket on a node needs a route to a ClusterIP before kube-proxy's DNAT picks the
        # endpoint (real nodes have a default route); any on-link route will do
        for kn in cl.nodes.values():
            for cidr in SERVICE_CIDRS.split(","):
                _run_in_node(kn, ["ip", "route", "replace", cidr, "dev", "eth0"])
        cl.timings["nodes_ready_s"] = time.monotonic() - t0
        return cl
    except BaseException:
        cl.stop()
        raise


def _run_in_node(kn: KubeNode, argv: list[str]) -> None:
    _run_in(kn.spec.netns, argv)


def _run_in(netns: str, argv: list[str]) -> None:
    r = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True)
    if r.returncode != 0:
        raise RigError(f"{' '.join(argv)} in {netns}: {r.stderr.strip()}")
