"""Per-VIP L2 election: which node answers ARP/NDP for a Service's IPs, and on which interfaces.

PURE and deterministic: every agent runs ``announcing_node_for`` on the same inputs (the Service,
the Node objects, the checked Config and its own membership view) and reaches the same answer
without talking to the others, as MetalLB's speakers do (``speaker/layer2_controller.go``):

1. pre-conditions: the Service has an IP, the IPs lie in one pool (``Config.pool_for_ips``, the
   lookup the allocator uses too), >= 1 endpoint can serve
   anywhere in the cluster (else ``notOwner``), some L2Advertisement of that pool matches the
   Service's labels (else ``noMatchingAdvertisement``);
2. candidates = alive members - excluded nodes (``NodeView.excluded``: NetworkUnavailable, or
   labelled ``node.kubernetes.io/exclude-from-external-load-balancers`` unless the agent runs
   with ``--ignore-exclude-lb``), intersected with the nodes some service-matching
   L2Advertisement selects;
   ETP=Local keeps only candidates hosting a serving endpoint;
3. order: preferred-node score (sum of matching ``preferredNodeSelectors`` weights) descending,
   then ``sha256(node + "#" + first_ip)`` ascending; the first candidate announces every IP of
   the Service. Adding a node moves the IP only if the new node sorts first; removing a node
   that is not the winner never moves it.

Also here: the EndpointSlice -> "nodes with a serving endpoint" helper, MetalLB's default
interface exclusion regexes, and ``HandoffTracker`` (keep answering a VIP that moved away
while stale client ARP caches still send us its traffic).

No I/O, no kubernetes/pyroute2/bcc imports.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from metalxdp.config.types import Config, IPAddress, L2Advertisement, Pool, any_selector_matches

from .nodeview import NodeView

# Withdrawal / non-announcement reasons, spelled as MetalLB logs them ("" = announce).
ANNOUNCE = ""
NOT_OWNER = "notOwner"                      # no serving endpoint, no candidate, or another node won
NO_MATCHING_ADVERTISEMENT = "noMatchingAdvertisement"  # no L2Advertisement for pool+service(+node)
SHARED_IP_WITH_SERVICE_SELECTOR = "sharedIPWithServiceSelector"
NO_IP_ALLOCATED = "noIPAllocated"
IP_NOT_ALLOWED = "ipNotAllowed"             # the IPs lie in no pool (or in different pools)

# MetalLB's default ``announcedInterfacesToExclude`` (config/native/exclude-l2-config.yaml):
# bridges, container veths, CNI tunnels and loopback must never answer for a VIP.
DEFAULT_INTERFACE_EXCLUDES: tuple[str, ...] = (
    r"^docker.*", r"^cbr.*", r"^dummy.*", r"^virbr.*", r"^lxcbr.*", r"^veth.*", r"^lo$",
    r"^cali.*", r"^tunl.*", r"^flannel.*", r"^kube-ipvs.*", r"^cni.*", r"^nodelocaldns.*",
    r"^lxc.*")


@dataclass(frozen=True)
class ServiceView:
    """What the election needs from a Service (and its EndpointSlices).

    ips: status.loadBalancer.ingress IPs, in status order (the first one seeds the hash).
    pool: the pool name if known (annotation ``metallb.io/ip-allocated-from-pool``); when absent
        or not containing every IP, the pool is found from the IPs, as MetalLB's speaker does.
    has_serving_endpoint: >= 1 endpoint can serve anywhere (also one with no nodeName).
    nodes_with_ready_endpoints: nodes hosting a serving endpoint (ETP=Local candidates).
    sharing_key: ``metallb.io/allow-shared-ip`` value ("" = not shared).
    """
    key: str                                   # "namespace/name"
    ips: tuple[IPAddress, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    pool: Optional[str] = None
    etp_local: bool = False
    has_serving_endpoint: bool = False
    nodes_with_ready_endpoints: frozenset[str] = frozenset()
    sharing_key: str = ""


@dataclass(frozen=True)
class L2Decision:
    """The outcome for one Service, identical on every agent.

    node: the announcing node, or None (then ``reason`` says why nobody announces).
    interfaces: where ``node`` announces; empty = all its eligible interfaces.
    candidates: the ordered candidate list (winner first), for logs and status.
    """
    node: Optional[str]
    reason: str
    interfaces: frozenset[str] = frozenset()
    candidates: tuple[str, ...] = ()
    pool: Optional[str] = None
    # node names selected by at least one service-matching L2Advertisement (before liveness
    # and exclusions): lets a node tell "noMatchingAdvertisement" from "notOwner" for itself.
    covered_nodes: frozenset[str] = frozenset()

    def reason_for(self, my_node: str) -> str:
        """The reason *my_node* does not announce ("" when it is the winner), as MetalLB logs it."""
        if self.node == my_node:
            return ANNOUNCE
        if self.reason in (NO_IP_ALLOCATED, IP_NOT_ALLOWED, SHARED_IP_WITH_SERVICE_SELECTOR,
                           NO_MATCHING_ADVERTISEMENT):
            return self.reason
        if self.pool is not None and my_node not in self.covered_nodes:
            return NO_MATCHING_ADVERTISEMENT
        return NOT_OWNER


def election_key(node: str, first_ip: IPAddress | str) -> bytes:
    """MetalLB's per-(node, IP) order: sha256 of "node#ip" (ip in its canonical text form)."""
    return hashlib.sha256(f"{node}#{ipaddress.ip_address(first_ip)}".encode()).digest()


def advertisements_for(service: ServiceView, pool: Pool, config: Config) -> list[L2Advertisement]:
    """The L2Advertisements that target ``pool`` and whose serviceSelectors match the Service."""
    return [ad for ad in config.l2_advertisements
            if pool.name in ad.pools and any_selector_matches(ad.service_selectors, service.labels)]


def _selects(ad: L2Advertisement, node: NodeView) -> bool:
    return any_selector_matches(ad.node_selectors, node.labels)


def preferred_score(node: NodeView, ads: Sequence[L2Advertisement]) -> int:
    """Sum of ``preferredNodeSelectors`` weights over the ads that select ``node``."""
    return sum(w for ad in ads if _selects(ad, node)
               for w, sel in ad.preferred_node_selectors if sel.matches(node.labels))


def announcing_node_for(service: ServiceView, nodes: Mapping[str, NodeView] | Iterable[NodeView],
                        config: Config, members: Optional[Iterable[str]]) -> L2Decision:
    """Elect the node that announces ``service``'s IPs (see the module docstring for the rules).

    nodes: the cluster's Node objects (by name, or any iterable of NodeView), viewed with this
        agent's ``ignore_exclude_lb``.
    members: names alive in the membership view; None = membership disabled, every node counts
        (MetalLB assumes a speaker on every node then).
    """
    by_name = dict(nodes) if isinstance(nodes, Mapping) else {n.name: n for n in nodes}
    if not service.ips:
        return L2Decision(None, NO_IP_ALLOCATED)
    pool = config.pool_for_ips(service.ips, hint=service.pool)
    if pool is None:
        return L2Decision(None, IP_NOT_ALLOWED)
    ads = advertisements_for(service, pool, config)
    if service.sharing_key and any(ad.service_selectors for ad in ads):
        # Services sharing an IP may carry different labels; serviceSelectors could then pick
        # different announcers for ONE IP (two nodes answering ARP). Refuse rather than split.
        return L2Decision(None, SHARED_IP_WITH_SERVICE_SELECTOR, pool=pool.name)
    if not ads:
        return L2Decision(None, NO_MATCHING_ADVERTISEMENT, pool=pool.name)
    covered = frozenset(n.name for n in by_name.values() if any(_selects(ad, n) for ad in ads))
    if not service.has_serving_endpoint:
        return L2Decision(None, NOT_OWNER, pool=pool.name, covered_nodes=covered)

    alive = set(by_name) if members is None else set(members)
    candidates = [by_name[name] for name in covered & alive if not by_name[name].excluded]
    if service.etp_local:
        candidates = [n for n in candidates if n.name in service.nodes_with_ready_endpoints]
    if not candidates:
        return L2Decision(None, NOT_OWNER, pool=pool.name, covered_nodes=covered)

    first_ip = service.ips[0]   # dual-stack: the first IP decides for all of them
    candidates.sort(key=lambda n: (-preferred_score(n, ads), election_key(n.name, first_ip)))
    winner = candidates[0]
    return L2Decision(winner.name, ANNOUNCE, interfaces=interfaces_for(winner, ads),
                      candidates=tuple(n.name for n in candidates), pool=pool.name,
                      covered_nodes=covered)


def interfaces_for(node: NodeView, ads: Sequence[L2Advertisement]) -> frozenset[str]:
    """Union of ``interfaces`` of the ads selecting ``node``; empty = all (an ad without a list
    allows every interface, and wins over the others' lists, as in MetalLB)."""
    out: set[str] = set()
    for ad in ads:
        if not _selects(ad, node):
            continue
        if not ad.interfaces:
            return frozenset()
        out.update(ad.interfaces)
    return frozenset(out)


def filter_interfaces(names: Iterable[str], selected: frozenset[str] = frozenset(),
                      excludes: Sequence[str] = DEFAULT_INTERFACE_EXCLUDES) -> list[str]:
    """The interfaces to announce on: ``names`` minus those matching an exclude regex, and, when
    ``selected`` is not empty, only those in it. Order of ``names`` is kept."""
    pattern = re.compile("|".join(f"(?:{e})" for e in excludes)) if excludes else None
    return [n for n in names
            if not (pattern and pattern.search(n)) and (not selected or n in selected)]


# ---- EndpointSlices ----------------------------------------------------------------------

def endpoint_can_serve(conditions: Optional[Mapping]) -> bool:
    """MetalLB's rule (``epslices.EndpointCanServe``): Ready unset or true, or Serving true."""
    c = conditions or {}
    ready = c.get("ready")
    return ready is None or ready is True or c.get("serving") is True


def _endpoint_node(ep: Mapping) -> Optional[str]:
    # discovery.k8s.io/v1 (the only version served since Kubernetes 1.25): endpoints[].nodeName
    return ep.get("nodeName") or None


def endpoint_summary(slices: Iterable[Mapping]) -> tuple[bool, frozenset[str]]:
    """From discovery.k8s.io/v1 EndpointSlices as plain dicts: (some endpoint can serve anywhere,
    nodes hosting an endpoint that can serve)."""
    any_serving = False
    nodes: set[str] = set()
    for s in slices:
        for ep in s.get("endpoints") or ():
            if not endpoint_can_serve(ep.get("conditions")):
                continue
            any_serving = True
            node = _endpoint_node(ep)
            if node:
                nodes.add(node)
    return any_serving, frozenset(nodes)


def nodes_with_ready_endpoints(slices: Iterable[Mapping]) -> frozenset[str]:
    return endpoint_summary(slices)[1]


# ---- traffic-aware handoff ---------------------------------------------------------------

@dataclass
class _Handoff:
    started: float
    last_counter: int
    last_change: float


class HandoffTracker:
    """Decides how long a live node keeps answering a VIP that was just elected elsewhere.

    Clients keep the old MAC in their ARP cache (Linux: reachable ~30 s) until the gratuitous
    ARP of the new owner reaches them; some ignore GARP. While the old node's per-VIP packet
    counter still increases, traffic still arrives there: keep answering. Stop once the counter
    has been quiet for ``quiet_s`` or ``max_s`` after the move, whichever comes first.

        t = HandoffTracker()
        t.start("192.0.2.200", now, counter)        # VIP moved away from this (live) node
        keep = t.observe("192.0.2.200", now, counter)  # on every counter poll
    """

    def __init__(self, quiet_s: float = 2.0, max_s: float = 30.0):
        if quiet_s <= 0 or max_s <= 0:
            raise ValueError("quiet_s and max_s must be > 0")
        self.quiet_s, self.max_s = quiet_s, max_s
        self._h: dict[str, _Handoff] = {}

    def start(self, vip: str, now: float, counter: int) -> None:
        """The VIP left this node; keep answering until ``observe`` says stop. Restarting an
        ongoing handoff keeps its original start (``max_s`` bounds the whole handoff)."""
        if vip not in self._h:
            self._h[vip] = _Handoff(now, counter, now)

    def cancel(self, vip: str) -> None:
        """The VIP came back to this node (or was deleted): no handoff any more."""
        self._h.pop(vip, None)

    def observe(self, vip: str, now: float, counter: int) -> bool:
        """Feed the VIP's packet counter; True = keep answering. Once False, the handoff is over
        (later calls return False until ``start`` again)."""
        h = self._h.get(vip)
        if h is None:
            return False
        if counter > h.last_counter:
            h.last_change = now
        # a smaller counter = map recreated (agent/dataplane restart): new baseline, not traffic
        h.last_counter = counter
        if now - h.last_change >= self.quiet_s or now - h.started >= self.max_s:
            del self._h[vip]
            return False
        return True

    def active(self) -> frozenset[str]:
        """VIPs still being handed off (the agent keeps them in the dataplane)."""
        return frozenset(self._h)
