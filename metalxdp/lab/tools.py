"""Things the demo, the lab tests and the benchmarks do with a running lab: create demo
Services, wait for IPs, curl from the client, find the announcing node, measure failover,
stream requests from the client, read a node's metrics.

``python -m metalxdp.lab.tools stream --url URL --rate 10 --timeout 1`` is the request stream's
process (it runs inside the client's namespace; see ``RequestStream``)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Optional

from ..rig.frr import route_gateways
from ..rig.procs import wait_for
from ..service import ingress_ips
from .cluster import Lab, kubectl


def apply_service(lab: Lab, name: str, *, pool: Optional[str] = None, etp: str = "Cluster",
                  selector: Optional[dict] = None, families: Optional[list] = None,
                  policy: Optional[str] = None, annotations: Optional[dict] = None,
                  namespace: str = "default", port: int = 80) -> None:
    ann = dict(annotations or {})
    if pool:
        ann["metallb.io/address-pool"] = pool
    spec = {"type": "LoadBalancer", "selector": selector or {"app": "web"}, "externalTrafficPolicy": etp,
            "ports": [{"port": port, "targetPort": 8080, "protocol": "TCP", "name": "http"}]}
    if families:
        spec["ipFamilies"] = families
    if policy:
        spec["ipFamilyPolicy"] = policy
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "annotations": ann}, "spec": spec}
    kubectl(lab.kubeconfig(), "apply", "-f", "-", input_=json.dumps(svc))


def service_ips(lab: Lab, name: str, namespace: str = "default") -> list[str]:
    r = kubectl(lab.kubeconfig(), "get", "svc", name, "-n", namespace, "-o", "json", check=False)
    if r.returncode != 0:
        return []
    return ingress_ips(json.loads(r.stdout))


def wait_service_ips(lab: Lab, name: str, count: int = 1, timeout: float = 60, namespace: str = "default") -> list[str]:
    got: list[str] = []

    def check():
        nonlocal got
        got = service_ips(lab, name, namespace)
        return len(got) >= count
    wait_for(f"service {name} to get {count} IP(s)", check, timeout)
    return got


def ready_endpoints(lab: Lab, service: str, namespace: str = "default") -> int:
    """How many ready endpoints the EndpointSlices of ``service`` list (kube-controller-manager
    writes them; the agents read them)."""
    r = kubectl(lab.kubeconfig(), "get", "endpointslices", "-n", namespace, "-l",
                f"kubernetes.io/service-name={service}", "-o", "json", check=False)
    if r.returncode != 0:
        return 0
    return sum(1 for s in json.loads(r.stdout).get("items") or [] for e in s.get("endpoints") or []
               if (e.get("conditions") or {}).get("ready", True))


def wait_ready_endpoints(lab: Lab, service: str, timeout: float = 60, namespace: str = "default") -> float:
    """Wait until ``service`` has a ready endpoint in an EndpointSlice; return the seconds it took."""
    t0 = time.monotonic()
    wait_for(f"an EndpointSlice with a ready endpoint for {service}",
             lambda: ready_endpoints(lab, service, namespace) > 0, timeout)
    return time.monotonic() - t0


def curl(lab: Lab, ip: str, port: int = 80, host: str = "client", timeout: float = 1.0) -> Optional[str]:
    """GET http://ip:port/ from ``host``; the body, or None."""
    url = f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"
    r = lab.host(host).run(["curl", "-s", "-m", str(timeout), url], check=False, timeout=timeout + 5)
    return r.stdout.strip() if r.returncode == 0 and r.stdout else None


def wait_curl(lab: Lab, ip: str, timeout: float = 30, **kw) -> str:
    body = ""

    def check():
        nonlocal body
        body = curl(lab, ip, **kw) or ""
        return bool(body)
    wait_for(f"curl http://{ip}/ from the client", check, timeout)
    return body


def neighbour_mac(lab: Lab, ip: str, host: str = "client") -> Optional[str]:
    out = lab.host(host).run(["ip", "-j", "neigh", "show", ip], check=False).stdout
    for n in json.loads(out or "[]"):
        if n.get("lladdr"):
            return n["lladdr"]
    return None


def arp_replies(lab: Lab, ip: str, target_mac: Optional[str] = None, count: int = 1,
                wait_s: float = 1.0, host: str = "client") -> list[str]:
    """The MACs that answered ARP (IPv4) or NDP (IPv6) for ``ip`` on the wire, as seen by
    ``host`` (arping / ndisc6 read replies themselves: the kernel's neighbour cache is not
    involved). ``target_mac`` (IPv4 only): send the request to that MAC instead of broadcast,
    i.e. ask one node directly."""
    h = lab.host(host)
    if ":" in ip:
        r = h.run(["ndisc6", "-n", "-m", "-r", str(count), "-w", str(int(wait_s * 1000)), ip, "eth0"],
                  check=False, timeout=wait_s * count + 10)
        return [line.split(":", 1)[1].strip().lower() for line in r.stdout.splitlines()
                if line.strip().startswith("Target link-layer address")]
    cmd = ["arping", "-r", "-c", str(count), "-w", str(max(1, round(wait_s * count))), "-i", "eth0"]
    if target_mac:
        cmd += ["-t", target_mac]
    r = h.run(cmd + [ip], check=False, timeout=wait_s * count + 10)
    return [line.strip().lower() for line in r.stdout.splitlines() if line.strip()]


def agent_log_events(lab: Lab, node: str, event: str, **fields) -> list[dict]:
    """The JSON log records of ``node``'s agent with this ``event`` and these field values."""
    out = []
    for line in (lab.dir / "logs" / f"agent-{node}.log").read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event and all(rec.get(k) == v for k, v in fields.items()):
            out.append(rec)
    return out


def host_by_mac(lab: Lab, mac: Optional[str]) -> Optional[str]:
    for name, info in lab.status()["hosts"].items():
        if mac and info.get("mac") == mac.lower():
            return name
    return None


def announcing_node(lab: Lab, ip: str) -> Optional[str]:
    """The node that answers ARP/NDP for ``ip`` now (the first reply the client gets on the
    wire; None if nobody answers)."""
    macs = arp_replies(lab, ip)
    return host_by_mac(lab, macs[0]) if macs else None


def announcing_nodes(lab: Lab, ip: str, count: int = 2) -> set[str]:
    """Every node that answered ``count`` ARP/NDP requests for ``ip`` (more than one = split brain)."""
    return {host_by_mac(lab, m) or m for m in arp_replies(lab, ip, count=count)}


def node_metrics(lab: Lab, node: str, port: int = 7472) -> dict[tuple, float]:
    """A node agent's metrics, read from inside its namespace:
    {(name, ((label, value), ...)): value}. Empty when the agent does not answer."""
    from prometheus_client.parser import text_string_to_metric_families
    r = lab.host(node).run(["curl", "-s", "-m", "2", f"http://127.0.0.1:{port}/metrics"], check=False, timeout=10)
    if r.returncode != 0:
        return {}
    out = {}
    for fam in text_string_to_metric_families(r.stdout):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> Optional[float]:
    """Sum of the samples of ``name`` whose labels include ``labels``; None if there is none.
    A counter matches with or without the ``_total`` suffix the Python client appends (MetalLB's
    Go client exposes e.g. ``metallb_layer2_requests_received`` without it)."""
    want = set(labels.items())
    vals = [v for (n, ls), v in samples.items() if n in (name, name + "_total") and want <= set(ls)]
    return sum(vals) if vals else None


class RequestStream:
    """The client requests ``http://ip:port/`` ``rate_hz`` times a second, each on a new TCP
    connection with its own ``timeout`` (requests overlap, so a slow one does not delay the
    next), from one process inside the client's namespace. ``stop()`` returns one dict per
    request: ``sent``/``done`` (CLOCK_MONOTONIC, the same clock as ``time.monotonic()`` here),
    ``ok`` and ``body`` or ``error``. A request still running at stop() is waited for."""

    def __init__(self, lab: Lab, ip: str, rate_hz: float = 10, timeout: float = 1.0, port: int = 80,
                 host: str = "client"):
        url = f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"
        self.proc = lab.host(host).popen(
            [sys.executable, "-m", "metalxdp.lab.tools", "stream", "--url", url, "--rate", str(rate_hz),
             "--timeout", str(timeout)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        self.results: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.results.append(json.loads(line))
            except ValueError:
                pass

    def wait_ok(self, count: int = 3, timeout: float = 30) -> None:
        """Until the last ``count`` requests succeeded (the stream is running and healthy)."""
        wait_for("the request stream to succeed", lambda: len(self.results) >= count and
                 all(r["ok"] for r in self.results[-count:]), timeout)

    def stop(self) -> list[dict]:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()      # EOF: stop sending, finish the ones in flight
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return sorted(self.results, key=lambda r: r["sent"])

    def __enter__(self) -> "RequestStream":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def first_success_after(results: list[dict], t: float) -> Optional[float]:
    """Seconds from ``t`` to the completion of the first successful request sent after ``t``."""
    done = [r["done"] for r in results if r["sent"] >= t and r["ok"]]
    return min(done) - t if done else None


def remove_backend(lab: Lab, name: str, timeout: float = 30) -> None:
    """``Lab.remove_backend`` and then make the Pod object really go: the lab has no kubelet to
    confirm a graceful deletion, so the Pod would stay Terminating (its endpoint still
    ``serving``, and its name taken)."""
    ns = (lab.load().get("backends") or {}).get(name, {}).get("namespace", "default")
    lab.remove_backend(name)
    kc = lab.kubeconfig()
    kubectl(kc, "delete", "pod", name, "-n", ns, "--grace-period=0", "--force", "--ignore-not-found",
            "--wait=false", check=False)
    wait_for(f"pod {name} to be gone", lambda: kubectl(kc, "get", "pod", name, "-n", ns,
                                                       check=False).returncode != 0, timeout)


def router_nexthops(lab: Lab, prefix: str) -> set[str]:
    fam = "-6" if ":" in prefix else "-4"
    return route_gateways(lab.host("router").run(["ip", "-j", fam, "route", "show", prefix], check=False).stdout)


def measure_failover(lab: Lab, ip: str, node: str, rate_hz: float = 10, timeout: float = 30) -> dict:
    """Cut ``node``'s link while requesting ``ip`` from the client at ``rate_hz``; return the
    time from the cut to the first successful request after it, and the failures seen."""
    period = 1.0 / rate_hz
    lab.set_link(node, up=False)
    cut = time.monotonic()
    failures = 0
    try:
        while time.monotonic() - cut < timeout:
            t0 = time.monotonic()
            if curl(lab, ip, timeout=period * 0.9 if period < 1 else 1.0):
                return {"seconds": time.monotonic() - cut, "failed_requests": failures, "ok": True}
            failures += 1
            time.sleep(max(0.0, period - (time.monotonic() - t0)))
        return {"seconds": None, "failed_requests": failures, "ok": False}
    finally:
        pass


def restore_link(lab: Lab, node: str) -> None:
    lab.set_link(node, up=True)


# ---- the request stream's process (runs in the client's namespace) -------------------------
def _stream_main(argv: list[str]) -> None:
    import urllib.request
    ap = argparse.ArgumentParser(prog="python -m metalxdp.lab.tools stream")
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=1.0)
    a = ap.parse_args(argv)
    out_lock = threading.Lock()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def one(sent: float) -> None:
        rec = {"sent": sent}
        try:
            with opener.open(a.url, timeout=a.timeout) as resp:
                rec.update(ok=resp.status == 200, body=resp.read().decode().strip())
        except Exception as e:  # noqa: BLE001 - every failure is a failed request
            rec.update(ok=False, error=f"{type(e).__name__}: {e}")
        rec["done"] = time.monotonic()
        if rec["ok"] and rec["done"] - sent > a.timeout:
            rec.update(ok=False, error="late")
        with out_lock:
            print(json.dumps(rec), flush=True)

    period = 1.0 / a.rate
    workers = []
    next_at = time.monotonic()
    while not stop.is_set():
        t = threading.Thread(target=one, args=(time.monotonic(),))
        t.start()
        workers.append(t)
        next_at += period
        stop.wait(max(0.0, next_at - time.monotonic()))
    for t in workers:
        t.join()


if __name__ == "__main__":
    if sys.argv[1:2] == ["stream"]:
        _stream_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m metalxdp.lab.tools stream --url URL [--rate HZ] [--timeout S]")
