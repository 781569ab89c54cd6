"""Why this node does or does not announce each Service, per protocol: the reason names MetalLB's
speaker logs (``notOwner``, ``noMatchingAdvertisement``, ``noLocalEndpoints``, ...), a sentence
saying what to check, bookkeeping so each change is reported once, and a throttle so the
Events that carry the reasons never storm the API server.

    outcome = l2_outcome(decision, "node1", view, l2_applicable=True)   # Outcome(protocol, reason, detail)
    changes = book.update({(svc_key, "layer2"): outcome, ...})          # only what changed
    throttle.offer(key, item, now); throttle.due(now)                   # what may be posted now

Pure: no I/O, no Kubernetes client. The agent (``agent.node``) feeds it every reconcile pass,
logs the changes, publishes the current outcomes on its ``/status`` endpoint and posts Events
(``metalxdp status`` reads them back: ``reason_from_event``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from . import election
from .bgp import advertise as bgpadv

LAYER2, BGP = "layer2", "bgp"
ANNOUNCED = ""

# metalxdp's own reasons, where MetalLB has none
ANNOUNCE_FAILED = "announceFailed"       # MetalLB's Warning event name: elected, no usable interface
LAYER2_DISABLED = "layer2Disabled"       # the agent runs with --xdp-mode off
NO_PEERS = "noPeers"                     # announceable, but no BGPPeer (of the IP's family) selects this node


@dataclass(frozen=True)
class Outcome:
    """One protocol's decision for one Service on this node. ``reason`` "" = announced;
    ``elsewhere``: another node announces it (L2: the normal case for every other node, so it is
    logged at debug level and posts no Event)."""
    protocol: str
    reason: str
    detail: str = ""
    elsewhere: Optional[str] = None

    @property
    def announced(self) -> bool:
        return self.reason == ANNOUNCED


def l2_outcome(decision: election.L2Decision, my_node: str, view: election.ServiceView,
               usable_interfaces: Optional[Iterable[str]] = None, xdp: bool = True) -> Outcome:
    """The L2 outcome on ``my_node`` from the (cluster-wide) election ``decision``.
    ``usable_interfaces``: when this node won, the interfaces it can announce on (empty: it
    cannot, MetalLB's ``announceFailed``); ``xdp``: the agent answers ARP/NDP at all."""
    reason = decision.reason_for(my_node)
    pool = decision.pool
    if reason == ANNOUNCED:
        if not xdp:
            return Outcome(LAYER2, LAYER2_DISABLED, "this agent runs with --xdp-mode off: it answers no ARP/NDP")
        names = sorted(usable_interfaces or ())
        if usable_interfaces is not None and not names:
            wanted = sorted(decision.interfaces)
            return Outcome(LAYER2, ANNOUNCE_FAILED,
                           f"elected, but none of the interfaces {wanted} is usable here" if wanted
                           else "elected, but no interface here is usable for layer2 (up, ARP, not enslaved)")
        return Outcome(LAYER2, ANNOUNCED, f"on {', '.join(names)}" if names else "")
    if reason == election.NO_IP_ALLOCATED:
        return Outcome(LAYER2, reason, "the service has no IP yet")
    if reason == election.IP_NOT_ALLOWED:
        return Outcome(LAYER2, reason, "its IPs are in no IPAddressPool (or in different ones)")
    if reason == election.SHARED_IP_WITH_SERVICE_SELECTOR:
        return Outcome(LAYER2, reason, "it shares its IP (allow-shared-ip) and an L2Advertisement of pool "
                                       f"\"{pool}\" has serviceSelectors")
    if reason == election.NO_MATCHING_ADVERTISEMENT:
        if decision.reason == election.NO_MATCHING_ADVERTISEMENT:
            return Outcome(LAYER2, reason, f"no L2Advertisement of pool \"{pool}\" selects this service")
        return Outcome(LAYER2, reason, f"no L2Advertisement of pool \"{pool}\" selects this node")
    # notOwner
    if decision.node is not None:
        return Outcome(LAYER2, reason, f"node \"{decision.node}\" announces it", elsewhere=decision.node)
    if not view.has_serving_endpoint:
        return Outcome(LAYER2, reason, "the service has no serving endpoint")
    if view.etp_local:
        return Outcome(LAYER2, reason, "externalTrafficPolicy is Local and no live node selected by an "
                                       "L2Advertisement has a ready endpoint")
    return Outcome(LAYER2, reason, "no live, non-excluded node is selected by an L2Advertisement "
                                   "(membership, NetworkUnavailable, exclude-from-external-load-balancers)")


_BGP_DETAIL = {
    bgpadv.NODE_EXCLUDED: "this node is excluded (NetworkUnavailable, or the label "
                          "node.kubernetes.io/exclude-from-external-load-balancers)",
    bgpadv.NOT_OWNER: "no BGPAdvertisement of pool \"{pool}\" selects this node",
    bgpadv.NO_MATCHING_ADVERTISEMENT: "no BGPAdvertisement of pool \"{pool}\" selects this service",
    bgpadv.NO_LOCAL_ENDPOINTS: "externalTrafficPolicy is Local and no ready endpoint runs on this node",
    bgpadv.NO_ENDPOINTS: "the service has no ready endpoint",
    bgpadv.CONFLICTING_ADVERTISEMENTS: "two BGPAdvertisements give its prefix different localPref",
    bgpadv.NO_POOL: "its IPs are in no IPAddressPool",
    NO_PEERS: "no BGPPeer of the IP's address family selects this node",
}


def bgp_outcome(reason: Optional[str], peers: Iterable[str] = (), pool: Optional[str] = None) -> Outcome:
    """The BGP outcome: ``reason`` from ``advertise.should_announce`` / ``NodePlan.reasons``
    (None: announceable), ``peers`` it reaches (``NodePlan.service_peers``)."""
    reached = sorted(peers)
    if reason is None and not reached:
        reason = NO_PEERS
    if reason:
        return Outcome(BGP, reason, _BGP_DETAIL.get(reason, reason).format(pool=pool))
    return Outcome(BGP, ANNOUNCED, f"to {', '.join(reached)}")


def applicable_protocols(config, pool: Optional[str], bgp_enabled: bool = True) -> tuple[str, ...]:
    """The protocols an advertisement names ``pool`` for (L2Advertisement / BGPAdvertisement).
    A pool no advertisement names is reported under layer2 alone (``noMatchingAdvertisement``),
    like an IP in no pool (``ipNotAllowed``)."""
    if pool is None:
        return (LAYER2,)
    out = []
    if any(pool in a.pools for a in config.l2_advertisements):
        out.append(LAYER2)
    if bgp_enabled and any(pool in a.pools for a in config.bgp_advertisements):
        out.append(BGP)
    return tuple(out)


def unadvertised_pool(pool: str) -> Outcome:
    return Outcome(LAYER2, election.NO_MATCHING_ADVERTISEMENT,
                   f"no L2Advertisement or BGPAdvertisement names pool \"{pool}\"")


@dataclass(frozen=True)
class Change:
    service: str
    protocol: str
    old: Optional[Outcome]      # None: first seen
    new: Optional[Outcome]      # None: gone (service deleted, protocol no longer applies)


class ReasonBook:
    """The last outcome per (service key, protocol); ``update`` returns what changed (reason or
    detail), so each decision is logged and posted once per change, not once per pass."""

    def __init__(self):
        self.current: dict[tuple[str, str], Outcome] = {}

    def update(self, outcomes: Mapping[tuple[str, str], Outcome]) -> list[Change]:
        changes = []
        for key in sorted(set(self.current) | set(outcomes)):
            old, new = self.current.get(key), outcomes.get(key)
            if old != new:
                changes.append(Change(key[0], key[1], old, new))
        self.current = dict(outcomes)
        return changes


class EventThrottle:
    """Deduplicated, rate-limited posting: at most one pending item per key (a newer offer
    replaces an older one still waiting, so a flapping reason posts its latest state, not its
    history), drained by a token bucket of ``burst`` items refilled at ``per_s`` a second.
    ``now``: a monotonic clock in seconds, passed in (pure)."""

    def __init__(self, burst: int = 20, per_s: float = 2.0):
        self.burst, self.per_s = burst, per_s
        self._tokens = float(burst)
        self._last: Optional[float] = None
        self._pending: dict = {}            # key -> item, insertion order = posting order

    def offer(self, key, item) -> None:
        self._pending.pop(key, None)
        self._pending[key] = item

    def drop(self, key) -> None:
        self._pending.pop(key, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def due(self, now: float) -> list:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_s)
        self._last = now
        out = []
        while self._pending and self._tokens >= 1:
            key = next(iter(self._pending))
            out.append(self._pending.pop(key))
            self._tokens -= 1
        return out


# ---- the Event that carries a reason, and reading it back (metalxdp status) ---------------------

EVENT_MESSAGE = "not announcing from node \"{node}\" with protocol \"{protocol}\": {detail}"
_NOT_ANNOUNCING = re.compile(r'^not announcing from node "(?P<node>[^"]+)" with protocol "(?P<protocol>[^"]+)": ?(?P<detail>.*)$')
_ANNOUNCING = re.compile(r'^announcing from node "(?P<node>[^"]+)" with protocol "(?P<protocol>[^"]+)"')


def event_for(outcome: Outcome, node: str) -> Optional[tuple[str, str, str]]:
    """(type, reason, message) of the Event that reports ``outcome``, or None when it posts none
    (announced: the nodeAssigned event says so; L2 won by another node: the normal case)."""
    if outcome.announced or outcome.elsewhere is not None:
        return None
    typ = "Warning" if outcome.reason in (ANNOUNCE_FAILED, election.IP_NOT_ALLOWED,
                                          bgpadv.CONFLICTING_ADVERTISEMENTS) else "Normal"
    return typ, outcome.reason, EVENT_MESSAGE.format(node=node, protocol=outcome.protocol, detail=outcome.detail)


def reason_from_event(reason: str, message: str) -> Optional[tuple[str, str, str, str]]:
    """(node, protocol, reason, detail) from a speaker Event: ``nodeAssigned`` gives reason "",
    a not-announcing event its reason; None for any other event."""
    m = _ANNOUNCING.match(message or "")
    if reason == "nodeAssigned" and m:
        return m["node"], m["protocol"], ANNOUNCED, ""
    m = _NOT_ANNOUNCING.match(message or "")
    if m:
        return m["node"], m["protocol"], reason, m["detail"]
    return None
