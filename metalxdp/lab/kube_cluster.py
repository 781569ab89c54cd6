"""The cluster lab: metalxdp installed the way users install it, on a real cluster.

The same segment, router, client, pools and peers as the process lab (``LabSpec``), but every
node is a real Kubernetes node (containerd + kubelet + kube-proxy, ``rig.cluster``), the
control plane runs on a host of its own, and metalxdp arrives as pods from its own image:
``kubectl apply -k`` of a kustomize overlay over ``deploy/`` that only sets the image. The
controller Deployment and the agent DaemonSet then reach Ready through their own probes.
"""
from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .spec import NAMESPACE, LabSpec
from ..rig.apiserver import ClusterOptions, ControlPlane, binary, start_control_plane
from ..rig.cluster import Cluster, start_cluster
from ..rig.frr import FRRRouter, render_frr_conf
from ..rig.images import ImageTar, build_images
from ..rig.netns import Topology
from ..rig.procs import RigError, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
FRR_ROOT = Path("/run/metalxdp/frr")
CP_HOST = 5          # the control-plane host: 192.0.2.5 / 2001:db8:0:1::5

# what the kubelet answers when a container's log is gone (replaced or collected)
NO_LOGS = "unable to retrieve container logs"


def cri_log_messages(text: str) -> list[str]:
    """The messages of a CRI log file ("<time> <stream> <P|F> <message>" per line), partial
    lines (P) joined to the line that ends them (F); lines in no such form are kept as they are."""
    out, partial = [], ""
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[1] in ("stdout", "stderr") and parts[2] in ("P", "F"):
            partial += parts[3] if len(parts) == 4 else ""
            if parts[2] == "F":
                out.append(partial)
                partial = ""
        elif line:
            out.append(line)
    if partial:
        out.append(partial)
    return out


def overlay(workdir: Path, ref: str, deploy: Path = DEPLOY, name: str = "install") -> Path:
    """A kustomize overlay over ``deploy`` that sets the metalxdp image to ``ref``, as a user
    sets theirs (``images:``), without editing a manifest. Returns its directory."""
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    image, _, tag = ref.rpartition(":")
    (d / "kustomization.yaml").write_text(json.dumps({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(deploy, d)],
        "images": [{"name": "localhost/metalxdp", "newName": image, "newTag": tag}]}, indent=1))
    return d


def operator_overlay(workdir: Path, ref: str, deploy: Path = DEPLOY / "operator") -> Path:
    """The operator's overlay as docs/install.md tells a user to write one: ``images:`` for the
    operator's own container and a patch of its ``--image=`` argument (what it renders)."""
    d = overlay(workdir, ref, deploy, name="install-operator")
    k = json.loads((d / "kustomization.yaml").read_text())
    k["patches"] = [{"target": {"kind": "Deployment", "name": "metalxdp-operator"},
                     "patch": json.dumps([{"op": "replace", "path": "/spec/template/spec/containers/0/args/2",
                                           "value": f"--image={ref}"}])}]
    (d / "kustomization.yaml").write_text(json.dumps(k, indent=1))
    return d


def kubectl(kubeconfig: str, *args: str, check: bool = True, input_: Optional[str] = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    r = subprocess.run([binary("kubectl"), f"--kubeconfig={kubeconfig}", *args], capture_output=True,
                       text=True, timeout=timeout, input=input_)
    if check and r.returncode != 0:
        raise RigError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
    return r


@dataclass
class ClusterLab:
    """``up()`` builds it, ``down()`` removes everything it made (also after a failed up)."""
    workdir: Path
    # graceful restart on the BGP sessions: the router keeps a node's routes while its agent
    # pod is replaced (a rollout), as docs/bgp.md recommends for hitless upgrades
    spec: LabSpec = field(default_factory=lambda: LabSpec(graceful_restart=True))
    topo: Optional[Topology] = None
    cp: Optional[ControlPlane] = None
    cluster: Optional[Cluster] = None
    frr: Optional[FRRRouter] = None
    images: dict[str, ImageTar] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    image_ref: str = ""           # the metalxdp image the install runs (a rolling update changes it)

    @property
    def kubeconfig(self) -> str:
        return str(self.cp.kubeconfig)

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return kubectl(self.kubeconfig, *args, **kw)

    def _stage(self, name: str, t0: float, progress: Callable[[str], None]) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - t0, 2)
        progress(f"  ... {name}: {now - t0:.1f} s")
        return now

    def up(self, progress: Callable[[str], None] = print, install: bool = True) -> "ClusterLab":
        spec = self.spec
        t = t_all = time.monotonic()
        try:
            progress("[cluster 1/6] images: metalxdp, pause, backend (cached by content hash)")
            self.images = build_images(log_path=self.workdir / "image-build.log")
            t = self._stage("images", t, progress)

            progress(f"[cluster 2/6] network: control plane, {spec.nodes} nodes, router, client on one segment")
            self.topo = topo = Topology()
            addrs = spec.host_addresses()
            cp4 = spec._addr(spec.lan4, CP_HOST)
            cp6 = spec._addr(spec.lan6, CP_HOST)
            topo.add_host("cp", ipv4=[cp4], ipv6=[cp6])
            for h in ["router", *spec.node_names(), "client"]:
                v4, v6 = addrs[h]
                topo.add_host(h, ipv4=v4, ipv6=v6, forwarding=(h == "router"))
            for route in spec.bgp_routes:
                topo.hosts["client"].run(["ip", "route", "add", route, "via", spec.router_ip(6 if ":" in route else 4)])
            t = self._stage("network", t, progress)

            progress("[cluster 3/6] control plane: etcd, kube-apiserver, controller-manager, scheduler")
            opts = ClusterOptions(netns=topo.hosts["cp"].netns, address=cp4.split("/")[0])
            self.cp = start_control_plane(self.workdir / "cp", cluster=opts)
            t = self._stage("control_plane", t, progress)

            progress(f"[cluster 4/6] nodes: containerd + kubelet + kube-proxy on {', '.join(spec.node_names())}")
            hosts = [topo.hosts[n] for n in spec.node_names()]
            self.cluster = start_cluster(self.cp, opts, hosts, self.workdir, self.images["pause"].ref,
                                         [i.path for i in self.images.values() if i.name != "base"],
                                         progress=progress)
            self._xdp_pass_on_bridge_ports()
            t = self._stage("nodes", t, progress)

            progress(f"[cluster 5/6] FRR router (AS {spec.router_asn}) peering with every node")
            self.frr = FRRRouter(topo.hosts["router"], FRR_ROOT / topo.id)
            self.frr.start(render_frr_conf(spec.router_spec()))
            t = self._stage("router", t, progress)

            if install:
                progress("[cluster 6/6] metalxdp: kubectl apply -k (image set by kustomize), pods Ready, lab resources")
                self.install()
                t = self._stage("install", t, progress)
            self.timings["total"] = round(time.monotonic() - t_all, 2)
            return self
        except BaseException:
            progress("cluster lab up failed: removing what was created")
            self.down()
            raise

    def _xdp_pass_on_bridge_ports(self) -> None:
        """Native XDP_TX on a veth needs an XDP program on its peer: an XDP_PASS one on each
        node's bridge port (production NICs need nothing of the kind)."""
        for n in self.spec.node_names():
            r = subprocess.run(["ip", "netns", "exec", self.topo.switch_netns, sys.executable, "-m", "agent.xdp_cli",
                                "--iface", self.topo.hosts[n].peer_ifname, "--pass-only"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RigError(f"XDP_PASS program on the bridge port of {n} failed: {r.stderr[-800:]}")

    def install(self, timeout: float = 240, ref: Optional[str] = None) -> subprocess.CompletedProcess:
        """``kubectl apply -k`` of the overlay (image ``ref``, default: the one built here), the
        pods Ready, then the lab's pools, advertisements and peers. Returns the apply's output."""
        self.image_ref = ref or self.image_ref or self.images["metalxdp"].ref
        r = self.kubectl("apply", "-k", str(overlay(self.workdir, self.image_ref)))
        self.wait_installed(timeout)
        self.apply_lab_resources()
        return r

    def tag_image(self, tag: str) -> str:
        """The metalxdp image under a new tag on every node (what a registry push of a new
        release would give the kubelets). Returns the new reference."""
        src = self.images["metalxdp"].ref
        ref = f"{src.rpartition(':')[0]}:{tag}"
        for node in self.cluster.nodes.values():
            node.ctr("images", "tag", "--force", src, ref)
        return ref

    def install_operator(self, cr: dict, timeout: float = 240) -> None:
        """The operator path of docs/install.md: namespace and CRDs, ``kubectl apply -k`` of the
        operator overlay, then the MetalLB CR; the operator's workloads Ready, lab resources."""
        self.image_ref = self.image_ref or self.images["metalxdp"].ref
        self.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"), "-f", str(DEPLOY / "crds"))
        self.kubectl("apply", "-k", str(operator_overlay(self.workdir, self.image_ref)))
        self.kubectl("apply", "-f", str(DEPLOY / "webhook"))      # "optional but recommended"
        self.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/metalxdp-operator",
                     f"--timeout={int(timeout)}s", timeout=timeout + 10)
        self.kubectl("apply", "-f", "-", input_=json.dumps(cr))
        wait_for("the operator's controller Deployment and speaker DaemonSet", lambda: all(
            self.kubectl("-n", NAMESPACE, "get", w, check=False).returncode == 0
            for w in ("deployment/controller", "daemonset/speaker")), 60)
        self.wait_installed(timeout)
        self.apply_lab_resources()

    def uninstall_operator(self) -> None:
        self.kubectl("delete", "metallbs.metallb.io", "--all", "-n", NAMESPACE, "--wait=true", check=False)
        wait_for("no metalxdp pods but the operator's", lambda: all(
            p["metadata"]["labels"].get("app") == "metalxdp-operator" for p in self.pods()), 120)
        self.kubectl("delete", "-f", str(DEPLOY / "webhook"), "--ignore-not-found")
        self.kubectl("delete", "-k", str(operator_overlay(self.workdir, self.image_ref)),
                     "--ignore-not-found", "--wait=true", timeout=300)

    def apply_lab_resources(self) -> None:
        for obj in self.spec.metallb_resources():
            # the controller is Ready once its webhook serves, but kube-proxy programs the
            # webhook Service's new endpoint a moment later: until then the API server's call
            # is rejected ("no route to host"). Users see the same right after an install.
            err: list = [""]

            def applied(obj=obj):
                r = self.kubectl("apply", "-f", "-", input_=json.dumps(obj), check=False)
                err[0] = r.stderr.strip()
                if r.returncode != 0 and "failed calling webhook" not in err[0]:
                    raise RigError(f"kubectl apply failed: {err[0]}")
                return r.returncode == 0
            try:
                wait_for(f"{obj['kind']} {obj['metadata']['name']} admitted by the webhook", applied, 60, interval=1)
            except RigError as e:
                raise RigError(f"{e}: {err[0]}") from e

    def wait_installed(self, timeout: float = 240) -> None:
        for workload in ("deployment/controller", "daemonset/speaker"):
            r = self.kubectl("-n", NAMESPACE, "rollout", "status", workload, f"--timeout={int(timeout)}s",
                             timeout=timeout + 10, check=False)
            if r.returncode != 0:
                raise RigError(f"{workload} not rolled out: {r.stderr.strip()}\n{self.not_ready_report()}")

    def not_ready_report(self, lines: int = 15) -> str:
        """The metalxdp pods that are not Ready, each with its last log lines (the component's
        own error, e.g. a capability the DaemonSet lacks) and the kubelet's last event."""
        out = []
        for p in self.pods():
            st = (p.get("status") or {}).get("containerStatuses") or [{}]
            if st[0].get("ready"):
                continue
            name = p["metadata"]["name"]
            logs = self.kubectl("logs", "-n", NAMESPACE, name, f"--tail={lines}", check=False).stdout.strip()
            prev = self.kubectl("logs", "-n", NAMESPACE, name, "--previous", f"--tail={lines}",
                                check=False).stdout.strip()
            text = next((t for t in (prev, logs) if t and not t.startswith(NO_LOGS)), "")
            if not text:
                # a crash-looping container is replaced (and the dead one collected) between the
                # status and the log request: seen in CI, the kubelet answered "unable to retrieve
                # container logs" for every pod. The files under podLogsDir are still there.
                text = self.pod_log_files_tail(p, lines) or prev or logs or "(no log)"
            state = json.dumps(st[0].get("state") or {}, sort_keys=True)[:300]
            out.append(f"--- pod {name} on {p['spec'].get('nodeName')}: {state}\n{text}")
        return "\n".join(out) or "(every pod Ready)"

    def pod_log_files_tail(self, pod: dict, lines: int = 15) -> str:
        """The last ``lines`` of the newest non-empty log file the kubelet wrote for ``pod`` (CRI
        format, podLogsDir of its node), or "" when there is none."""
        node = self.cluster.nodes.get(pod["spec"].get("nodeName") or "") if self.cluster else None
        if node is None:
            return ""
        m = pod["metadata"]
        files = (node.spec.workdir / "pod-logs").glob(f"{m['namespace']}_{m['name']}_{m['uid']}/*/*.log*")
        for f in sorted(files, key=lambda f: f.stat().st_mtime, reverse=True):
            text = cri_log_messages(f.read_text(errors="replace"))
            if text:
                return "\n".join(text[-lines:])
        return ""

    def uninstall(self) -> None:
        d = overlay(self.workdir, self.image_ref or self.images["metalxdp"].ref)
        self.kubectl("delete", "-k", str(d), "--ignore-not-found", "--wait=true", timeout=300)

    def pods(self, namespace: str = NAMESPACE) -> list[dict]:
        return json.loads(self.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]

    def node_exec(self, node: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command inside a node (its network and mount namespaces: its own bpffs)."""
        r = subprocess.run([*self.cluster.nodes[node].enter(), *argv], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RigError(f"{' '.join(argv)} on {node}: {r.stderr.strip()[-600:]}")
        return r

    def memory_kb(self) -> dict:
        return self.cluster.memory_kb() if self.cluster else {}

    def down(self, remove: bool = False) -> None:
        """``remove``: delete the work directory too (3-4 GB: every node's containerd root with
        the images; benchmarks left one per run in /tmp until stop 40, and a full
        `make bench-peer` filled the disk)."""
        # nodes first, then the router, the control plane and last the namespaces they live in
        for part, stop in (("cluster", "stop"), ("frr", "stop"), ("cp", "stop"), ("topo", "destroy")):
            obj = getattr(self, part)
            if obj:
                getattr(obj, stop)()
                setattr(self, part, None)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)


def wait_pods_ready(lab: ClusterLab, selector: str, count: int, namespace: str = NAMESPACE,
                    timeout: float = 120) -> list[dict]:
    got: list[dict] = []

    def check() -> bool:
        nonlocal got
        items = json.loads(lab.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
        got = [p for p in items if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in (p.get("status") or {}).get("conditions") or [])]
        return len(got) == count
    wait_for(f"{count} Ready pods {selector}", check, timeout)
    return got
