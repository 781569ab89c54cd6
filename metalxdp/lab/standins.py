"""The lab's stand-ins for what a real cluster's kubelet, CNI and kube-proxy do.

* Backend "pods": an HTTP server in its own network namespace, bridged to its node (pod
  network 198.18.<node>.0/24 and 2001:db8:100:<node>::/64, routed between nodes), registered
  as a real Pod object whose status (podIP, Ready) the lab writes; the real kube-controller-
  manager's EndpointSlice controller then produces the EndpointSlices the agents read.
* kube-proxy stand-in: ``render_nft`` (pure) turns Services + EndpointSlices into one nftables
  ruleset per node: DNAT of LoadBalancer IP:port to endpoints, honouring
  externalTrafficPolicy (Local: only this node's endpoints, client source kept; Cluster: all
  endpoints, masqueraded so replies come back through this node). ``run_proxy`` applies it to
  every node namespace whenever the inputs change.
"""
from __future__ import annotations

import hashlib
import subprocess
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from ..log import get_logger
from ..service import ingress_ips

log = get_logger("lab")
TABLE = "metalxdp_lab"
MASQ_MARK = "0x4000"


def pod_cidrs(node_index: int) -> tuple[str, str]:
    """(IPv4, IPv6) pod network of node N (1-based)."""
    return f"198.18.{node_index}.0/24", f"2001:db8:100:{node_index}::/64"


def pod_gateway(node_index: int) -> tuple[str, str]:
    return f"198.18.{node_index}.1", f"2001:db8:100:{node_index}::1"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    node: str
    ready: bool = True


def endpoints_from_slices(slices: Iterable[Mapping]) -> list[Endpoint]:
    """discovery.k8s.io/v1 EndpointSlices -> endpoints."""
    out = []
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready") is not False
            node = ep.get("nodeName") or ""
            for a in ep.get("addresses") or []:
                out.append(Endpoint(a, node, ready))
    return out


def _chain(name: str) -> str:
    return "s" + hashlib.sha1(name.encode()).hexdigest()[:10]


def render_nft(node: str, services: Iterable[Mapping], slices_by_service: Mapping[str, list]) -> str:
    """The kube-proxy stand-in's ruleset for ``node`` (nft -f input, replaces the table)."""
    pre, chains = [], []
    for svc in sorted(services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        spec = svc.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        key = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
        vips = ingress_ips(svc)
        local = spec.get("externalTrafficPolicy") == "Local"
        eps = [e for e in endpoints_from_slices(slices_by_service.get(key, [])) if e.ready]
        if local:
            eps = [e for e in eps if e.node == node]
        for port in spec.get("ports") or []:
            proto = (port.get("protocol") or "TCP").lower()
            target = port.get("targetPort") or port["port"]
            if not isinstance(target, int):
                target = port["port"]
            for vip in vips:
                fam = "ip6" if ":" in vip else "ip"
                fam_eps = sorted(e.ip for e in eps if (":" in e.ip) == (fam == "ip6"))
                match = f"{fam} daddr {vip} {proto} dport {port['port']}"
                if not fam_eps:
                    pre.append(f"    {match} drop")   # as kube-proxy: no endpoint, no service
                    continue
                chain = _chain(f"{key}/{vip}/{proto}/{port['port']}")
                mark = "" if local else f"meta mark set {MASQ_MARK} "
                vmap = ", ".join(f"{i} : jump {chain}_{i}" for i in range(len(fam_eps)))
                pre.append(f"    {match} {mark}numgen random mod {len(fam_eps)} vmap {{ {vmap} }}")
                for i, ip in enumerate(fam_eps):
                    to = f"[{ip}]:{target}" if fam == "ip6" else f"{ip}:{target}"
                    chains.append(f"  chain {chain}_{i} {{\n    meta l4proto {proto} dnat {fam} to {to}\n  }}")
    out = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    out += chains
    out += ["  chain prerouting {", "    type nat hook prerouting priority -100; policy accept;", *pre, "  }",
            "  chain output {", "    type nat hook output priority -100; policy accept;", *pre, "  }",
            "  chain postrouting {", "    type nat hook postrouting priority 100; policy accept;",
            f"    meta mark {MASQ_MARK} masquerade", "  }", "}", ""]
    return "\n".join(out)


def run_proxy(kubeconfig: str, node_netns: Mapping[str, str], stop: Optional[threading.Event] = None) -> None:
    """Keep every node's ruleset in step with Services and EndpointSlices (blocks)."""
    from ..kube import api_client
    from ..watch import Informer
    api = api_client(kubeconfig)
    wake = threading.Event()
    poke = lambda t, o: wake.set()  # noqa: E731
    svcs = Informer(api, "/api/v1/services", poke).start()
    slices = Informer(api, "/apis/discovery.k8s.io/v1/endpointslices", poke).start()
    svcs.wait_synced()
    slices.wait_synced()
    applied: dict[str, str] = {}
    stop = stop or threading.Event()
    wake.set()
    while not stop.is_set():
        if not wake.wait(1.0):
            continue
        wake.clear()
        by_svc: dict[str, list] = {}
        for sl in slices.items():
            name = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            if name:
                by_svc.setdefault(f"{sl['metadata']['namespace']}/{name}", []).append(sl)
        items = svcs.items()
        for node, ns in node_netns.items():
            rules = render_nft(node, items, by_svc)
            if applied.get(node) == rules:
                continue
            r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                               capture_output=True)
            if r.returncode != 0:
                log.error("nft ruleset rejected", node=node, error=r.stderr.strip()[:500])
                continue
            applied[node] = rules
            log.info("kube-proxy rules updated", node=node, rules=rules.count("dnat"))


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description="lab kube-proxy stand-in")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node", action="append", required=True, help="node=netns (repeat)")
    a = ap.parse_args()
    run_proxy(a.kubeconfig, dict(n.split("=", 1) for n in a.node))


if __name__ == "__main__":
    main()
