"""The ServiceBGPStatus objects this node should have: one per service it announces, listing the
BGPPeers the service's prefixes go to (MetalLB's ``adsChangedCallback``). Pure: the agent's
writer (agent/status_objects.py) compares them with this node's objects in the API (by the three labels)
and creates/updates/deletes, also right after a restart. The labels, API_VERSION and
status_key serve the ServiceL2Status objects too (same labels, same matching).
"""
from __future__ import annotations

from typing import Mapping

NODE_LABEL = "metallb.io/node"
SERVICE_NAME_LABEL = "metallb.io/service-name"
SERVICE_NAMESPACE_LABEL = "metallb.io/service-namespace"
API_VERSION = "metallb.io/v1beta1"


def status_key(node: str, service_key: str) -> tuple[str, str, str]:
    """(node, service namespace, service name): how an existing object is matched (labels)."""
    ns, _, name = service_key.partition("/")
    return node, ns, name


def service_bgp_statuses(node: str, service_peers: Mapping[str, frozenset[str]],
                         namespace: str = "metallb-system") -> dict[tuple[str, str, str], dict]:
    """status_key -> desired ServiceBGPStatus body, for every service announced to >= 1 peer.

    ``service_peers`` is ``NodePlan.service_peers`` ("ns/name" -> peer names). Services that
    reach no peer get no object (an existing one should be deleted)."""
    out: dict[tuple[str, str, str], dict] = {}
    for svc_key, peers in sorted(service_peers.items()):
        if not peers:
            continue
        key = status_key(node, svc_key)
        _, svc_ns, svc_name = key
        out[key] = {
            "apiVersion": API_VERSION,
            "kind": "ServiceBGPStatus",
            "metadata": {
                "generateName": "bgp-",
                "namespace": namespace,
                "labels": {NODE_LABEL: node, SERVICE_NAME_LABEL: svc_name,
                           SERVICE_NAMESPACE_LABEL: svc_ns},
            },
            "status": {"node": node, "serviceName": svc_name, "serviceNamespace": svc_ns,
                       "peers": sorted(peers)},
        }
    return out
