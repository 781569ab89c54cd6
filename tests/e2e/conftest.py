"""The e2e suite's cluster: real nodes (containerd + kubelet + kube-proxy), metalxdp installed
with `kubectl apply -k` from its own image (metalxdp.clusterlab). One cluster for the session;
tests make and remove their own Services and backends."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Optional

import pytest

from metalxdp.lab.kube_cluster import ClusterLab
from metalxdp.rig.frr import route_gateways
from metalxdp.rig.procs import wait_for


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    lab = ClusterLab(tmp_path_factory.mktemp("cluster"))
    lab.up(progress=print)

    def sandboxes_now() -> set:
        return {ns for node in lab.cluster.nodes.values() for ns in node.sandbox_netns()}

    # noted at the start too: the last test (uninstall) may leave no pod at all by the end
    sandboxes = sandboxes_now()
    yield lab
    sandboxes |= sandboxes_now()
    lab.down()
    # the pods' network namespaces go with the nodes (they used to stay in /run/netns)
    assert sandboxes, "no pod sandbox namespaces found: sandbox_netns() is broken"
    left = sandboxes & set(os.listdir("/run/netns"))
    assert not left, f"pod sandbox namespaces left behind: {sorted(left)}"


def client_curl(lab: ClusterLab, ip: str, port: int = 80, timeout: float = 2.0) -> Optional[str]:
    url = f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"
    r = subprocess.run(["ip", "netns", "exec", lab.topo.hosts["client"].netns, "curl", "-s", "-g",
                        "--max-time", str(timeout), url], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def wait_curl(lab: ClusterLab, ip: str, timeout: float = 60, **kw) -> str:
    got: list = [None]

    def check():
        got[0] = client_curl(lab, ip, **kw)
        return got[0] is not None
    wait_for(f"HTTP answer from {ip} at the client", check, timeout)
    return got[0]


def parse_backend(line: str) -> dict:
    """`pod=web-x node=node2 client=192.0.2.100 port=8080` -> dict."""
    return dict(kv.split("=", 1) for kv in line.split())


def router_nexthops(lab: ClusterLab, prefix: str) -> set[str]:
    fam = "-6" if ":" in prefix else "-4"
    r = lab.topo.hosts["router"].run(["ip", "-j", fam, "route", "show", prefix], check=False)
    return route_gateways(r.stdout)


class Workload:
    """Backends (a Deployment of the backend image) and LoadBalancer Services, removed after the test."""

    def __init__(self, lab: ClusterLab):
        self.lab, self.objs = lab, []
        self.ns = "e2e-" + secrets.token_hex(3)
        lab.kubectl("create", "namespace", self.ns)

    def apply(self, obj: dict) -> dict:
        obj.setdefault("metadata", {})["namespace"] = self.ns
        self.lab.kubectl("apply", "-f", "-", input_=json.dumps(obj))
        return obj

    def backends(self, app: str, replicas: int = 2, node_selector: Optional[dict] = None) -> None:
        image = self.lab.images["backend"].ref
        env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
               {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
        spec = {"containers": [{"name": "web", "image": image, "imagePullPolicy": "Never", "env": env,
                                "ports": [{"containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}}],
                "terminationGracePeriodSeconds": 1}
        if node_selector:
            spec["nodeSelector"] = node_selector
        self.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                             "template": {"metadata": {"labels": {"app": app}}, "spec": spec}}})
        self.lab.kubectl("-n", self.ns, "rollout", "status", f"deployment/{app}", "--timeout=120s", timeout=130)

    def service(self, name: str, app: str, pool: Optional[str] = None, etp: str = "Cluster",
                families: Optional[list] = None, policy: Optional[str] = None) -> list[str]:
        ann = {"metallb.io/address-pool": pool} if pool else {}
        spec = {"type": "LoadBalancer", "selector": {"app": app}, "externalTrafficPolicy": etp,
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "name": "http"}]}
        if families:
            spec["ipFamilies"] = families
        if policy:
            spec["ipFamilyPolicy"] = policy
        self.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "annotations": ann},
                    "spec": spec})
        want = len(families) if families else 1
        ips: list[str] = []

        def check():
            nonlocal ips
            svc = json.loads(self.lab.kubectl("-n", self.ns, "get", "svc", name, "-o", "json").stdout)
            ips = [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
            return len(ips) == want
        wait_for(f"service {name} IPs", check, 60)
        return ips

    def close(self) -> None:
        self.lab.kubectl("delete", "namespace", self.ns, "--wait=true", "--timeout=120s", check=False, timeout=130)


@pytest.fixture
def workload(cluster):
    w = Workload(cluster)
    yield w
    w.close()
