"""The checked configuration: small frozen dataclasses built by the parser from raw resources.

These are the contract between the parser (metalxdp.config.parse), the controller's allocator
and the agent. Addresses are ``ipaddress`` objects; durations are seconds (float); every
collection is a tuple or frozenset so a Config can be compared and hashed.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class ConfigError(ValueError):
    """An invalid configuration. ``obj`` is "Kind/name", ``field`` a dotted path
    ("spec.addresses[1]"), ``rule`` what must hold. ``str()`` is one line a user can act on."""

    def __init__(self, obj: str, field: str, rule: str, transient: bool = False):
        self.obj, self.field, self.rule = obj, field, rule
        # transient: something referenced does not exist *yet* (a Secret, a BFDProfile):
        # MetalLB retries these instead of marking the config invalid for good.
        self.transient = transient
        super().__init__(f"{obj}: {field}: {rule}" if field else f"{obj}: {rule}")


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry of a Kubernetes LabelSelector."""
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A parsed Kubernetes LabelSelector. The empty selector matches everything."""
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        for r in self.match_expressions:
            present = r.key in labels
            if r.operator == "In" and not (present and labels[r.key] in r.values):
                return False
            if r.operator == "NotIn" and present and labels[r.key] in r.values:
                return False
            if r.operator == "Exists" and not present:
                return False
            if r.operator == "DoesNotExist" and present:
                return False
        return True


def any_selector_matches(selectors: tuple[LabelSelector, ...], labels: Mapping[str, str]) -> bool:
    """MetalLB's rule for lists of selectors: an empty list matches everything, otherwise any one."""
    return not selectors or any(s.matches(labels) for s in selectors)


@dataclass(frozen=True)
class ServiceAllocation:
    """IPAddressPool.spec.serviceAllocation: which services a pool serves, and its priority.

    priority: lower number = higher priority; 0 (unset) sorts last, as in MetalLB.
    An allocation with no namespaces and no selectors matches every service ("pinned" pool).
    """
    priority: int = 0
    namespaces: frozenset[str] = frozenset()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()


def confuses_buggy_firmware(ip: IPAddress) -> bool:
    """avoidBuggyIPs: some consumer devices (smurf protection on cheap CPE firmware) drop
    traffic to IPv4 addresses ending in .0 or .255."""
    return ip.version == 4 and (int(ip) & 0xFF) in (0, 0xFF)


@dataclass(frozen=True)
class Pool:
    """An IPAddressPool (or a legacy AddressPool) after parsing.

    cidrs: the addresses, ranges already summarised to CIDRs, in spec order (allocation order).
    """
    name: str
    cidrs: tuple[IPNetwork, ...]
    auto_assign: bool = True
    # some consumer devices drop traffic to .0 and .255 addresses: skip them when set
    avoid_buggy_ips: bool = False
    service_allocation: Optional[ServiceAllocation] = None
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def families(self) -> frozenset[int]:
        return frozenset(c.version for c in self.cidrs)

    def contains(self, ip: IPAddress) -> bool:
        """``ip`` lies in one of the CIDRs (see ``holds`` for "is one of the pool's addresses")."""
        return any(ip in c for c in self.cidrs)

    def holds(self, ip: IPAddress) -> bool:
        """``ip`` is one of the pool's addresses: in a CIDR, and not a .0/.255 address that an
        avoidBuggyIPs pool leaves out (MetalLB's allocator ``poolFor``)."""
        return not (self.avoid_buggy_ips and confuses_buggy_firmware(ip)) and self.contains(ip)


@dataclass(frozen=True)
class L2Advertisement:
    name: str
    pools: frozenset[str]                          # resolved pool names (names + selectors; empty spec = all)
    node_selectors: tuple[LabelSelector, ...] = ()  # empty = all nodes
    interfaces: tuple[str, ...] = ()                # empty = all interfaces
    service_selectors: tuple[LabelSelector, ...] = ()
    # spec.preferredNodeSelectors: (weight 1..100, selector); summed per node by the election
    preferred_node_selectors: tuple[tuple[int, LabelSelector], ...] = ()


@dataclass(frozen=True)
class Community:
    """A BGP community: legacy (a:b, 16 bits each) or large (large:a:b:c, 32 bits each)."""
    value: str          # canonical text: "65535:65282" or "large:1:2:3"
    large: bool = False


@dataclass(frozen=True)
class BGPAdvertisement:
    name: str
    pools: frozenset[str]
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int = 0
    communities: tuple[Community, ...] = ()   # aliases resolved, sorted, unique
    node_selectors: tuple[LabelSelector, ...] = ()
    peers: frozenset[str] = frozenset()       # BGPPeer names; empty = all peers
    service_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True)
class BFDProfile:
    name: str
    receive_interval_ms: int = 300
    transmit_interval_ms: int = 300
    detect_multiplier: int = 3
    echo_interval_ms: int = 50
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: int = 254


@dataclass(frozen=True)
class BGPPeer:
    name: str
    my_asn: int
    peer_asn: int
    peer_address: Optional[IPAddress]     # None for an ``interface`` (unnumbered) peer
    source_address: Optional[IPAddress] = None
    peer_port: int = 179
    hold_time: float = 90.0        # seconds; 0 = no keepalives
    keepalive_time: float = 30.0   # seconds; derived as hold/3 when only hold is set
    connect_time: Optional[float] = None
    router_id: Optional[ipaddress.IPv4Address] = None
    password: str = ""             # resolved plaintext (from password or passwordSecret)
    password_secret: Optional[str] = None  # "namespace/name" when set through passwordSecret
    ebgp_multihop: bool = False
    node_selectors: tuple[LabelSelector, ...] = ()
    enable_graceful_restart: bool = False
    bfd_profile: str = ""
    local_asn: int = 0             # localASN: the AS presented to this peer instead of myASN (0: unset)
    dynamic_asn: str = ""          # dynamicASN: "internal" / "external" instead of peerASN ("": unset)
    interface: str = ""            # BGP unnumbered: the node interface; the agent fills in
                                   # peer_address (the router's link-local) once it knows it
    dual_stack: bool = False       # dualStackAddressFamily: both families over this session

    def families(self) -> frozenset[int]:
        """The address families announced to this peer: both over an unnumbered session
        (RFC 8950 extended next hop, as MetalLB's FRR mode), else the peer address's own."""
        if self.interface or self.dual_stack:
            return frozenset((4, 6))
        return frozenset((self.peer_address.version,)) if self.peer_address is not None else frozenset()

    @property
    def identity(self) -> str:
        """The address, or ``interface:<name>`` for an unnumbered peer (MetalLB's peerIdentifier)."""
        return f"interface:{self.interface}" if self.interface else str(self.peer_address)

    @property
    def local_as(self) -> int:
        """The AS this node presents to the peer in its OPEN: localASN when set, else myASN."""
        return self.local_asn or self.my_asn

    @property
    def ibgp(self) -> bool:
        """An iBGP session: the peer is in the AS we present (dynamicASN says so directly)."""
        if self.dynamic_asn:
            return self.dynamic_asn == "internal"
        return self.local_as == self.peer_asn


@dataclass(frozen=True)
class Config:
    """The whole checked configuration."""
    pools: Mapping[str, Pool] = field(default_factory=dict)
    l2_advertisements: tuple[L2Advertisement, ...] = ()
    bgp_advertisements: tuple[BGPAdvertisement, ...] = ()
    peers: Mapping[str, BGPPeer] = field(default_factory=dict)
    bfd_profiles: Mapping[str, BFDProfile] = field(default_factory=dict)
    communities: Mapping[str, Community] = field(default_factory=dict)  # alias -> value
    # Accepted but noteworthy settings (e.g. "disableMP has no effect"); the webhook returns
    # them as admission warnings and the CLI prints them.
    warnings: tuple[str, ...] = ()

    def pool_for_ip(self, ip: IPAddress) -> Optional[Pool]:
        """The pool ``ip`` belongs to (``Pool.holds``: avoidBuggyIPs counts), or None. Pools do
        not overlap in a parsed Config, so there is at most one; the first in order otherwise.
        The one lookup: the allocator, the L2 election and the BGP decision all use it."""
        for p in self.pools.values():
            if p.holds(ip):
                return p
        return None

    def pool_for_ips(self, ips: Sequence[IPAddress], hint: Optional[str] = None) -> Optional[Pool]:
        """The one pool every address of ``ips`` belongs to (a Service's IPs lie in one pool), or
        None (no address, or an address in no pool, or in different pools). ``hint`` (the pool
        the Service's annotation names) wins when it holds them all."""
        if hint is not None and hint in self.pools and ips and all(self.pools[hint].holds(ip) for ip in ips):
            return self.pools[hint]
        found: Optional[Pool] = None
        for ip in ips:
            p = self.pool_for_ip(ip)
            if p is None or (found is not None and p is not found):
                return None
            found = p
        return found
