"""Which watch events can change what this node announces: the others do not wake the reconcile
pass (pure; fed every Service, EndpointSlice and Node event in the order each informer saw it).

The pass looks only at LoadBalancer Services of our class that have an IP in their status, at
the EndpointSlices of those, and at each Node's view (labels, NetworkUnavailable, InternalIPs).
A Service created without an IP yet, the EndpointSlice the control plane makes for it moments
later, any ClusterIP Service's churn and a Node's heartbeat status changed nothing of that, but
each woke a full pass on every node, while the Service's IP was being written, on 2 cores
shared with the API server (cluster lab: 9-11 passes per node for one BGP Service's create and
delete, 5-8 with this filter; issue 16's BGP row, docs/l2.md).

Always woken: a Service that counts before or after the event (so losing its IP, or being
deleted, is seen), a slice of such a Service, a Node whose view changed or that went away. The
caches are updated whatever the filter says, so a pass woken later reads everything current;
the pass every second (agent.node) runs regardless.
"""
from __future__ import annotations

import threading
from typing import Mapping, Optional

from metalxdp.service import status_ips_from_k8s, wants_load_balancer
from metalxdp.watch import obj_key

from .nodeview import node_internal_ips, node_view_from_k8s

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class WakeFilter:
    def __init__(self, lb_class: Optional[str] = None, ignore_exclude_lb: bool = False):
        self.lb_class, self.ignore_exclude_lb = lb_class, ignore_exclude_lb
        self._lock = threading.Lock()
        self._counted: set[str] = set()          # Services the pass looks at
        self._nodes: dict[str, tuple] = {}       # name -> the Node's view, last seen

    def counts(self, svc: Mapping) -> bool:
        """The reconcile pass looks at this Service (agent.node.Agent.reconcile's own test)."""
        return wants_load_balancer(svc, self.lb_class) and bool(status_ips_from_k8s(svc, strict=False))

    def service(self, typ: str, svc: Mapping) -> bool:
        key = obj_key(svc)
        now = typ != "DELETED" and self.counts(svc)
        with self._lock:
            was = key in self._counted
            if now:
                self._counted.add(key)
            else:
                self._counted.discard(key)
        return was or now

    def endpoint_slice(self, typ: str, sl: Mapping) -> bool:
        meta = sl.get("metadata") or {}
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not name:
            return False
        with self._lock:
            return f"{meta.get('namespace')}/{name}" in self._counted

    def node(self, typ: str, node: Mapping) -> bool:
        name = (node.get("metadata") or {}).get("name", "")
        with self._lock:
            if typ == "DELETED":
                self._nodes.pop(name, None)
                return True
            view = (node_view_from_k8s(node, self.ignore_exclude_lb), tuple(node_internal_ips(node)))
            changed = self._nodes.get(name) != view
            self._nodes[name] = view
            return changed
