"""A real Kubernetes node inside a lab network namespace: containerd + runc + the CNI bridge,
a kubelet of the pinned release, and kube-proxy, as kind runs them in a container.

The node is the network namespace the topology made (its ``eth0`` on the lab segment) plus a
private **mount** namespace held by a tiny process, which every daemon of the node joins.
Every workaround this machine needs sits here, each with its reason:

* ``nsenter --net=/run/netns/NAME``, not ``ip netns exec``: the latter remounts /sys, and the
  kubelet then finds /sys/fs/cgroup empty.
* the kubelet writes fixed paths (``/var/lib/kubelet`` for its serving cert and the
  device-plugin socket, ``/var/log/containers``) and machine-wide sysctls
  (``vm.overcommit_memory``, ``kernel.panic``, ``kernel.panic_on_oops``): each node bind-mounts
  its own directory or a plain file over them in its mount namespace;
* ``/sys/fs/bpf``: a bpffs of the node's own, so one node's pinned maps never meet another's
  (the DaemonSet's hostPath ``/sys/fs/bpf`` is then per node, as on real machines);
* CAP_SYS_RESOURCE is missing here, so runc cannot lower ``oom_score_adj``: containerd
  ``restrict_oom_score_adj = true`` and kubelet ``oomScoreAdj: 0``;
* cgroups are v1 here: kubelet ``failCgroupV1: false``, ``cgroupDriver: cgroupfs`` and a
  ``cgroupRoot`` per node, created in every hierarchy beforehand (cpuset values copied);
* pod CIDRs follow ``node.spec.podCIDR`` (kube-controller-manager's node IPAM) through
  containerd's CNI ``conf_template``; routes between nodes' pod CIDRs are set by the caller
  (``pod_routes``), like kind's kindnet.

Configuration rendering is pure (``render_*``); ``start_node`` does the I/O.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .apiserver import binary
from .procs import Proc, RigError, start, wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSCTL_FILES = ("/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops")
CNI_BIN = "/usr/lib/cni"


@dataclass(frozen=True)
class NodeSpec:
    """What one node is: its name, network namespace, addresses and where its state lives."""
    name: str
    netns: str
    ipv4: str
    ipv6: Optional[str]
    workdir: Path
    sandbox_image: str
    kubeconfig: Path
    cluster_cidr: str
    proxy_mode: str = "nftables"
    labels: dict = field(default_factory=dict)
    taints: tuple[str, ...] = ()

    @property
    def sock(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"


# ---- pure renderers -----------------------------------------------------------------------
def render_containerd(n: NodeSpec) -> str:
    d = n.workdir / "containerd"
    return f"""version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
[grpc]
  address = "{n.sock}"
[ttrpc]
  address = "{n.sock}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{n.sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/net.d"
    conf_template = "{d}/cni-template.json"
"""


def render_cni_template(n: NodeSpec) -> str:
    """containerd fills ``.PodCIDRRanges`` from node.spec.podCIDRs (one range per family). The
    bridge is named cni0 (MetalLB's default interface excludes ``^cni.*``); traffic from pods to
    anything outside the node's pod subnets is masqueraded, so pods reach the API server and the
    lab segment without routes back. A Go template, so written by hand rather than json.dumps."""
    ipam_dir = json.dumps(str(n.workdir / "cni-ipam"))
    return """{
 "cniVersion": "1.0.0", "name": "lab",
 "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %s,
            "ranges": [{{range $i, $r := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$r}}"}]{{end}}],
            "routes": [{{range $i, $r := .Routes}}{{if $i}}, {{end}}{"dst": "{{$r}}"}{{end}}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
 ]
}
""" % ipam_dir


def render_kubelet_config(n: NodeSpec) -> str:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": n.ipv4, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{n.name}", "failCgroupV1": False,
        "failSwapOn": False, "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{n.sock}",
        "podLogsDir": str(n.workdir / "pod-logs"),
        "staticPodPath": "", "resolvConf": "/etc/resolv.conf",
        "registerWithTaints": [_taint(t) for t in n.taints],
        # one disk for every node: never evict or garbage-collect images because of it
        "evictionHard": {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%",
                         "nodefs.inodesFree": "0%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "localStorageCapacityIsolation": False,
        "enforceNodeAllocatable": [], "protectKernelDefaults": False,
        "nodeStatusReportFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
        "fileCheckFrequency": "60s", "syncFrequency": "10s",
        # a crashed container is restarted within 1 s instead of the default 10 s doubling to
        # 5 min (KEP-5593, beta and on by default since 1.35), so crash trials (SIGKILL of the
        # agent or of MetalLB's speaker, bench/peer_l2_failover.py --kills) measure the
        # implementation, not the kubelet's back-off
        "crashLoopBackOff": {"maxContainerRestartPeriod": "1s"},
    }
    return json.dumps(cfg, indent=1)


def _taint(t: str) -> dict:
    """``key=value:Effect`` or ``key:Effect`` -> a taint object."""
    kv, effect = t.rsplit(":", 1)
    key, _, value = kv.partition("=")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def render_kube_proxy_config(n: NodeSpec) -> str:
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": n.proxy_mode, "hostnameOverride": n.name, "bindAddress": n.ipv4,
        "clientConnection": {"kubeconfig": str(n.kubeconfig)},
        "clusterCIDR": n.cluster_cidr,
        "healthzBindAddress": f"{n.ipv4}:10256", "metricsBindAddress": "127.0.0.1:10249",
        # conntrack tables are per network namespace; leave their sizes alone
        "conntrack": {"maxPerCore": 0},
    }, indent=1)


# ---- running nodes --------------------------------------------------------------------------
@dataclass
class KubeNode:
    spec: NodeSpec
    holder: Proc
    procs: dict[str, Proc]

    def enter(self) -> list[str]:
        """argv prefix that runs a command inside this node (its network and mount namespaces)."""
        return ["nsenter", f"--net=/run/netns/{self.spec.netns}", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--"]

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.enter(), "ctr", "-a", str(self.spec.sock), "-n", "k8s.io", *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RigError(f"ctr {' '.join(args)} on {self.spec.name}: {r.stderr.strip()[-600:]}")
        return r

    def import_image(self, tarball: Path) -> None:
        self.ctr("images", "import", "--no-unpack", str(tarball))

    def sandbox_netns(self) -> set[str]:
        """Names (under /run/netns) of the network namespaces of this node's pod sandboxes, from
        containerd's container specs. Empty when containerd does not answer."""
        names: set[str] = set()
        if "containerd" not in self.procs:
            return names
        try:
            ids = self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split()
            for cid in ids:
                r = self.ctr("containers", "info", cid, check=False, timeout=30)
                try:
                    spec = json.loads(r.stdout).get("Spec") or {}
                except ValueError:
                    continue
                for ns in (spec.get("linux") or {}).get("namespaces") or []:
                    path = ns.get("path") or ""
                    if ns.get("type") == "network" and path.rsplit("/", 1)[0] in ("/var/run/netns", "/run/netns"):
                        names.add(path.rsplit("/", 1)[1])
        except (subprocess.TimeoutExpired, OSError):
            pass
        return names

    def stop(self) -> None:
        # the pod sandboxes' namespaces are bind mounts under /run/netns that nobody removes once
        # containerd is gone (no CNI DEL): note them first, delete them last
        netns = self.sandbox_netns()
        for name in ("kube-proxy", "kubelet", "containerd"):
            p = self.procs.pop(name, None)
            if p:
                p.stop(timeout=10)
        _kill_shims(self.spec)
        for ns in sorted(netns):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
        self.holder.stop()
        _remove_cgroups(self.spec.name)

    def memory_kb(self) -> dict[str, int]:
        """RSS of the node's daemons (kB)."""
        out = {}
        for name, p in self.procs.items():
            out[name] = _rss_kb(p.pid)
        return out


def _rss_kb(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1])
    for child in _children(pid):
        total += _rss_kb(child)
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _prepare_cgroups(node: str) -> None:
    """``/<node>`` in every v1 hierarchy; cpuset needs its cpus/mems before tasks may join."""
    for h in CGROUP_ROOT.iterdir():
        if h.name == "unified" or not h.is_dir() or h.is_symlink():
            continue
        d = h / node
        d.mkdir(exist_ok=True)
        if h.name.startswith("cpuset") or h.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (h / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())


def _remove_cgroups(node: str) -> None:
    """Remove ``/<node>`` (deepest first) in every hierarchy; cgroups still holding tasks stay."""
    for h in CGROUP_ROOT.iterdir():
        d = h / node
        if not d.is_dir():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass


def _kill_shims(n: NodeSpec) -> None:
    """containerd-shim processes of this node outlive containerd by design: end them and the
    containers they hold (their command line names the node's containerd socket)."""
    sock = str(n.sock)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in b" ".join(cmd):
            try:
                os.killpg(int(pid_dir.name), 9)
            except OSError:
                try:
                    os.kill(int(pid_dir.name), 9)
                except OSError:
                    pass


HOLDER_SCRIPT = r"""
set -e
# the node's own views of the kubelet's fixed paths, sysctl files and bpffs
mount --make-rprivate /
mkdir -p /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni
mount --bind "$D/var-lib-kubelet" /var/lib/kubelet
mount --bind "$D/var-log-containers" /var/log/containers
mount --bind "$D/var-log-pods" /var/log/pods
mount --bind "$D/var-lib-cni" /var/lib/cni
for f in overcommit_memory panic panic_on_oops; do
  case $f in overcommit_memory) p=/proc/sys/vm/$f ;; *) p=/proc/sys/kernel/$f ;; esac
  mount --bind "$D/sysctl/$f" "$p"
done
mount -t bpf bpf /sys/fs/bpf
# as on a systemd host, mounts propagate to containers (HostToContainer needs a shared source);
# the node's peer groups are its own: nothing propagates back to the machine or to other nodes
mount --make-rshared /
echo holding
exec sleep infinity
"""


def start_node(n: NodeSpec, log_dir: Path, timeout: float = 90) -> KubeNode:
    """Start containerd, the kubelet and kube-proxy of ``n``; return once containerd answers
    (the caller waits for the Node to be Ready: see ``wait_ready``)."""
    for tool in ("nsenter", "unshare", "containerd", "runc", "ctr"):
        if not shutil.which(tool):
            raise RigError(f"{tool} not found: run `make setup` (installs containerd, runc, CNI plugins)")
    if not Path(CNI_BIN, "bridge").exists():
        raise RigError(f"{CNI_BIN}/bridge missing: install containernetworking-plugins")
    d = n.workdir
    for sub in ("var-lib-kubelet", "var-log-containers", "var-log-pods", "var-lib-cni", "sysctl",
                "containerd/net.d", "pod-logs", "cni-ipam"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for f in SYSCTL_FILES:
        (d / "sysctl" / Path(f).name).write_text(Path(f).read_text())
    (d / "containerd" / "config.toml").write_text(render_containerd(n))
    (d / "containerd" / "cni-template.json").write_text(render_cni_template(n))
    (d / "kubelet.json").write_text(render_kubelet_config(n))
    (d / "kube-proxy.json").write_text(render_kube_proxy_config(n))
    _prepare_cgroups(n.name)

    env = {**os.environ, "D": str(d)}
    holder = start(f"{n.name}-mountns", ["nsenter", f"--net=/run/netns/{n.netns}", "unshare", "--mount",
                                         "--propagation", "private", "sh", "-c", HOLDER_SCRIPT], log_dir, env=env)
    node = KubeNode(n, holder, {})
    try:
        wait_for(f"{n.name}: mount namespace", lambda: "holding" in holder.log_path.read_text(), 15, proc=holder)
        enter = node.enter()
        node.procs["containerd"] = start(f"{n.name}-containerd",
                                         [*enter, "containerd", "--config", str(d / "containerd" / "config.toml")],
                                         log_dir)
        wait_for(f"{n.name}: containerd", lambda: node.ctr("version", check=False).returncode == 0, timeout,
                 proc=node.procs["containerd"], interval=0.25)
        labels = ",".join(f"{k}={v}" for k, v in n.labels.items())
        node_ips = n.ipv4 + (f",{n.ipv6}" if n.ipv6 else "")
        node.procs["kubelet"] = start(f"{n.name}-kubelet", [
            *enter, binary("kubelet"), f"--config={d / 'kubelet.json'}", f"--kubeconfig={n.kubeconfig}",
            f"--hostname-override={n.name}", f"--node-ip={node_ips}", f"--root-dir={d / 'var-lib-kubelet'}",
            *([f"--node-labels={labels}"] if labels else []), "--v=1"], log_dir)
        node.procs["kube-proxy"] = start(f"{n.name}-kube-proxy", [
            *enter, binary("kube-proxy"), f"--config={d / 'kube-proxy.json'}", "--v=1"], log_dir)
        return node
    except BaseException:
        node.stop()
        raise


def start_proxy_only(n: NodeSpec, log_dir: Path) -> Proc:
    """kube-proxy alone in ``n.netns``: the control-plane host's, so the API server reaches
    webhook Services at their ClusterIPs (it dials the ClusterIP, as on kind's control plane)."""
    n.workdir.mkdir(parents=True, exist_ok=True)
    (n.workdir / "kube-proxy.json").write_text(render_kube_proxy_config(n))
    return start(f"{n.name}-kube-proxy", [binary("kube-proxy"), f"--config={n.workdir / 'kube-proxy.json'}",
                                          "--v=1"], log_dir, netns=n.netns)


def node_ready(api_get, name: str) -> bool:
    try:
        node = api_get(f"/api/v1/nodes/{name}")
    except Exception:  # noqa: BLE001 - not registered yet
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def wait_ready(api_get, nodes: list[KubeNode], timeout: float = 120) -> None:
    for kn in nodes:
        wait_for(f"node {kn.spec.name} Ready", lambda kn=kn: node_ready(api_get, kn.spec.name), timeout,
                 proc=kn.procs["kubelet"], interval=0.5)


def pod_routes(api_get, nodes: list[KubeNode], run_in) -> dict[str, list[str]]:
    """kindnet's job: every node routes every other node's pod CIDRs (both families) to that
    node's address. Returns node -> podCIDRs. ``run_in(node, argv)`` runs a command in a node's
    network namespace."""
    cidrs: dict[str, list[str]] = {}
    for kn in nodes:
        wait_for(f"{kn.spec.name}: podCIDRs assigned", lambda kn=kn: bool(
            (api_get(f"/api/v1/nodes/{kn.spec.name}").get("spec") or {}).get("podCIDRs")), 60)
        cidrs[kn.spec.name] = api_get(f"/api/v1/nodes/{kn.spec.name}")["spec"]["podCIDRs"]
    for kn in nodes:
        for other in nodes:
            if other is kn:
                continue
            for c in cidrs[other.spec.name]:
                via = other.spec.ipv6 if ":" in c else other.spec.ipv4
                if via:
                    run_in(kn, ["ip", "route", "replace", c, "via", via])
    return cidrs
