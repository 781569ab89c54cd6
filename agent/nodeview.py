"""The one view of a Node object that the agent's pure decisions take: the L2 election
(``agent.election``) and the BGP decision (``agent.bgp.advertise``) read the same ``NodeView``,
so a node is excluded from both for the same reasons.

MetalLB's speakers (``speaker/layer2_controller.go``, ``speaker/bgp_controller.go``) leave out
a node whose ``NetworkUnavailable`` condition is True or that carries the label
``node.kubernetes.io/exclude-from-external-load-balancers``; the label does not count when the
speaker runs with ``--ignore-exclude-lb``. That flag is the agent's, so it travels in the view
(``node_view_from_k8s(node, ignore_exclude_lb)``) and no decision can forget it.

No I/O, no kubernetes/pyroute2/bcc imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


@dataclass(frozen=True)
class NodeView:
    """What the L2 election and the BGP decision need from a Node object."""
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    network_unavailable: bool = False    # condition NetworkUnavailable == "True"
    ignore_exclude_lb: bool = False      # the agent's --ignore-exclude-lb: the label does not exclude

    @property
    def excluded(self) -> bool:
        """The node announces nothing, in L2 or BGP mode (MetalLB's ``nodeExcluded``)."""
        return self.network_unavailable or (not self.ignore_exclude_lb and EXCLUDE_LB_LABEL in self.labels)


def node_view_from_k8s(node: Mapping, ignore_exclude_lb: bool = False) -> NodeView:
    """A Node object (plain dict, as the API returns it) -> NodeView; ``ignore_exclude_lb`` is the
    agent's flag."""
    meta = node.get("metadata") or {}
    conds = (node.get("status") or {}).get("conditions") or ()
    unavailable = any(c.get("type") == "NetworkUnavailable" and c.get("status") == "True"
                      for c in conds)
    return NodeView(meta.get("name", ""), dict(meta.get("labels") or {}), unavailable, ignore_exclude_lb)


def node_internal_ips(node: Mapping) -> list[str]:
    """The InternalIP addresses of a Node object: the membership seeds, BGP's local addresses."""
    return [a["address"] for a in (node.get("status") or {}).get("addresses") or ()
            if a.get("type") == "InternalIP" and a.get("address")]
