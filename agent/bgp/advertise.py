"""What this node announces over BGP, to which peer: MetalLB's ``ShouldAnnounce`` and
advertisement building, as pure functions (no I/O, no Kubernetes client).

    plan = plan_for_node(config, NodeView("node1", labels), services)
    plan.advertisements        # peer name -> frozenset[Route]   (what BGPSpeaker.set takes)
    plan.service_peers         # "ns/name" -> frozenset of peer names it is announced to
    plan.reasons               # "ns/name" -> why it is NOT announced (MetalLB's reason names)

Rules (MetalLB ``speaker/bgp_controller.go``):
- an excluded node (``NodeView.excluded``, the L2 election's rule too: the NetworkUnavailable
  condition, or the label ``node.kubernetes.io/exclude-from-external-load-balancers`` unless the
  agent runs with ``--ignore-exclude-lb``) announces nothing (``nodeExcluded``);
- the BGPAdvertisements of the IP's pool must select this node (``notOwner``) and the service
  (``noMatchingAdvertisement``);
- externalTrafficPolicy Local needs a ready endpoint on this node (``noLocalEndpoints``),
  Cluster needs a ready endpoint anywhere (``noEndpoints``);
- two advertisements selected through serviceSelectors with different localPref for the same
  prefix length conflict (``conflictingAdvertisements``): the parser cannot check those;
- a peer is active on this node when its nodeSelectors match; an advertisement with ``peers``
  goes only to those; a prefix goes to peers of its own address family (metalxdp opens one
  session per family);
- prefix = IP masked to aggregationLength(V6); communities sorted the MetalLB way (legacy a:b
  as (a<<16|b):0:0, then large); localPref only towards iBGP peers, 0 meaning "not set".

When several advertisements give the same prefix to the same peer, their communities are merged
and the highest localPref wins, so each peer sees each prefix once (what a BGP speaker can
send anyway: one path per prefix per session).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

from metalxdp.config.types import (BGPAdvertisement, BGPPeer, Community, Config, IPAddress,
                                   IPNetwork, any_selector_matches)
from metalxdp.config.values import community_sort_key

from ..nodeview import NodeView

# MetalLB's reason names for "not announced" (logged and exposed for debugging)
NODE_EXCLUDED = "nodeExcluded"
NOT_OWNER = "notOwner"
NO_MATCHING_ADVERTISEMENT = "noMatchingAdvertisement"
NO_LOCAL_ENDPOINTS = "noLocalEndpoints"
NO_ENDPOINTS = "noEndpoints"
CONFLICTING_ADVERTISEMENTS = "conflictingAdvertisements"
NO_POOL = "noPool"


@dataclass(frozen=True)
class ServiceView:
    """One LoadBalancer Service as the BGP decision sees it.

    key: "namespace/name". ips: the assigned ingress IPs. pool: the IPAddressPool they came from
    (None: look each IP up in the config). etp_local: externalTrafficPolicy is Local.
    has_ready_local_endpoint: a ready (serving) endpoint with addresses runs on THIS node.
    has_any_ready_endpoint: a ready endpoint exists on any node.
    """
    key: str
    ips: tuple[IPAddress, ...]
    pool: Optional[str] = None
    labels: Mapping[str, str] = field(default_factory=dict)
    etp_local: bool = False
    has_ready_local_endpoint: bool = False
    has_any_ready_endpoint: bool = False


@dataclass(frozen=True, order=True)
class Route:
    """One announced prefix with its path attributes, as sent to one peer.

    communities: sorted, legacy and large mixed (``Community.large`` tells them apart).
    local_pref: None when not sent (eBGP peer, or localPref 0 = unset).
    """
    prefix: IPNetwork
    communities: tuple[Community, ...] = ()
    local_pref: Optional[int] = None

    def __str__(self) -> str:
        extra = "".join(f" {c.value}" for c in self.communities)
        lp = f" lp={self.local_pref}" if self.local_pref is not None else ""
        return f"{self.prefix}{extra}{lp}"


@dataclass(frozen=True)
class NodePlan:
    advertisements: dict[str, frozenset[Route]]
    service_peers: dict[str, frozenset[str]]
    reasons: dict[str, str]
    prefix_owners: dict[IPNetwork, tuple[str, ...]] = field(default_factory=dict)  # for logs


def active_peers(config: Config, node: NodeView) -> dict[str, BGPPeer]:
    """The BGPPeers this node opens sessions to: those whose nodeSelectors match it."""
    return {name: p for name, p in sorted(config.peers.items())
            if any_selector_matches(p.node_selectors, node.labels)}


def aggregated_prefix(ip: IPAddress, adv: BGPAdvertisement) -> IPNetwork:
    length = adv.aggregation_length if ip.version == 4 else adv.aggregation_length_v6
    return ipaddress.ip_network(f"{ip}/{length}", strict=False)


def _ads_for(config: Config, pool: str, node: NodeView,
             svc: ServiceView) -> tuple[list[BGPAdvertisement], Optional[str]]:
    """The pool's advertisements that select this node and this service, or the reason none do."""
    of_pool = [a for a in config.bgp_advertisements if pool in a.pools]
    on_node = [a for a in of_pool if any_selector_matches(a.node_selectors, node.labels)]
    if not on_node:
        return [], NOT_OWNER
    for_service = [a for a in on_node if any_selector_matches(a.service_selectors, svc.labels)]
    if not for_service:
        return [], NO_MATCHING_ADVERTISEMENT
    return for_service, None


def _local_pref_conflict(ads: list[BGPAdvertisement], ip: IPAddress) -> bool:
    """Two ads giving the same prefix to a common peer with different localPref: the router
    could not tell which to prefer, so MetalLB announces neither (conflictingAdvertisements).
    The parser rejects such pairs unless serviceSelectors hide them; this is the run-time check."""
    for i, a in enumerate(ads):
        for b in ads[i + 1:]:
            peers_overlap = not a.peers or not b.peers or bool(a.peers & b.peers)
            if (a.local_pref != b.local_pref and peers_overlap
                    and aggregated_prefix(ip, a) == aggregated_prefix(ip, b)):
                return True
    return False


def should_announce(config: Config, node: NodeView, svc: ServiceView) -> Optional[str]:
    """None when this node should announce ``svc``, else MetalLB's reason why not."""
    if node.excluded:
        return NODE_EXCLUDED
    for ip in svc.ips:
        pool = svc.pool or _pool_name(config, ip)
        if pool is None:
            return NO_POOL
        ads, reason = _ads_for(config, pool, node, svc)
        if reason:
            return reason
        if _local_pref_conflict(ads, ip):
            return CONFLICTING_ADVERTISEMENTS
    if svc.etp_local and not svc.has_ready_local_endpoint:
        return NO_LOCAL_ENDPOINTS
    if not svc.etp_local and not svc.has_any_ready_endpoint:
        return NO_ENDPOINTS
    return None


def _pool_name(config: Config, ip: IPAddress) -> Optional[str]:
    p = config.pool_for_ip(ip)
    return p.name if p else None


def plan_for_node(config: Config, node: NodeView, services: list[ServiceView]) -> NodePlan:
    """Everything this node announces, per peer; which peers each service reaches; and why the
    others are not announced."""
    peers = active_peers(config, node)
    # (peer, prefix) -> (communities, local_pref): merged across ads and services
    merged: dict[tuple[str, IPNetwork], tuple[set[Community], Optional[int]]] = {}
    service_peers: dict[str, frozenset[str]] = {}
    reasons: dict[str, str] = {}
    owners: dict[IPNetwork, set[str]] = {}
    for svc in sorted(services, key=lambda s: s.key):
        reason = should_announce(config, node, svc)
        if reason:
            reasons[svc.key] = reason
            continue
        reached: set[str] = set()
        for ip in svc.ips:
            pool = svc.pool or _pool_name(config, ip)
            ads, _ = _ads_for(config, pool, node, svc)
            for adv in ads:
                prefix = aggregated_prefix(ip, adv)
                for pname, peer in peers.items():
                    if adv.peers and pname not in adv.peers:
                        continue
                    if ip.version not in peer.families():
                        continue
                    lp = adv.local_pref if (peer.ibgp and adv.local_pref) else None
                    comms, old_lp = merged.get((pname, prefix), (set(), None))
                    comms |= set(adv.communities)
                    if old_lp is not None and (lp is None or old_lp > lp):
                        lp = old_lp
                    merged[(pname, prefix)] = (comms, lp)
                    reached.add(pname)
                    owners.setdefault(prefix, set()).add(svc.key)
        service_peers[svc.key] = frozenset(reached)
    ads_by_peer: dict[str, set[Route]] = {p: set() for p in peers}
    for (pname, prefix), (comms, lp) in merged.items():
        ads_by_peer[pname].add(Route(prefix, tuple(sorted(comms, key=community_sort_key)), lp))
    return NodePlan({p: frozenset(r) for p, r in ads_by_peer.items()}, service_peers, reasons,
                    {p: tuple(sorted(k)) for p, k in owners.items()})


def advertisements_for_node(config: Config, node: NodeView,
                            services: list[ServiceView]) -> dict[str, frozenset[Route]]:
    """Peer name -> the routes this node sends it (every active peer is a key, maybe empty)."""
    return plan_for_node(config, node, services).advertisements
