"""A real Kubernetes control plane for the lab and the tests: etcd + kube-apiserver (+
kube-controller-manager) of the release pinned in ``scripts/kube/VERSION``, built from Go
modules by `make setup`.

Everything listens on 127.0.0.1 on ports the kernel picks, so parallel runs don't clash.
Lab node namespaces reach the API server through a loopback forwarder (see ``lab.py``).
"""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .procs import Proc, RigError, free_port, start, wait_for

CACHE = Path(os.environ.get("METALXDP_CACHE", "/var/cache/metalxdp"))
BIN = CACHE / "bin"
ADMIN_TOKEN = "metalxdp-admin-token"
# ClusterIPs are only numbers handed out by the API server; they come from the benchmark range
# so nothing here ever looks like a real network.
SERVICE_CIDRS = "198.18.224.0/19,2001:db8:ffff::/112"   # /19: room for 8,190 Services (bench/scale.py creates 5,000)


def binary(name: str) -> str:
    """Path of a control-plane binary: the cached build first, then PATH."""
    p = BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise RigError(f"{name} not found in {BIN} or PATH: run `make setup` (it builds "
                       f"the pinned Kubernetes release from Go modules and caches it)")
    return found


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ controller-manager). ``kubeconfig`` is an admin config."""
    workdir: Path
    port: int
    kubeconfig: Path
    procs: list[Proc] = field(default_factory=list)
    node_kubeconfig: Optional[Path] = None   # for kubelets/kube-proxy on lab nodes (cluster mode)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def api_get(self, path: str) -> dict:
        """GET ``path`` from the API server as admin (used by readiness checks and tests)."""
        ctx = ssl._create_unverified_context()  # self-signed serving cert of a throwaway server
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            body = r.read()
        try:
            return json.loads(body)
        except ValueError:
            return {"raw": body.decode(errors="replace")}


def _write_kubeconfig(path: Path, url: str) -> None:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: metalxdp
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: metalxdp
  context: {{cluster: metalxdp, user: admin, namespace: default}}
current-context: metalxdp
""")


@dataclass(frozen=True)
class ClusterOptions:
    """What a control plane for real nodes (kubelets) needs beyond the API-only rig. As in
    kind, it runs on a host of its own on the lab segment, so kubelets, pods (through the
    ``kubernetes`` Service) and the API server's calls to webhooks in pods all travel the lab
    network; the host reaches it at 127.0.0.1:PORT through a forwarder, as before.

    netns: the control-plane host's network namespace; address: its IPv4 address there.
    cluster_cidr: pod addresses (node IPAM hands each node a /node_mask of it).
    """
    netns: str
    address: str
    cluster_cidr: str = "198.19.0.0/16,2001:db8:19::/56"   # dual stack: IPv4 and IPv6 pod addresses
    node_mask: int = 24
    node_mask6: int = 64


# kube-controller-manager controllers: the API-only rig needs namespace deletion, GC and
# EndpointSlices; a cluster also needs workloads, node IPAM and lifecycle, and pod tokens
RIG_CONTROLLERS = "namespace,garbagecollector,serviceaccount,clusterrole-aggregation,endpointslice,endpoint"
CLUSTER_CONTROLLERS = (RIG_CONTROLLERS + ",deployment-controller,replicaset-controller,daemonset-controller,"
                       "statefulset-controller,node-ipam-controller,node-lifecycle-controller,"
                       "pod-garbage-collector-controller,serviceaccount-token-controller,"
                       "root-ca-certificate-publisher-controller,ttl-controller,taint-eviction-controller,"
                       "endpointslice-mirroring-controller,disruption-controller")


def _healthz(port: int, netns: Optional[str] = None) -> bool:
    """A component's /healthz on its secure port (anonymous access to /healthz is the default)."""
    if netns:
        r = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sk", "--max-time", "2",
                            f"https://127.0.0.1:{port}/healthz"], capture_output=True, text=True)
        return r.stdout.strip() == "ok"
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ssl._create_unverified_context(),
                                    timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_control_plane(workdir: Optional[Path] = None, controller_manager: bool = True,
                        timeout: float = 90, cluster: Optional[ClusterOptions] = None) -> ControlPlane:
    """Start etcd, kube-apiserver and (optionally) kube-controller-manager; with ``cluster``
    also kube-scheduler and what real nodes need. Return when /readyz is ok. On any failure
    everything started so far is stopped and RigError says why."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="metalxdp-cp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    ns = cluster.netns if cluster else None
    etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()
    cp = ControlPlane(workdir, api_port, workdir / "kubeconfig")
    try:
        sa_key = workdir / "sa.key"
        if not sa_key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True,
                           capture_output=True)
        (workdir / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        certs = workdir / "certs"
        certs.mkdir(exist_ok=True)

        etcd = start("etcd", [binary("etcd"), "--data-dir", str(workdir / "etcd"),
                              "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                              "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                              "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                              "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                              "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                              "--log-level", "warn"], logs, netns=ns)
        cp.procs.append(etcd)

        api = start("kube-apiserver", [
            binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            f"--bind-address={'0.0.0.0' if cluster else '127.0.0.1'}",
            f"--advertise-address={cluster.address if cluster else '127.0.0.1'}",
            f"--secure-port={api_port}",
            f"--cert-dir={certs}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--api-audiences=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDRS}",
            # a cluster's pods get service-account tokens; the API-only rig has no token controller
            *([] if cluster else ["--disable-admission-plugins=ServiceAccount"]),
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--allow-privileged=true", "--v=0",
        ], logs, netns=ns)
        cp.procs.append(api)
        if cluster:
            fwd = start("api-forward-host", [sys.executable, "-m", "metalxdp.rig.forward", "--port", str(api_port),
                                             "--into-netns", ns, "--upstream-host", cluster.address], logs)
            cp.procs.append(fwd)
            cp.node_kubeconfig = workdir / "kubeconfig-nodes"
            _write_kubeconfig(cp.node_kubeconfig, f"https://{cluster.address}:{api_port}")

        def ready() -> bool:
            return cp.api_get("/readyz").get("raw", "").strip() == "ok"

        wait_for("kube-apiserver /readyz", ready, timeout, proc=api, interval=0.25)
        _write_kubeconfig(cp.kubeconfig, cp.url)

        if controller_manager:
            kcm_port = free_port()
            kcm = start("kube-controller-manager", [
                binary("kube-controller-manager"),
                f"--kubeconfig={cp.kubeconfig}", "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--controllers={CLUSTER_CONTROLLERS if cluster else RIG_CONTROLLERS}",
                f"--service-account-private-key-file={sa_key}",
                *([f"--root-ca-file={certs / 'apiserver.crt'}", "--allocate-node-cidrs=true",
                   f"--cluster-cidr={cluster.cluster_cidr}", f"--node-cidr-mask-size-ipv4={cluster.node_mask}",
                   f"--node-cidr-mask-size-ipv6={cluster.node_mask6}",
                   "--node-monitor-grace-period=20s"] if cluster else []),
                "--leader-elect=false", "--v=0",
            ], logs, netns=ns)
            cp.procs.append(kcm)
            wait_for("kube-controller-manager /healthz", lambda: _healthz(kcm_port, ns), timeout, proc=kcm,
                     interval=0.25)
        if cluster:
            sched_port = free_port()
            sched = start("kube-scheduler", [
                binary("kube-scheduler"), f"--kubeconfig={cp.kubeconfig}", "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}", "--leader-elect=false", "--v=0"], logs, netns=ns)
            cp.procs.append(sched)
            wait_for("kube-scheduler /healthz", lambda: _healthz(sched_port, ns), timeout, proc=sched,
                     interval=0.25)
        return cp
    except BaseException:
        cp.stop()
        raise
