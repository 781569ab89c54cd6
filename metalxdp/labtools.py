"""Things the demo, the lab tests and the benchmarks do with a running lab: create demo
Services, wait for IPs, curl from the client, find the announcing node, measure failover."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Optional

from .lab import Lab, kubectl
from .rig.procs import wait_for


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
    ing = ((json.loads(r.stdout).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ing if i.get("ip")]


def wait_service_ips(lab: Lab, name: str, count: int = 1, timeout: float = 60, namespace: str = "default") -> list[str]:
    got: list[str] = []

    def check():
        nonlocal got
        got = service_ips(lab, name, namespace)
        return len(got) >= count
    wait_for(f"service {name} to get {count} IP(s)", check, timeout)
    return got


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


def announcing_node(lab: Lab, ip: str) -> Optional[str]:
    """The node whose MAC the client resolved ``ip`` to (asks with arping/ndisc6 first)."""
    h = lab.host("client")
    if ":" in ip:
        h.run(["ndisc6", "-1", "-w", "500", ip, "eth0"], check=False, timeout=10)
    else:
        h.run(["arping", "-c", "1", "-w", "1", "-I", "eth0", ip], check=False, timeout=10)
    mac = neighbour_mac(lab, ip)
    for name, info in lab.status()["hosts"].items():
        if info.get("mac") == mac:
            return name
    return None


def router_nexthops(lab: Lab, prefix: str) -> set[str]:
    fam = "-6" if ":" in prefix else "-4"
    out = lab.host("router").run(["ip", "-j", fam, "route", "show", prefix], check=False).stdout
    hops: set[str] = set()
    for route in json.loads(out or "[]"):
        if route.get("gateway"):
            hops.add(route["gateway"])
        for nh in route.get("nexthops", []):
            if nh.get("gateway"):
                hops.add(nh["gateway"])
    return hops


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
