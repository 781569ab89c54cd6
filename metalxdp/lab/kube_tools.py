"""What the cluster demo and the e2e suite do on the cluster lab: backends and Services through
kubectl, requests from the client, who answers ARP, the router's next hops, a request stream,
the agent process of a node and the memory a node spends. Everything looks at what the client,
the router or the node itself sees."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from typing import Optional

from .kube_cluster import ClusterLab
from ..rig.frr import route_gateways
from ..rig.kubenode import _rss_kb
from ..rig.procs import wait_for


def client_request(lab: ClusterLab, ip: str, port: int = 80, timeout: float = 2.0,
                   write_out: str = "") -> tuple[int, str]:
    """(curl's exit code, body): 0 = answered, 7 = refused, 28 = timed out, 56 = reset, ...
    ``write_out``: curl's -w text, appended to the body."""
    url = f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"
    r = subprocess.run(["ip", "netns", "exec", lab.topo.hosts["client"].netns, "curl", "-s", "-g",
                        "--max-time", str(timeout), *(["-w", write_out] if write_out else []), url],
                       capture_output=True, text=True)
    return r.returncode, r.stdout.strip()


def client_curl(lab: ClusterLab, ip: str, port: int = 80, timeout: float = 2.0) -> Optional[str]:
    rc, body = client_request(lab, ip, port, timeout)
    return body if rc == 0 else None


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


def client_neigh_mac(lab: ClusterLab, ip: str) -> Optional[str]:
    fam = "-6" if ":" in ip else "-4"
    out = lab.topo.hosts["client"].run(["ip", "-j", fam, "neigh", "show", ip], check=False).stdout
    entries = json.loads(out or "[]")
    return entries[0].get("lladdr") if entries else None


def announcer(lab: ClusterLab, ip: str) -> Optional[str]:
    """The node whose MAC the client resolved ``ip`` to (after a fresh request)."""
    lab.topo.hosts["client"].run(["ip", "neigh", "flush", "to", ip], check=False)
    client_curl(lab, ip, timeout=2)
    mac = client_neigh_mac(lab, ip)
    for n in lab.spec.node_names():
        if lab.topo.hosts[n].mac == mac:
            return n
    return None


def xdp_prog_id(lab: ClusterLab, node: str) -> Optional[int]:
    out = lab.node_exec(node, "ip", "-j", "link", "show", "eth0").stdout
    return (json.loads(out)[0].get("xdp") or {}).get("prog", {}).get("id")


def agent_pid(lab: ClusterLab, node: str) -> int:
    """The host pid of the agent process of ``node``'s speaker pod (it runs in the node's netns)."""
    want = os.stat(f"/run/netns/{lab.topo.hosts[node].netns}").st_ino
    for pid in subprocess.run(["pgrep", "-f", "metalxdp agent"], capture_output=True, text=True).stdout.split():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no agent process in {node}'s namespace")


def node_memory_mb(lab: ClusterLab) -> dict[str, dict[str, float]]:
    """Per node, RSS in MB of kubelet, containerd (with its shims), kube-proxy and the agent
    pod's processes (agent + ExaBGP + relay)."""
    out = {}
    for node, parts in lab.memory_kb().items():
        row = {k: round(v / 1024, 1) for k, v in parts.items()}
        try:
            row["agent pod"] = round(_rss_kb(agent_pid(lab, node)) / 1024, 1)
        except (AssertionError, OSError):
            row["agent pod"] = 0.0
        row["total"] = round(sum(row.values()), 1)
        out[node] = row
    return out


class Stream:
    """Requests from the client at ``rate`` per second; results as (time, ok); the failed ones
    also in ``failures`` as (time, curl exit code). ``fresh_arp``: the client forgets its
    neighbour entry for ``ip`` before each request, as a new client (or one whose entry
    expired) would have none: each request needs an ARP/NDP answer first."""

    def __init__(self, lab: ClusterLab, ip: str, rate: float = 20, timeout: float = 1,
                 fresh_arp: bool = False):
        self.lab, self.ip, self.gap, self.timeout = lab, ip, 1 / rate, timeout
        self.fresh_arp = fresh_arp
        self.results: list[tuple[float, bool]] = []
        self.failures: list[tuple[float, int]] = []
        self.slow: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    # curl's own timings of a slow request: a connect that never completed (a lost SYN, or
    # SYN-ACK) shows connect 0; a connection the backend did not answer shows connect > 0
    TIMINGS = "\n%{time_connect} %{time_starttransfer} %{local_port} %{remote_ip}"

    def _one(self, t: float) -> None:
        if self.fresh_arp:
            self.lab.topo.hosts["client"].run(["ip", "neigh", "flush", "to", self.ip], check=False)
        rc, out = client_request(self.lab, self.ip, timeout=self.timeout, write_out=self.TIMINGS)
        took = time.monotonic() - t
        if took > 0.5:   # slow ones, to tell a dropped SYN (~1 s) from a starved host
            timing = out.rsplit("\n", 1)[-1]
            self.slow.append((t, round(took, 2), rc, f"connect/first byte/port/ip {timing}"))
        self.results.append((t, rc == 0))
        if rc:
            self.failures.append((t, rc))

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            threading.Thread(target=self._one, args=(t,), daemon=True).start()
            self._stop.wait(max(0.0, self.gap - (time.monotonic() - t)))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        time.sleep(self.timeout + 0.5)           # the last requests finish

    def failed(self) -> int:
        return sum(1 for _, ok in self.results if not ok)

    def first_success_after(self, t0: float) -> Optional[float]:
        ok = [t for t, good in self.results if good and t > t0]
        return min(ok) - t0 if ok else None


class Workload:
    """Backends (a Deployment of the backend image) and LoadBalancer Services in a namespace of
    their own, removed by ``close()``."""

    def __init__(self, lab: ClusterLab, ns: Optional[str] = None):
        self.lab, self.objs = lab, []
        self.ns = ns or "e2e-" + secrets.token_hex(3)
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
            ips = self.ips().get(name) or []
            return len(ips) == want
        wait_for(f"service {name} IPs", check, 60)
        return ips

    def ips(self) -> dict[str, list[str]]:
        """Every LoadBalancer Service of the namespace -> its status IPs."""
        items = json.loads(self.lab.kubectl("-n", self.ns, "get", "svc", "-o", "json").stdout)["items"]
        return {s["metadata"]["name"]: [i["ip"] for i in ((s.get("status") or {}).get("loadBalancer") or {})
                                        .get("ingress") or []]
                for s in items if s["spec"]["type"] == "LoadBalancer"}

    def many_services(self, prefix: str, count: int, pool: str) -> dict[str, list[str]]:
        """``count`` IPv4 Services (no backends needed for an IP) in one apply; waits for all IPs."""
        items = [{"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": f"{prefix}-{i}", "namespace": self.ns,
                               "annotations": {"metallb.io/address-pool": pool}},
                  "spec": {"type": "LoadBalancer", "selector": {"app": prefix}, "ipFamilies": ["IPv4"],
                           "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
                 for i in range(count)]
        self.lab.kubectl("apply", "-f", "-", input_=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        names = {f"{prefix}-{i}" for i in range(count)}
        got: dict = {}

        def check():
            nonlocal got
            got = {k: v for k, v in self.ips().items() if k in names}
            return len(got) == count and all(got.values())
        wait_for(f"{count} Services {prefix}-* with IPs", check, 120)
        return got

    def close(self) -> None:
        self.lab.kubectl("delete", "namespace", self.ns, "--wait=true", "--timeout=120s", check=False, timeout=130)



class PodLogs:
    """``kubectl logs -f`` of every pod of ``selector`` while the block runs, kept per node: what
    a pod said just before it went away (its log file goes with the pod)."""

    def __init__(self, lab: ClusterLab, selector: str, namespace: str):
        self.lab, self.selector, self.namespace = lab, selector, namespace
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "PodLogs":
        from ..rig.apiserver import binary
        items = json.loads(self.lab.kubectl("get", "pods", "-n", self.namespace, "-l", self.selector,
                                            "-o", "json").stdout)["items"]
        for p in items:
            self.procs[p["spec"].get("nodeName") or p["metadata"]["name"]] = subprocess.Popen(
                [binary("kubectl"), f"--kubeconfig={self.lab.kubeconfig}", "logs", "-f", "--tail=5",
                 "-n", self.namespace, p["metadata"]["name"]],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()

    def text(self, node: str, timeout: float = 5) -> str:
        p = self.procs.get(node)
        if p is None:
            return "(no pod followed)"
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        return out or ""


class FlowTrace:
    """Diagnostics for a request that timed out: tcpdump of every TCP SYN, SYN-ACK and RST on
    each of ``hosts`` (the client, the VIP's node: every interface, so before and after
    kube-proxy's DNAT) and ``conntrack -E`` on the node hosts, while the block runs. ``report``
    names the client's SYNs that got no SYN-ACK and what each host saw of those flows."""

    FILTER = "tcp[tcpflags] & (tcp-syn|tcp-rst) != 0 and not port 179 and not port 7946"

    def __init__(self, lab: ClusterLab, hosts: list[str], workdir) -> None:
        self.lab, self.hosts, self.dir = lab, hosts, workdir
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "FlowTrace":
        for h in self.hosts:
            host = self.lab.topo.hosts[h]
            self.procs.append(host.popen(["tcpdump", "-i", "any", "-nn", "-U", "-w", str(self.dir / f"{h}.pcap"),
                                          self.FILTER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if h != "client":
                self.procs.append(host.popen(["conntrack", "-E", "-p", "tcp", "-o", "timestamp"],
                                             stdout=open(self.dir / f"{h}.conntrack", "w"),
                                             stderr=subprocess.STDOUT))
        time.sleep(1)   # tcpdump's filter in place
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()

    def _lines(self, host: str) -> list[str]:
        cache = self.__dict__.setdefault("_cache", {})
        if host not in cache:
            r = subprocess.run(["tcpdump", "-nn", "-tttt", "-r", str(self.dir / f"{host}.pcap")],
                               capture_output=True, text=True)
            cache[host] = r.stdout.splitlines()
        return cache[host]

    def lost(self, ip: str) -> dict[str, dict]:
        """The client's flows to ``ip`` whose SYN never got a SYN-ACK back to the client:
        client port -> {"seq": the SYN's sequence number, "reached": hosts whose capture saw
        that SYN come in addressed to ``ip`` (after their XDP program: taps run after it)}.
        NAT keeps the sequence number, so every host's lines of the flow are found by it."""
        import re
        syn, answered = {}, set()
        for line in self._lines("client"):
            m = re.search(r"\.(\d+) > " + re.escape(ip) + r"\.\d+: Flags \[S\], seq (\d+)", line)
            if m:
                syn.setdefault(m.group(1), m.group(2))
            m = re.search(re.escape(ip) + r"\.\d+ > \S+\.(\d+): Flags \[S\.\]", line)
            if m:
                answered.add(m.group(1))
        out = {}
        for port, seq in syn.items():
            if port in answered:
                continue
            reached = {h for h in self.hosts if h != "client" and any(
                " In " in x and f"> {ip}." in x and f"seq {seq}," in x for x in self._lines(h))}
            out[port] = {"seq": seq, "reached": reached}
        return out

    def report(self, ip: str) -> str:
        """The client's flows to ``ip`` whose SYN got no SYN-ACK, with every line any host's
        capture has of them (found by the SYN's sequence number, which NAT keeps) and the
        node's conntrack events of that client port."""
        lost = self.lost(ip)
        out = [f"client SYNs to {ip}: {len(lost)} never answered"]
        for port, f in lost.items():
            seq, ack = f["seq"], str(int(f["seq"]) + 1)
            out.append(f"-- client port {port}, SYN seq {seq}, seen arriving at {sorted(f['reached']) or 'no node'}:")
            for h in self.hosts:
                out += [f"   {h}: " + x for x in self._lines(h) if f"seq {seq}," in x or f"ack {ack}," in x]
                if h != "client":
                    ct = (self.dir / f"{h}.conntrack").read_text(errors="replace").splitlines()
                    out += [f"   {h} ct: " + x for x in ct if f"sport={port} " in x or f"dport={port} " in x]
        return "\n".join(out)
