"""The network-namespace lab: a real API server, N nodes, an FRR router and a client.

``metalxdp lab up`` builds it, ``metalxdp lab status [--json]`` describes it, ``metalxdp lab
down`` removes exactly what ``up`` created, also after a crash: the state file is written after
every step, and ``down`` also sweeps namespaces named after the lab's id.

Layout (defaults in metalxdp.lab.spec): one L2 segment 192.0.2.0/24 + 2001:db8:0:1::/64 with
router .1, nodes .11-.1N, client .100. The client reaches L2 VIPs directly and BGP VIPs
(203.0.113.0/24, 2001:db8:0:2::/64) through the router.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import click

from ..rig.apiserver import binary, start_control_plane
from ..rig.frr import FRRRouter, render_frr_conf
from ..rig.netns import Host, Topology, destroy_namespaces, list_namespaces
from ..rig.procs import RigError, start, stop_pid, wait_for
from .spec import NAMESPACE, LabSpec

STATE_ROOT = Path(os.environ.get("METALXDP_LAB_ROOT", "/run/metalxdp/labs"))
REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "deploy" / "crds"
BPFFS_ROOT = Path("/sys/fs/bpf/metalxdp")
FRR_ROOT = Path("/run/metalxdp/frr")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@dataclass
class Lab:
    name: str = "default"
    root: Path = STATE_ROOT

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    # ---- state ------------------------------------------------------------------------
    def load(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def topology(self, state: Optional[dict] = None) -> Topology:
        return Topology.from_dict((state or self.load())["topology"])

    def host(self, name: str) -> Host:
        return self.topology().hosts[name]

    def kubeconfig(self) -> str:
        return self.load()["kubeconfig"]

    # ---- up ---------------------------------------------------------------------------
    def up(self, spec: LabSpec = LabSpec(), progress: Callable[[str], None] = print) -> dict:
        if spec.lb not in ("metalxdp", "metallb"):
            raise RigError(f"unknown load balancer {spec.lb!r}: metalxdp or metallb")
        if spec.lb == "metallb" and spec.bfd_profile:
            raise RigError("--bfd with --lb metallb: MetalLB's BFD needs its FRR mode (an FRR per node), "
                           "which the lab does not build; its native mode has no BFD")
        if self.load().get("id"):
            raise RigError(f"lab {self.name!r} is already up (state {self.state_path}); "
                           f"run `metalxdp lab down` first")
        topo = Topology()
        state: dict = {"id": topo.id, "name": self.name, "spec": spec.__dict__, "pids": {},
                       "topology": topo.to_dict(), "started": time.time()}
        self._save(state)
        steps = 8
        try:
            progress(f"[lab 1/{steps}] control plane: etcd + kube-apiserver + controller-manager")
            cp = start_control_plane(self.dir / "cp")
            state.update(kubeconfig=str(cp.kubeconfig), api_port=cp.port, workdir=str(self.dir))
            state["pids"].update({p.name: p.pid for p in cp.procs})
            self._save(state)

            progress(f"[lab 2/{steps}] network: {spec.nodes} nodes, router, client on one L2 segment")
            addrs = spec.host_addresses()
            for h in ["router", *spec.node_names(), "client"]:
                v4, v6 = addrs[h]
                topo.add_host(h, ipv4=v4, ipv6=v6, forwarding=(h == "router"))
                state["topology"] = topo.to_dict()
                self._save(state)
            client = topo.hosts["client"]
            for route in spec.bgp_routes:
                via = spec.router_ip(6 if ":" in route else 4)
                client.run(["ip", "route", "add", route, "via", via])

            progress(f"[lab 3/{steps}] API server reachable from node namespaces (loopback forwarder)")
            fwd = start("api-forward", [sys.executable, "-m", "metalxdp.rig.forward",
                                        "--port", str(cp.port),
                                        *sum((["--netns", topo.hosts[n].netns]
                                              for n in spec.node_names()), [])],
                        self.dir / "logs")
            state["pids"]["api-forward"] = fwd.pid
            self._save(state)
            wait_for("API forwarder", lambda: "forwarding" in fwd.log_path.read_text(), 15, proc=fwd)

            progress(f"[lab 4/{steps}] FRR router (AS {spec.router_asn}) peering with every node")
            # FRR drops to user frr: its directory must be reachable by that user, which a
            # private state root (e.g. pytest's tmp dirs) is not
            frr = FRRRouter(topo.hosts["router"], FRR_ROOT / topo.id)
            frr.start(render_frr_conf(spec.router_spec()))
            state["pids"].update({f"frr-{d}": p for d, p in frr.pids.items()})
            state["frr_dir"] = str(frr.workdir)
            self._save(state)

            progress(f"[lab 5/{steps}] Kubernetes: Node objects, namespace {NAMESPACE}, CRDs" +
                     (" (MetalLB's own; MetalLB is built from Go modules on first use, ~7 min, then cached)"
                      if spec.lb == "metallb" else ""))
            self._register_nodes(spec, topo)
            self._install_api(state, spec)

            progress(f"[lab 6/{steps}] pod networks (198.18.N.0/24, 2001:db8:100:N::/64) and kube-proxy stand-in")
            self._pod_networks(spec, topo)
            proxy = start("lab-proxy", [sys.executable, "-m", "metalxdp.lab.standins", "--kubeconfig",
                                        state["kubeconfig"],
                                        *sum((["--node", f"{n}={topo.hosts[n].netns}"] for n in spec.node_names()), [])],
                          self.dir / "logs")
            state["pids"]["lab-proxy"] = proxy.pid
            self._save(state)

            if spec.lb == "metallb":
                from . import metallb_peer
                progress(f"[lab 7/{steps}] MetalLB {metallb_peer.version()}: controller (+ its webhook), "
                         "one speaker per node (native BGP), lab resources")
                self._start_metallb(state, spec, topo)
            else:
                progress(f"[lab 7/{steps}] metalxdp: controller, one agent per node (XDP + ExaBGP), lab resources")
                self._start_metalxdp(state, spec, topo)

            progress(f"[lab 8/{steps}] done: lab {self.name!r} ({topo.id}) is up")
            state["ready"] = True
            self._save(state)
            return state
        except BaseException:
            progress("lab up failed: removing what was created")
            self.down(progress=lambda _m: None)
            raise

    def _register_nodes(self, spec: LabSpec, topo: Topology) -> None:
        from ..kube import api_client, client
        api = api_client(self.kubeconfig())
        core = client.CoreV1Api(api)
        for n in spec.node_names():
            h = topo.hosts[n]
            node = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n,
                                                        "kubernetes.io/os": "linux",
                                                        "metalxdp.io/lab": topo.id}}}
            core.create_node(node)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            status = {"status": {
                "addresses": [{"type": "InternalIP", "address": h.ip4},
                              {"type": "InternalIP", "address": h.ip6},
                              {"type": "Hostname", "address": n}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "LabNode",
                                "message": "lab node (network namespace)",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}]}}
            core.patch_node_status(n, status)

    def _pod_networks(self, spec: LabSpec, topo: Topology) -> None:
        from .standins import pod_cidrs, pod_gateway
        names = spec.node_names()
        for i, n in enumerate(names, 1):
            h = topo.hosts[n]
            gw4, gw6 = pod_gateway(i)
            # named like a CNI bridge: MetalLB's default interface excludes (^cni.*) keep VIPs off it
            for cmd in (["ip", "link", "add", "cni0", "type", "bridge"],
                        ["ip", "addr", "add", f"{gw4}/24", "dev", "cni0"],
                        ["ip", "addr", "add", f"{gw6}/64", "dev", "cni0", "nodad"],
                        ["ip", "link", "set", "cni0", "up"],
                        ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                        ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
                        ["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"],
                        ["sysctl", "-qw", "net.ipv4.conf.eth0.send_redirects=0"]):
                h.run(cmd)
            for j, other in enumerate(names, 1):
                if j != i:
                    c4, c6 = pod_cidrs(j)
                    h.run(["ip", "route", "add", c4, "via", topo.hosts[other].ip4])
                    h.run(["ip", "-6", "route", "add", c6, "via", topo.hosts[other].ip6])

    def _start_metalxdp(self, state: dict, spec: LabSpec, topo: Topology) -> None:
        import base64
        import secrets as pysecrets
        from ..kube import api_client, apply, client
        kc = state["kubeconfig"]
        api = api_client(kc)
        client.CoreV1Api(api).create_namespaced_secret(NAMESPACE, {
            "metadata": {"name": "memberlist"}, "type": "Opaque",
            "data": {"secretkey": base64.b64encode(pysecrets.token_bytes(96)).decode()}})
        logs = self.dir / "logs"
        py = sys.executable
        ctl = start("controller", [py, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc,
                                   "--namespace", NAMESPACE, "--metrics-port", str(spec.controller_metrics_port),
                                   "--metrics-host", "127.0.0.1", "--lease-duration", "5",
                                   *self._webhook_args(spec)], logs)
        state["pids"]["controller"] = ctl.pid
        self._save(state)
        webhook = self._webhook_port
        if webhook:   # resources applied before the webhook is registered would skip validation
            from ..rig.procs import wait_for
            import ssl
            import urllib.request
            ctx = ssl._create_unverified_context()   # the controller's own self-signed CA
            wait_for("the controller's webhook /readyz", lambda: urllib.request.urlopen(
                f"https://127.0.0.1:{webhook}/readyz", context=ctx, timeout=2).status == 200, 60, proc=ctl)
        for n in spec.node_names():
            # native XDP_TX on a veth needs an XDP program on the peer: the bridge port
            r = subprocess.run(["ip", "netns", "exec", topo.switch_netns, py, "-m", "agent.xdp_cli",
                                "--iface", topo.hosts[n].peer_ifname, "--pass-only"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RigError(f"XDP_PASS program on the bridge port of {n} failed: {r.stderr[-800:]}")
            state["pids"][f"agent-{n}"] = self._start_agent(state, topo, n).pid
            self._save(state)
        for obj in spec.metallb_resources():
            apply(api, obj)
        self.wait_membership_converged(spec.node_names())

    def log_records(self, process: str) -> Iterator[dict]:
        """The JSON log lines of the lab process ``process`` (e.g. agent-node1), parsed; other
        lines skipped; nothing when it has no log yet."""
        try:
            lines = (self.dir / "logs" / f"{process}.log").read_text(errors="replace").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec

    def agent_members(self, node: str) -> set[str]:
        """The other members ``node``'s agent sees now, replayed from its memberJoined/memberLeft
        log lines."""
        seen: set[str] = set()
        for rec in self.log_records(f"agent-{node}"):
            if rec.get("event") == "memberJoined":
                seen.add(rec.get("member"))
            elif rec.get("event") == "memberLeft":
                seen.discard(rec.get("member"))
        return seen

    def wait_membership_converged(self, nodes, timeout: float = 60) -> None:
        """Wait until every agent sees every other one. The agents start one after another: a
        Service created before the last one joined is elected among fewer nodes first and moves
        once the view is complete (as in a cluster whose DaemonSet is still rolling out), which
        is not the state a test or the demo means to start from."""
        from ..rig.procs import wait_for
        nodes = list(nodes)
        wait_for("every agent to see the others (membership converged)", lambda: all(
            self.agent_members(n) >= set(nodes) - {n} for n in nodes), timeout)

    def _start_agent(self, state: dict, topo: Topology, n: str, extra: tuple = ()):
        return start(f"agent-{n}", [sys.executable, "-m", "metalxdp.cli", "agent", "--node-name", n,
                                    "--kubeconfig", state["kubeconfig"], "--namespace", NAMESPACE,
                                    "--bpffs-dir", str(BPFFS_ROOT / f"{topo.id}-{n}"),
                                    "--workdir", str(self.dir / "agent"), "--metrics-port", "7472", *extra],
                     self.dir / "logs", netns=topo.hosts[n].netns)

    def stop_agent(self, node: str, sig: int = 15) -> None:
        """Stop ``node``'s agent with ``sig`` (SIGTERM: planned; SIGKILL: crash) and wait for it."""
        state = self.load()
        pid = state["pids"].get(f"agent-{node}")
        if pid and _pid_alive(pid):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    time.sleep(0.02)
            if _pid_alive(pid):
                stop_pid(pid)

    def start_agent(self, node: str, extra: tuple = ()) -> int:
        state = self.load()
        pid = self._start_agent(state, self.topology(state), node, extra).pid
        state["pids"][f"agent-{node}"] = pid
        self._save(state)
        return pid

    def restart_agent(self, node: str, sig: int = 15) -> int:
        self.stop_agent(node, sig)
        return self.start_agent(node)

    def kill_control_plane(self) -> dict:
        """SIGKILL kube-apiserver and etcd (a control-plane crash); return what
        ``start_control_plane_again`` needs to bring them back with the same flags and data."""
        state = self.load()
        cpid = state["pids"]["controller"]
        with open(f"/proc/{cpid}/cmdline", "rb") as f:
            saved = {"controller": [a.decode() for a in f.read().split(b"\0") if a]}
        for name in ("kube-apiserver", "etcd"):
            pid = state["pids"][name]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                saved[name] = [a.decode() for a in f.read().split(b"\0") if a]
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        return saved

    def start_control_plane_again(self, saved: dict, timeout: float = 90) -> None:
        """Start etcd and kube-apiserver with the argv ``kill_control_plane`` saved (same data
        directory, port and serving certificate) and wait for /readyz."""
        state = self.load()
        logs = Path(state["workdir"]) / "cp" / "logs"
        for name in ("etcd", "kube-apiserver"):
            state["pids"][name] = start(name, saved[name], logs).pid
        self._save(state)

        def ready() -> bool:
            r = kubectl(state["kubeconfig"], "get", "--raw", "/readyz", check=False)
            return r.returncode == 0 and r.stdout.strip() == "ok"
        wait_for("kube-apiserver /readyz after the restart", ready, timeout, interval=0.25)
        # the controller exits when it cannot renew its lease (never writing without it); its
        # Deployment would start it again, and so does the lab, with the same flags
        try:   # reap it if it is our child (a zombie still answers kill 0)
            os.waitpid(state["pids"]["controller"], os.WNOHANG)
        except ChildProcessError:
            pass
        if not _pid_alive(state["pids"]["controller"]):
            state["pids"]["controller"] = start("controller", saved["controller"], self.dir / "logs").pid
            self._save(state)

    _webhook_port = 0

    def _webhook_args(self, spec: LabSpec) -> list[str]:
        """The controller's webhook flags: served on a free port (and waited for before the lab's
        resources are applied) unless ``spec.webhook`` is off."""
        if not spec.webhook:
            return ["--webhook-mode", "disabled"]
        from ..rig.procs import free_port
        port = self._webhook_port = free_port()
        return ["--webhook-port", str(port), "--webhook-host", "127.0.0.1",
                "--webhook-url", f"https://127.0.0.1:{port}"]

    # ---- backends ("pods") ---------------------------------------------------------------
    def add_backend(self, name: str, node: str, labels: dict, namespace: str = "default",
                    port: int = 8080) -> dict:
        """An HTTP server "pod" on ``node``: netns + Pod object with Ready status."""
        from ..kube import api_client, client
        from .standins import pod_gateway
        state = self.load()
        topo = self.topology(state)
        backends = state.setdefault("backends", {})
        if name in backends:
            raise RigError(f"backend {name} exists")
        idx = self.node_index(node)
        # a counter, not len(backends): a removed backend's pod IP and veth name are never reused
        k = 10 + state.get("backend_seq", 0)
        state["backend_seq"] = state.get("backend_seq", 0) + 1
        ns = f"{state['id']}-p-{name}"
        host = topo.hosts[node]
        vnode = f"v{k}"
        gw4, gw6 = pod_gateway(idx)
        ip4, ip6 = f"198.18.{idx}.{k}", f"2001:db8:100:{idx}::{k}"
        backends[name] = {"netns": ns, "node": node, "ipv4": ip4, "ipv6": ip6, "namespace": namespace}
        state["topology"]["namespaces"].append(ns)
        self._save(state)
        run = lambda cmd, netns=None: subprocess.run(  # noqa: E731
            (["ip", "netns", "exec", netns] if netns else []) + cmd, check=True, capture_output=True)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", vnode, "type", "veth", "peer", "name", "eth0", "netns", ns], host.netns)
        run(["ip", "link", "set", "dev", vnode, "master", "cni0", "up"], host.netns)
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ip4}/24", "dev", "eth0"],
                    ["ip", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad"], ["ip", "link", "set", "eth0", "up"],
                    ["ip", "route", "add", "default", "via", gw4], ["ip", "-6", "route", "add", "default", "via", gw6]):
            run(cmd, ns)
        proc = start(f"backend-{name}", [sys.executable, "-m", "metalxdp.rig.httpd", "--name", name,
                                         "--node", node, "--port", str(port)], self.dir / "logs", netns=ns)
        state["pids"][f"backend-{name}"] = proc.pid
        self._save(state)
        core = client.CoreV1Api(api_client(state["kubeconfig"]))
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "lab/httpd",
                                                       "ports": [{"containerPort": port}]}]}})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": ip4, "podIPs": [{"ip": ip4}, {"ip": ip6}], "hostIP": host.ip4,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]}})
        return backends[name]

    def remove_backend(self, name: str) -> None:
        from ..kube import ApiException, api_client, client
        state = self.load()
        b = state.get("backends", {}).pop(name, None)
        if not b:
            return
        try:
            # no kubelet confirms the deletion: without grace period 0 the Pod stays Terminating
            client.CoreV1Api(api_client(state["kubeconfig"])).delete_namespaced_pod(
                name, b["namespace"], grace_period_seconds=0)
        except ApiException:
            pass
        pid = state["pids"].pop(f"backend-{name}", None)
        if pid:
            stop_pid(pid)
        destroy_namespaces([b["netns"]])
        self._save(state)

    def node_index(self, node: str) -> int:
        return int(node.removeprefix("node"))

    def set_link(self, host: str, up: bool) -> None:
        self.topology().set_link(host, up)

    def _install_api(self, state: dict, spec: LabSpec = LabSpec()) -> None:
        from ..kube import api_client, client
        api = api_client(state["kubeconfig"])
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        crds = CRD_DIR
        if spec.lb == "metallb":   # MetalLB's own CRDs, from its module
            from . import metallb_peer
            metallb_peer.binaries()   # builds (or finds cached) and downloads the module
            crds = metallb_peer.crd_dir()
        if crds.is_dir() and any(crds.glob("*.yaml")):
            kubectl(state["kubeconfig"], "apply", "-f", str(crds))
            if spec.lb == "metallb":
                kubectl(state["kubeconfig"], "apply", "-f", "-", input_=json.dumps(metallb_peer.bgppeer_crd_fix()))
            kubectl(state["kubeconfig"], "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

    def _start_metallb(self, state: dict, spec: LabSpec, topo: Topology) -> None:
        """MetalLB's controller (with its webhook, registered with the release's own rules) and
        a speaker per node: metalxdp.lab.metallb_peer."""
        import base64
        import secrets as pysecrets
        import ssl
        import urllib.request
        from ..kube import api_client, apply, client
        from ..rig.procs import free_port
        from . import metallb_peer as mp
        if not mp.port_free(mp.WEBHOOK_PORT):
            raise RigError(f"port {mp.WEBHOOK_PORT} is taken: MetalLB's webhook always listens there (another "
                           "MetalLB lab or bench/peer_validation.py running?)")
        kc, logs = state["kubeconfig"], self.dir / "logs"
        api = api_client(kc)
        core = client.CoreV1Api(api)
        bins = mp.binaries()
        key = pysecrets.token_bytes(128)
        core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "memberlist"}, "type": "Opaque",
                                                  "data": {"secretkey": base64.b64encode(key).decode()}})
        key_dir = self.dir / "ml_secret_key"       # the Secret as the speaker pod mounts it
        key_dir.mkdir(parents=True, exist_ok=True)
        (key_dir / "secretkey").write_bytes(key)
        ca = mp.serving_certificate()
        metrics = free_port()
        ctl = start("controller", mp.controller_argv(bins, kc, NAMESPACE, metrics), logs)
        state["pids"]["controller"] = ctl.pid
        state["metallb"] = {"version": mp.version(), "bin": str(bins), "controller_metrics_port": metrics}
        self._save(state)
        ctx = ssl.create_default_context(cafile=str(mp.CERT_DIR / "tls.crt"))

        def serving() -> bool:   # any answer at all (a 4xx for an empty body) means it listens
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{mp.WEBHOOK_PORT}/validate-metallb-io-v1beta1-ipaddresspool",
                                       context=ctx, timeout=2)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True
        wait_for("MetalLB's webhook on 127.0.0.1:9443", serving, 60, proc=ctl)
        client.AdmissionregistrationV1Api(api).create_validating_webhook_configuration(mp.webhook_configuration(ca))
        for n in spec.node_names():
            h = topo.hosts[n]
            pod, status = mp.speaker_pod(n, h.ip4, h.ip6)
            core.create_namespaced_pod(NAMESPACE, pod)
            core.patch_namespaced_pod_status(pod["metadata"]["name"], NAMESPACE, status)
            sp = start(f"speaker-{n}", mp.speaker_argv(bins, kc, NAMESPACE, n, h.ip4, key_dir), logs, netns=h.netns)
            state["pids"][f"speaker-{n}"] = sp.pid
            self._save(state)
        for obj in spec.metallb_resources():
            _apply_retrying(api, obj, 60)
        self.wait_speakers_joined(spec.node_names())

    def wait_speakers_joined(self, nodes, timeout: float = 60) -> None:
        """Every MetalLB speaker's memberlist holds every node (its 'node event' log lines)."""
        nodes = list(nodes)

        def joined(n: str) -> set[str]:
            seen: set[str] = set()
            for rec in self.log_records(f"speaker-{n}"):
                if rec.get("msg") == "node event - forcing sync":
                    (seen.add if rec.get("node event") == "NodeJoin" else seen.discard)(rec.get("node name") or "")
            return seen
        wait_for("every MetalLB speaker to see the others (memberlist)",
                 lambda: all(joined(n) >= set(nodes) - {n} for n in nodes), timeout)

    # ---- down -------------------------------------------------------------------------
    def down(self, progress: Callable[[str], None] = print) -> list[str]:
        """Stop every process and remove every namespace, pin and file of this lab."""
        state = self.load()
        removed: list[str] = []
        for name, pid in (state.get("pids") or {}).items():
            if _pid_alive(pid):
                stop_pid(pid, timeout=3)
                removed.append(f"process {name} ({pid})")
        lab_id = state.get("id")
        ns = list((state.get("topology") or {}).get("namespaces", []))
        if lab_id:  # also namespaces created after the last state write (crash mid-step)
            ns += [n for n in list_namespaces() if n.startswith(f"{lab_id}-") and n not in ns]
        if ns:
            destroy_namespaces(ns)
            removed += [f"netns {n}" for n in ns]
        if lab_id:
            for p in BPFFS_ROOT.glob(f"{lab_id}-*"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(f"bpffs {p}")
        if lab_id and (FRR_ROOT / lab_id).exists():
            shutil.rmtree(FRR_ROOT / lab_id, ignore_errors=True)
            removed.append(f"dir {FRR_ROOT / lab_id}")
        if state.get("metallb"):   # the webhook certificate in controller-runtime's fixed directory
            from .metallb_peer import CERT_DIR
            for f in ("tls.crt", "tls.key"):
                (CERT_DIR / f).unlink(missing_ok=True)
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            removed.append(f"dir {self.dir}")
        progress(f"lab {self.name!r} down: removed {len(removed)} items" if removed
                 else f"lab {self.name!r}: nothing to remove")
        return removed

    # ---- status -----------------------------------------------------------------------
    def status(self) -> dict:
        state = self.load()
        if not state.get("id"):
            return {"name": self.name, "up": False}
        topo = self.topology(state)
        present = set(list_namespaces())
        return {
            "name": self.name, "id": state["id"], "up": bool(state.get("ready")),
            "kubeconfig": state.get("kubeconfig"), "api_server": f"https://127.0.0.1:{state.get('api_port')}",
            "processes": {n: {"pid": p, "running": _pid_alive(p)} for n, p in state["pids"].items()},
            "hosts": {n: {"netns": h.netns, "ipv4": [a.split("/")[0] for a in h.ipv4],
                          "ipv6": [a.split("/")[0] for a in h.ipv6], "mac": h.mac,
                          "present": h.netns in present}
                      for n, h in topo.hosts.items()},
            "frr_dir": state.get("frr_dir"),
            "lb": (state.get("spec") or {}).get("lb", "metalxdp"),
            "metallb": state.get("metallb"),
            "controller": self._controller_state(state),
        }

    def _controller_state(self, state: dict) -> dict:
        """Who leads, and whether the configuration is valid (ConfigurationState)."""
        if not state.get("ready") or (state.get("spec") or {}).get("lb") == "metallb":
            return {}
        from ..kube import ApiException, api_client, client
        out: dict = {}
        try:
            api = api_client(state["kubeconfig"])
            lease = client.CoordinationV1Api(api).read_namespaced_lease("metalxdp-controller", NAMESPACE)
            out["leader"] = lease.spec.holder_identity
            cs = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "metallb.io", "v1beta1", NAMESPACE, "configurationstates", "controller")
            out["config"] = (cs.get("status") or {}).get("result", "Unknown")
            if (cs.get("status") or {}).get("errorSummary"):
                out["config_error"] = cs["status"]["errorSummary"]
        except (ApiException, OSError, ValueError) as e:
            out.setdefault("error", str(getattr(e, "reason", e)))
        return out


def _apply_retrying(api, obj: dict, timeout: float) -> None:
    """Apply ``obj``, again while a webhook refuses it: MetalLB's answers before its informers
    hold the objects it checks against. The last refusal is the error when it never passes."""
    from ..kube import ApiException, apply
    deadline = time.monotonic() + timeout
    while True:
        try:
            apply(api, obj)
            return
        except ApiException as e:
            if e.status not in (400, 403, 422, 500) or time.monotonic() > deadline:
                raise RigError(f"{obj['kind']} {obj['metadata']['name']} refused: {e.status} "
                               f"{(e.body or e.reason or '')[:800]}") from e
        time.sleep(0.5)


@contextlib.contextmanager
def running_lab(prefix: str, root: Path, spec: LabSpec = LabSpec()) -> Iterator[Lab]:
    """A lab named ``<prefix>-<6 hex digits>`` under ``root``, brought up quietly for the block
    and down again after it, also when ``up`` fails half way (the tests' and benchmarks' labs)."""
    lab = Lab(name=f"{prefix}-{secrets.token_hex(3)}", root=Path(root))
    try:
        lab.up(spec, progress=lambda _m: None)
        yield lab
    finally:
        lab.down(progress=lambda _m: None)


def kubectl(kubeconfig: str, *args: str, check: bool = True,
            input_: Optional[str] = None) -> subprocess.CompletedProcess:
    # the kubectl built with the pinned server (same minor: inside the version skew)
    r = subprocess.run([binary("kubectl"), f"--kubeconfig={kubeconfig}", *args], capture_output=True,
                       text=True, timeout=120, input=input_)
    if check and r.returncode != 0:
        raise RigError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
    return r


# ---- CLI ---------------------------------------------------------------------------------
name_option = click.option("--name", default="default", show_default=True,
                         help="Lab name; several labs can run side by side.")


@click.group()
def lab() -> None:
    """A lab in network namespaces: a real kube-apiserver, N nodes, an FRR router and a client.

    Needs root. `metalxdp lab up`, then `metalxdp lab status`, then `metalxdp lab down`.
    """


@lab.command("up")
@name_option
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9),
              help="Number of Kubernetes nodes (network namespaces).")
@click.option("--ibgp", is_flag=True, help="Nodes in the router's AS (iBGP) instead of seed 002's eBGP.")
@click.option("--bfd", "bfd_profile", default="", metavar="PROFILE",
              help="BFD on every BGP session: a router bfd profile and a BFDProfile of this name, "
                   "bound to the BGPPeers (timers from --bfd-timers).")
@click.option("--bfd-timers", default="300,300,3", show_default=True, metavar="RX,TX,MULT",
              help="receive ms, transmit ms, detect multiplier of the --bfd profile.")
@click.option("--webhook/--no-webhook", default=True, show_default=True,
              help="Serve the controller's validating webhook (the lab's resources are applied through it).")
@click.option("--lb", type=click.Choice(["metalxdp", "metallb"]), default="metalxdp", show_default=True,
              help="What runs as the load balancer. metallb: MetalLB's own controller and speakers "
                   "(the release in scripts/metallb/VERSION, built from Go modules on first use and "
                   "cached; native BGP mode; no --bfd), for side-by-side runs on the same lab.")
def lab_up(name: str, nodes: int, ibgp: bool, bfd_profile: str, bfd_timers: str, webhook: bool, lb: str) -> None:
    """Build the lab and print how to reach it."""
    try:
        rx, tx, mult = (int(x) for x in bfd_timers.split(","))
    except ValueError:
        raise click.BadParameter("expected RX,TX,MULT, e.g. 300,300,3", param_hint="--bfd-timers")
    spec = LabSpec(nodes=nodes, node_asn=64512 if ibgp else 64513, bfd_profile=bfd_profile,
                   bfd_timers=(rx, tx, mult), webhook=webhook, lb=lb)
    try:
        Lab(name).up(spec)
    except RigError as e:
        raise click.ClickException(str(e))
    print_status(Lab(name).status())


@lab.command("down")
@name_option
def lab_down(name: str) -> None:
    """Remove everything `lab up` created (processes, namespaces, pins, files)."""
    try:
        Lab(name).down()
    except RigError as e:
        raise click.ClickException(str(e))


@lab.command("status")
@name_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lab_status(name: str, as_json: bool) -> None:
    """What runs in the lab: kubeconfig, hosts with their namespaces and addresses, processes."""
    st = Lab(name).status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        print_status(st)


def print_status(st: dict) -> None:
    if not st.get("id"):
        click.echo(f"lab {st['name']!r} is not up")
        return
    lb = f"MetalLB {st['metallb']['version']}" if st.get("lb") == "metallb" and st.get("metallb") else st.get("lb", "metalxdp")
    click.echo(f"lab {st['name']!r} ({st['id']}): {'up' if st['up'] else 'incomplete'}, load balancer: {lb}")
    click.echo(f"  kubeconfig: {st['kubeconfig']}   (kubectl --kubeconfig {st['kubeconfig']} get nodes -o wide)")
    for n, h in st["hosts"].items():
        click.echo(f"  {n:8} netns {h['netns']:18} {' '.join(h['ipv4'] + h['ipv6'])}")
    ctl = st.get("controller") or {}
    if ctl:
        click.echo(f"  controller: leader {ctl.get('leader', '?')}, configuration {ctl.get('config', '?')}"
                   + (f" ({ctl['config_error']})" if ctl.get("config_error") else ""))
    bad = [n for n, p in st["processes"].items() if not p["running"]]
    click.echo(f"  processes: {len(st['processes']) - len(bad)} running" +
               (f", NOT running: {', '.join(bad)}" if bad else ""))
    click.echo(f"  shell on a host: ip netns exec {st['hosts'].get('client', {}).get('netns', '?')} bash")
