"""The one pure parser: raw metallb.io resources -> a checked ``Config``, or ``ConfigError``.

``parse(resources)`` is what the controller, the agent and the admission webhook all call, so a
configuration is valid or invalid everywhere for the same reason (MetalLB's ``config.For``).
``validate(resources)`` runs the same checks but collects every problem instead of stopping at
the first, for ``metalxdp config validate``. No I/O, no Kubernetes client.

Input: a list of plain dicts (Kubernetes objects). Kinds read: IPAddressPool, AddressPool
(legacy, v1alpha1/v1beta1), L2Advertisement, BGPAdvertisement, BGPPeer (v1beta1/v1beta2),
BFDProfile, Community, MetalLB (operator CR, validated only). Status kinds (ServiceL2Status,
ServiceBGPStatus, ConfigurationState) and other groups are ignored.

The "backend gate" is metalxdp's, not MetalLB-native's nor FRR's: BGP sessions are run by
ExaBGP (one speaker per node) and BFD by metalxdp's own implementation, so

* accepted: bfdProfile, keepaliveTime, IPv6 pools with BGP, large communities,
  enableGracefulRestart, passwordSecret, ebgpMultiHop, sourceAddress, routerID, connectTime,
  localASN, dynamicASN (internal/external, exactly one of peerASN and dynamicASN),
  interface (BGP unnumbered: exactly one of peerAddress and interface), BFDProfile echoMode;
  dualStackAddressFamily (both families over one session);
* rejected with the reason: vrf;
* ``disableMP``: accepted with a warning that it has no effect (in ``Config.warnings``);
* FRR-mode rules (MetalLB v0.16's checkFRRPeersCompatible), because there is one BGP speaker
  per node: peers that can be active on the same node share one myASN and one routerID and
  never share an address. Without ``nodes`` (or with none) every pair is assumed to share a node.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from . import overlaps
from .fields import Fields, reject_duplicates, type_name
from .selectors import matching_names, parse_selector, parse_selector_list
from .types import (BFDProfile, BGPAdvertisement, BGPPeer, Community, Config, ConfigError,
                    IPAddress, IPNetwork, L2Advertisement, LabelSelector, Pool, ServiceAllocation)
from .values import (CommunityFormatError, community_sort_key,
                     parse_community, parse_duration, parse_ip, parse_pool_address)

GROUP = "metallb.io"
DEFAULT_NAMESPACE = "metallb-system"
UINT32_MAX = 0xFFFFFFFF

# kind -> API versions served for it (what a real API server with our CRDs accepts)
SERVED_VERSIONS: dict[str, tuple[str, ...]] = {
    "IPAddressPool": ("v1beta1",),
    "AddressPool": ("v1beta1", "v1alpha1"),
    "L2Advertisement": ("v1beta1",),
    "BGPAdvertisement": ("v1beta1",),
    "BGPPeer": ("v1beta2", "v1beta1"),
    "BFDProfile": ("v1beta1",),
    "Community": ("v1beta1",),
    "MetalLB": ("v1beta1",),
    "ServiceL2Status": ("v1beta1",),
    "ServiceBGPStatus": ("v1beta1",),
    "ConfigurationState": ("v1beta1",),
}
# Kinds that only carry status written by metalxdp itself: never configuration.
STATUS_KINDS = frozenset({"ServiceL2Status", "ServiceBGPStatus", "ConfigurationState"})

# Why each unsupported BGPPeer field is refused: the user should learn what to do instead.
UNSUPPORTED_PEER_FIELDS = {
    "vrf": "vrf is not supported: metalxdp speaks BGP through ExaBGP, which has no VRF support; "
           "remove spec.vrf and peer from the default VRF",
}

DEFAULT_HOLD_TIME = 90.0


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_OBJECT_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")


def is_object_name(name: str) -> bool:
    """A name the API server accepts for these kinds (RFC 1123 subdomain, at most 253)."""
    return len(name) <= 253 and _OBJECT_NAME.fullmatch(name) is not None


def obj_label(kind: str, name: str) -> str:
    return f"{kind}/{name}" if name else kind


# ---------------------------------------------------------------------------------------------
# public API

def parse(resources: Any, *, secrets: Optional[Mapping[str, Any]] = None,
          nodes: Optional[Mapping[str, Mapping[str, str]]] = None,
          namespaces: Optional[Mapping[str, Mapping[str, str]]] = None,
          strict_transient: bool = True) -> Config:
    """Resources -> Config, or raise the most important ConfigError.

    secrets: "namespace/name" -> Secret object (``type``, base64 ``data``), for passwordSecret.
    nodes: node name -> labels; only used to decide whether two peers/advertisements can be
        active on the same node (None: assume they can).
    namespaces: namespace name -> labels, to resolve serviceAllocation.namespaceSelectors.
    strict_transient: when False, references to objects that may simply not exist yet (a
        Secret, a BFDProfile, a Community alias) are not errors - the admission webhook's view.

    A permanent error is raised in preference to a transient one: the configuration is invalid
    for good, whatever arrives later.
    """
    config, errors = _run(resources, secrets, nodes, namespaces, strict_transient)
    if errors:
        permanent = [e for e in errors if not e.transient]
        raise (permanent or errors)[0]
    return config


def validate(resources: Any, *, secrets: Optional[Mapping[str, Any]] = None,
             nodes: Optional[Mapping[str, Mapping[str, str]]] = None,
             namespaces: Optional[Mapping[str, Mapping[str, str]]] = None,
             strict_transient: bool = True) -> list[ConfigError]:
    """Every problem in the resources, one ConfigError each (empty list = valid)."""
    return _run(resources, secrets, nodes, namespaces, strict_transient)[1]


def validate_with_config(resources: Any, **kwargs: Any) -> tuple[Config, list[ConfigError]]:
    """Both the (best-effort) Config and all errors; the Config is only trustworthy if no errors."""
    return _run(resources, kwargs.get("secrets"), kwargs.get("nodes"), kwargs.get("namespaces"),
                kwargs.get("strict_transient", True))


# ---------------------------------------------------------------------------------------------
# internals

@dataclass
class _Obj:
    """One resource after the envelope checks."""
    kind: str
    version: str
    name: str
    namespace: str
    labels: dict[str, str]
    spec: Fields
    raw: dict
    index: int

    @property
    def label(self) -> str:
        return obj_label(self.kind, self.name)


@dataclass
class _PoolInfo:
    pool: Pool
    # per spec.addresses entry: (index, text, cidrs); aggregation checks work per entry
    entries: list[tuple[int, str, list[IPNetwork]]]
    obj: _Obj


@dataclass
class _AdvInfo:
    adv: BGPAdvertisement
    obj_label: str
    field: str


@dataclass
class _Run:
    secrets: Mapping[str, Any]
    nodes: Optional[Mapping[str, Mapping[str, str]]]
    namespaces: Optional[Mapping[str, Mapping[str, str]]]
    strict_transient: bool
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, err: ConfigError) -> None:
        if err.transient and not self.strict_transient:
            return
        self.errors.append(err)

    def nodes_for(self, selectors: tuple[LabelSelector, ...]) -> Optional[frozenset[str]]:
        """Nodes matched by a selector list (empty list = all); None when nodes are unknown."""
        if self.nodes is None:
            return None
        if not selectors:
            return frozenset(self.nodes)
        return matching_names(selectors, dict(self.nodes))

    @staticmethod
    def share_a_node(a: Optional[frozenset[str]], b: Optional[frozenset[str]]) -> bool:
        if a is None or b is None:
            return True
        return bool(a & b)


def _run(resources: Any, secrets: Any, nodes: Any, namespaces: Any,
         strict_transient: bool) -> tuple[Config, list[ConfigError]]:
    run = _Run(secrets=secrets if isinstance(secrets, Mapping) else {},
               nodes=nodes if isinstance(nodes, Mapping) else None,
               namespaces=namespaces if isinstance(namespaces, Mapping) else None,
               strict_transient=strict_transient)
    if not isinstance(resources, (list, tuple)):
        run.errors.append(ConfigError("resources", "", f"must be a list of Kubernetes objects, "
                                                       f"got {type_name(resources)}"))
        return Config(), run.errors

    by_kind: dict[str, list[_Obj]] = {}
    seen_names: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(resources):
        try:
            o = _envelope(index, raw)
        except ConfigError as e:
            run.add(e)
            continue
        if o is None:
            continue
        # IPAddressPool and legacy AddressPool share one pool namespace; see _pools
        identity = (o.kind, o.name)
        if identity in seen_names:
            run.add(ConfigError(o.label, "metadata.name",
                                f"duplicate {o.kind} name {o.name!r} (resources[{seen_names[identity]}] "
                                f"and resources[{index}]); give each one a unique name"))
            continue
        seen_names[identity] = index
        by_kind.setdefault(o.kind, []).append(o)

    bfd_profiles = _bfd_profiles(run, by_kind.get("BFDProfile", []))
    communities = _communities(run, by_kind.get("Community", []))
    peers = _peers(run, by_kind.get("BGPPeer", []), bfd_profiles)
    pool_infos = _pools(run, by_kind.get("IPAddressPool", []), by_kind.get("AddressPool", []))
    pools = {name: info.pool for name, info in pool_infos.items()}
    l2_ads = _l2_advertisements(run, by_kind.get("L2Advertisement", []), pool_infos)
    bgp_ads = _bgp_advertisements(run, by_kind.get("BGPAdvertisement", []), pool_infos, communities)
    bgp_ads += _legacy_bgp_advertisements(run, by_kind.get("AddressPool", []), pool_infos, communities)
    l2_ads += _legacy_l2_advertisements(by_kind.get("AddressPool", []), pool_infos)
    _check_bgp_advertisements_per_pool(run, bgp_ads, pool_infos)
    _check_bfd_echo_with_ipv6(run, bgp_ads, pools, peers, bfd_profiles)
    for o in by_kind.get("MetalLB", []):
        _metallb_cr(run, o)

    config = Config(
        pools=pools,
        l2_advertisements=tuple(sorted(l2_ads, key=lambda a: a.name)),
        bgp_advertisements=tuple(sorted((a.adv for a in bgp_ads), key=lambda a: a.name)),
        peers=peers,
        bfd_profiles=bfd_profiles,
        communities={alias: c for alias, c in communities.items()},
        warnings=tuple(run.warnings),
    )
    return config, run.errors


def _envelope(index: int, raw: Any) -> Optional[_Obj]:
    """apiVersion/kind/metadata checks; None for objects that are not ours to read."""
    where = f"resources[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "", f"must be a Kubernetes object (a mapping), got {type_name(raw)}")
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise ConfigError(where, "apiVersion" if not isinstance(api_version, str) else "kind",
                          "every object needs string apiVersion and kind")
    group, _, version = api_version.rpartition("/")
    if group != GROUP:
        return None  # a Secret, a Service, ...: not configuration
    if kind not in SERVED_VERSIONS:
        raise ConfigError(f"{where} ({kind})", "kind", f"unknown metallb.io kind {kind!r}; known kinds: "
                          f"{', '.join(sorted(SERVED_VERSIONS))}")
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        raise ConfigError(f"{kind} {where}", "metadata", "is required and must be a mapping with a name")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind} {where}", "metadata.name", "is required and must be a non-empty string")
    label = obj_label(kind, name)
    if not is_object_name(name):
        raise ConfigError(label, "metadata.name",
                          f"invalid name {name!r}: Kubernetes accepts lower-case letters, digits, '-' and "
                          f"'.', starting and ending with a letter or digit, at most 253 characters "
                          f"(`metalxdp config convert` turns legacy names into such names)")
    if version not in SERVED_VERSIONS[kind]:
        raise ConfigError(label, "apiVersion", f"{api_version} is not served for {kind}; use "
                          + " or ".join(f"{GROUP}/{v}" for v in SERVED_VERSIONS[kind]))
    if kind in STATUS_KINDS:
        return None
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ConfigError(label, "metadata.namespace", f"must be a string, got {type_name(namespace)}")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in labels.items()):
        raise ConfigError(label, "metadata.labels", "must be a mapping of strings to strings")
    spec = Fields(label, "spec", raw.get("spec"))
    if kind == "BGPPeer" and version == "v1beta1":
        from .bgppeer_conversion import ConversionError, convert_bgppeer  # noqa: PLC0415 (import cycle)
        try:
            raw = convert_bgppeer(raw, "v1beta2")
        except ConversionError as e:
            raise ConfigError(label, "spec", f"cannot read this v1beta1 BGPPeer: {e}") from None
        spec = Fields(label, "spec", raw.get("spec"))
    return _Obj(kind, version, name, namespace or "", labels, spec, raw, index)


# --- BFD profiles ----------------------------------------------------------------------------

def _bfd_profiles(run: _Run, objs: list[_Obj]) -> dict[str, BFDProfile]:
    out: dict[str, BFDProfile] = {}
    for o in objs:
        try:
            out[o.name] = _bfd_profile(o)
        except ConfigError as e:
            run.add(e)
    return out


def _bfd_profile(o: _Obj) -> BFDProfile:
    s = o.spec
    return BFDProfile(
        name=o.name,
        receive_interval_ms=s.int("receiveInterval", 10, 60000, default=300),
        transmit_interval_ms=s.int("transmitInterval", 10, 60000, default=300),
        detect_multiplier=s.int("detectMultiplier", 2, 255, default=3),
        echo_interval_ms=s.int("echoInterval", 10, 60000, default=50),
        echo_mode=s.bool("echoMode"),
        passive_mode=s.bool("passiveMode"),
        minimum_ttl=s.int("minimumTtl", 1, 254, default=254),
    )


# --- communities -----------------------------------------------------------------------------

def _communities(run: _Run, objs: list[_Obj]) -> dict[str, Community]:
    aliases: dict[str, Community] = {}
    defined_in: dict[str, str] = {}
    for o in objs:
        try:
            entries = o.spec.list("communities")
        except ConfigError as e:
            run.add(e)
            continue
        for i, raw in enumerate(entries):
            path = f"spec.communities[{i}]"
            try:
                f = Fields(o.label, path, raw, required=True)
                name = f.str("name", required=True)
                value_text = f.str("value", required=True)
                try:
                    value = parse_community(value_text)
                except ValueError as e:
                    raise f.error("value", str(e)) from None
                if name in aliases:
                    raise f.error("name", f"duplicate definition of community alias {name!r} "
                                          f"(already defined in {defined_in[name]}); alias names must be "
                                          f"unique across all Community resources")
                aliases[name] = value
                defined_in[name] = o.label
            except ConfigError as e:
                run.add(e)
    return aliases


def _resolve_community(text: str, aliases: Mapping[str, Community], obj: str, path: str) -> Community:
    if text in aliases:
        return aliases[text]
    try:
        return parse_community(text)
    except CommunityFormatError as e:
        # maybe an alias whose Community resource is not created yet: MetalLB retries these
        raise ConfigError(obj, path, f"{e}; no Community resource defines an alias {text!r}",
                          transient=True) from None
    except ValueError as e:
        raise ConfigError(obj, path, str(e)) from None


# --- peers -----------------------------------------------------------------------------------

def _peers(run: _Run, objs: list[_Obj], bfd_profiles: Mapping[str, BFDProfile]) -> dict[str, BGPPeer]:
    parsed: list[tuple[_Obj, BGPPeer]] = []
    for o in objs:
        try:
            peer = _peer(run, o, bfd_profiles)
        except ConfigError as e:
            run.add(e)
            continue
        parsed.append((o, peer))

    accepted: list[tuple[_Obj, BGPPeer]] = []
    for o, peer in parsed:
        problem = _peer_conflict(run, o, peer, accepted)
        if problem:
            run.add(problem)
            continue
        accepted.append((o, peer))
    return {peer.name: peer for _, peer in accepted}


def _peer_conflict(run: _Run, o: _Obj, peer: BGPPeer, accepted: list[tuple[_Obj, BGPPeer]]) -> Optional[ConfigError]:
    """Rules between peers: one speaker per node means one AS, one router ID, one session per address."""
    # MetalLB's peersShareNode (v0.16): with no nodes known, or a cluster without nodes, every
    # two peers count as sharing one (the rules apply)
    known = bool(run.nodes)
    nodes = run.nodes_for(peer.node_selectors) if known else None
    for other_obj, other in accepted:
        if replace(other, name=peer.name) == peer:
            return ConfigError(o.label, "spec", f"peer {other.name} already exists with the same "
                                                f"settings; delete one of the two BGPPeers")
        if known and not run.share_a_node(nodes, run.nodes_for(other.node_selectors)):
            continue
        if other.my_asn != peer.my_asn:
            return ConfigError(o.label, "spec.myASN",
                               f"myASN {peer.my_asn} differs from myASN {other.my_asn} of BGPPeer/{other.name}: "
                               f"peers that can be active on the same node must use the same myASN "
                               f"(one BGP speaker per node; give each node its own AS with localASN, or "
                               f"nodeSelectors that do not overlap)")
        if other.router_id != peer.router_id:
            return ConfigError(o.label, "spec.routerID",
                               f"routerID {peer.router_id or '(unset)'} differs from routerID "
                               f"{other.router_id or '(unset)'} of BGPPeer/{other.name}: peers that can be "
                               f"active on the same node must use the same routerID (or leave it unset on all)")
        if other.identity == peer.identity:
            key, what = (("spec.interface", f"interface {peer.interface}") if peer.interface
                         else ("spec.peerAddress", f"peer address {peer.peer_address}"))
            return ConfigError(o.label, key,
                               f"{what} is already used by BGPPeer/{other.name} on "
                               f"the same nodes: one node has one session per address; merge the two peers "
                               f"or give them nodeSelectors that do not overlap")
    return None


def _peer(run: _Run, o: _Obj, bfd_profiles: Mapping[str, BFDProfile]) -> BGPPeer:
    s = o.spec
    for key, why in UNSUPPORTED_PEER_FIELDS.items():
        value = s.get(key)
        if value not in (None, "", False, 0):
            raise s.error(key, why)
    if s.bool("disableMP"):
        run.warnings.append(f"{o.label}: spec.disableMP has no effect: metalxdp always opens one "
                            f"session per address family and ignores it (the field is deprecated)")

    my_asn = s.int("myASN", 0, UINT32_MAX, required=True)
    if my_asn == 0:
        raise s.error("myASN", "missing local ASN: myASN must be 1-4294967295")
    peer_asn = s.int("peerASN", 0, UINT32_MAX, default=0)
    dynamic_asn = s.str("dynamicASN")
    if peer_asn == 0 and not dynamic_asn:
        raise s.error("peerASN", "missing peer ASN and dynamicASN: set peerASN to the router's AS number "
                                 "(1-4294967295), or dynamicASN to internal or external")
    if peer_asn != 0 and dynamic_asn:
        raise s.error("dynamicASN", "both peerASN and dynamicASN specified: keep one of the two")
    if dynamic_asn and dynamic_asn not in ("internal", "external"):
        raise s.error("dynamicASN", f"invalid dynamicASN {dynamic_asn!r}: must be internal or external")
    local_asn = s.int("localASN", 0, UINT32_MAX, default=0)
    ebgp_multihop = s.bool("ebgpMultiHop")
    if ebgp_multihop and peer_asn == my_asn:
        raise s.error("ebgpMultiHop", "invalid ebgpMultiHop for an iBGP peer (peerASN == myASN): "
                                      "remove it; it only applies to eBGP")

    address = _ip(s, "peerAddress", "BGPPeer address")
    interface = s.str("interface")
    if address is None and not interface:
        raise s.error("peerAddress", "peer has no Address or Interface specified: set spec.peerAddress, "
                                     "or spec.interface for BGP unnumbered")
    if address is not None and interface:
        raise s.error("interface", "peer has both Address and Interface specified: keep spec.peerAddress, "
                                   "or spec.interface for BGP unnumbered")
    source = _ip(s, "sourceAddress", "source IP")
    router_id = _ip(s, "routerID", "router ID")
    if router_id is not None and router_id.version != 4:
        raise s.error("routerID", f"invalid router ID {router_id}: a BGP router ID is a 32-bit "
                                  f"value written as an IPv4 address")

    port = s.int("peerPort", 1, 16384, default=179)
    hold, keepalive = _timers(s)
    connect_time = None
    if s.has("connectTime"):
        connect_time = _duration(s, "connectTime")
        if not 1 <= connect_time <= 65535:
            raise s.error("connectTime", f"connect time should be between 1 second and 65535 seconds, "
                                         f"got {s.get('connectTime')!r}")
        if connect_time != int(connect_time):
            raise s.error("connectTime", f"connect time should contain a whole number of seconds, "
                                         f"got {s.get('connectTime')!r}")

    node_selectors = parse_selector_list(o.label, s, "nodeSelectors")

    password = s.str("password")
    if any(c in password for c in "\r\n"):
        raise s.error("password", "password contains invalid characters (newline)")
    secret_ref = s.sub("passwordSecret")
    secret_name = secret_ref.str("name")
    password_secret = None
    if secret_name:
        if password:
            raise s.error("password", "can not have both password and passwordSecret set; keep one")
        secret_ns = secret_ref.str("namespace") or o.namespace or DEFAULT_NAMESPACE
        password_secret = f"{secret_ns}/{secret_name}"
        try:
            password = _secret_password(run.secrets, o, password_secret)
        except ConfigError as e:
            run.add(e)  # transient (missing) ones are dropped when strict_transient is False
            password = ""

    bfd_profile = s.str("bfdProfile")
    if interface and source is not None:
        run.warnings.append(f"{o.label}: spec.sourceAddress has no effect with spec.interface: an "
                            f"unnumbered session runs between the link-local addresses of {interface}")
    if interface and bfd_profile:
        run.warnings.append(f"{o.label}: spec.bfdProfile is not run on an unnumbered session (BFD over "
                            f"link-local is not supported yet); the BGP session runs without BFD")
    if bfd_profile and bfd_profile not in bfd_profiles:
        run.add(s.error("bfdProfile", f"peer {o.name} references BFDProfile {bfd_profile!r} which does "
                                      f"not exist (yet); create it or fix the name", transient=True))

    return BGPPeer(
        name=o.name, my_asn=my_asn, peer_asn=peer_asn, peer_address=address, source_address=source,
        peer_port=port, hold_time=hold, keepalive_time=keepalive, connect_time=connect_time,
        router_id=router_id, password=password, password_secret=password_secret,
        ebgp_multihop=ebgp_multihop, node_selectors=node_selectors,
        enable_graceful_restart=s.bool("enableGracefulRestart"), bfd_profile=bfd_profile,
        local_asn=local_asn, dynamic_asn=dynamic_asn, interface=interface,
        dual_stack=s.bool("dualStackAddressFamily"),
    )


def _ip(s: Fields, key: str, what: str) -> Optional[IPAddress]:
    """The address in ``key``, None when it is unset or empty; one that does not parse is an
    error "invalid <what>: ..." on ``key``."""
    if not s.str(key):
        return None
    try:
        return parse_ip(s.str(key))
    except ValueError as e:
        raise s.error(key, f"invalid {what}: {e}") from None


def _duration(s: Fields, key: str) -> float:
    try:
        return parse_duration(s.str(key))
    except ValueError as e:
        raise s.error(key, str(e)) from None


def _timers(s: Fields) -> tuple[float, float]:
    """MetalLB's parseTimers, plus its native default of 90s hold when neither is set."""
    hold = _duration(s, "holdTime") if s.has("holdTime") else None
    keepalive = _duration(s, "keepaliveTime") if s.has("keepaliveTime") else None
    if hold is None and keepalive is None:
        hold = DEFAULT_HOLD_TIME
    if keepalive is None:
        keepalive = hold / 3
    if hold is None:
        hold = keepalive * 3
    rounded = float(int(hold))  # BGP carries whole seconds
    if rounded != 0 and rounded < 3:
        raise s.error("holdTime", f"invalid hold time {s.get('holdTime') or s.get('keepaliveTime')!r}: "
                                  f"must be 0 or >=3s")
    if hold < 0:
        raise s.error("holdTime", "invalid hold time: must not be negative")
    if keepalive < 0:
        raise s.error("keepaliveTime", "invalid keepaliveTime: must not be negative")
    if keepalive > hold:
        raise s.error("keepaliveTime", f"invalid keepaliveTime {s.get('keepaliveTime')!r}: must be lower "
                                       f"than holdTime {s.get('holdTime') or '90s'!r}")
    return hold, keepalive


def _secret_password(secrets: Mapping[str, Any], o: _Obj, key: str) -> str:
    """Read the password of a kubernetes.io/basic-auth Secret, as MetalLB does."""
    path = "spec.passwordSecret"
    secret = secrets.get(key)
    if secret is None:
        raise ConfigError(o.label, path, f"secret {key} not found; create it (type kubernetes.io/basic-auth "
                                         f"with key 'password') in that namespace", transient=True)
    if not isinstance(secret, dict):
        raise ConfigError(o.label, path, f"secret {key} is not a Secret object")
    if secret.get("type") != "kubernetes.io/basic-auth":
        raise ConfigError(o.label, path, f"secret type mismatch on {key}: type kubernetes.io/basic-auth is "
                                         f"expected, got {secret.get('type')!r}")
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    if isinstance(string_data, dict) and isinstance(string_data.get("password"), str):
        password = string_data["password"]
    elif isinstance(data, dict) and "password" in data:
        try:
            password = base64.b64decode(str(data["password"]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ConfigError(o.label, path, f"password in secret {key} is not valid base64 UTF-8") from None
    else:
        raise ConfigError(o.label, path, f"password not specified in the secret {key}: add the key 'password'")
    if any(c in password for c in "\r\n"):
        raise ConfigError(o.label, path, f"password secret {key} contains invalid characters (newline)")
    return password


# --- pools -----------------------------------------------------------------------------------

def _pools(run: _Run, pool_objs: list[_Obj], legacy_objs: list[_Obj]) -> dict[str, _PoolInfo]:
    out: dict[str, _PoolInfo] = {}
    # MetalLB read legacy AddressPools alongside IPAddressPools; both share the pool namespace.
    parsed: list[tuple[_Obj, Optional[_PoolInfo], Optional[ConfigError]]] = []
    for o in sorted(pool_objs + legacy_objs, key=lambda x: x.index):
        try:
            parsed.append((o, _pool(run, o), None))
        except ConfigError as e:
            parsed.append((o, None, e))
    candidates = [cidr for _, info, _ in parsed if info for cidr in info.pool.cidrs]
    # a valid configuration is one sort; only one with an overlap needs the index (see overlaps)
    kept = None if overlaps.disjoint(candidates) else overlaps.DisjointNetworks(candidates)
    owner: dict[IPNetwork, str] = {}  # kept CIDR -> the pool that defined it first
    for o, info, error in parsed:
        if info is None:
            run.add(error)
            continue
        if info.pool.name in out:
            run.add(ConfigError(o.label, "metadata.name",
                                f"duplicate definition of pool {o.name!r} (also {out[o.name].obj.label}); "
                                f"pool names must be unique across IPAddressPools and AddressPools"))
            continue
        overlap = _pool_overlap(o, info, kept, owner) if kept is not None else None
        if overlap:
            run.add(overlap)
            continue
        out[o.name] = info
    return out


def _pool_overlap(o: _Obj, info: _PoolInfo, kept: overlaps.DisjointNetworks,
                  owner: dict[IPNetwork, str]) -> Optional[ConfigError]:
    """The first of this pool's CIDRs that overlaps a CIDR kept from an earlier pool, naming the
    earliest such CIDR. The CIDRs before it are kept even though the pool is refused, as MetalLB
    (and metalxdp before the index) did: a later pool overlapping them names this pool."""
    for i, _text, cidrs in info.entries:
        for cidr in cidrs:
            existing = kept.first_overlap(cidr)
            if existing is not None:
                return ConfigError(o.label, f"spec.addresses[{i}]",
                                   f"CIDR {cidr} in pool {o.name!r} overlaps with already defined "
                                   f"CIDR {existing} (pool {owner[existing]!r}); address ranges of pools must "
                                   f"not overlap")
            kept.add(cidr)
            owner.setdefault(cidr, o.name)
    return None


def _pool(run: _Run, o: _Obj) -> _PoolInfo:
    s = o.spec
    legacy = o.kind == "AddressPool"
    if legacy:
        protocol = s.str("protocol", required=True)
        if protocol not in ("layer2", "bgp"):
            raise s.error("protocol", f"must be layer2 or bgp, got {protocol!r}")
        if s.list("bgpAdvertisements") and protocol != "bgp":
            raise s.error("bgpAdvertisements", "bgpAdvertisements is only allowed with protocol: bgp; "
                                               "set protocol: bgp or remove bgpAdvertisements")
    addresses = s.str_list("addresses")
    if not addresses:
        raise s.error("addresses", "pool has no prefixes defined: list at least one CIDR or range")
    entries: list[tuple[int, str, list[IPNetwork]]] = []
    cidrs: list[IPNetwork] = []
    unparsable = None
    for i, text in enumerate(addresses):
        try:
            nets = parse_pool_address(text)
        except ValueError as e:
            unparsable = ConfigError(o.label, f"spec.addresses[{i}]", str(e))
            break
        entries.append((i, text, nets))
        cidrs += nets
    # a pool's own entries must not overlap each other either (MetalLB checks all CIDRs); an
    # overlap before the first unparsable entry is reported first, as an entry-by-entry scan would
    if not overlaps.disjoint(cidrs):
        seen = overlaps.DisjointNetworks(cidrs)
        for i, _text, nets in entries:
            for n in nets:
                prev = seen.first_overlap(n)
                if prev is not None:
                    raise ConfigError(o.label, f"spec.addresses[{i}]",
                                      f"CIDR {n} in pool {o.name!r} overlaps with already defined CIDR {prev} "
                                      f"of the same pool; address ranges must not overlap")
                seen.add(n)
    if unparsable is not None:
        raise unparsable

    allocation = None
    if not legacy and s.has("serviceAllocation"):
        allocation = _service_allocation(run, o, s.sub("serviceAllocation"))
    pool = Pool(
        name=o.name, cidrs=tuple(cidrs), auto_assign=s.bool("autoAssign", default=True),
        avoid_buggy_ips=s.bool("avoidBuggyIPs"), service_allocation=allocation,
        labels=tuple(sorted(o.labels.items())),
    )
    return _PoolInfo(pool, entries, o)


def _service_allocation(run: _Run, o: _Obj, a: Fields) -> ServiceAllocation:
    priority = a.int("priority", -(2 ** 31), 2 ** 31 - 1, default=0)
    namespaces = a.str_list("namespaces")
    reject_duplicates(o.label, a.at("namespaces"), namespaces, "namespace")
    ns_selectors = parse_selector_list(o.label, a, "namespaceSelectors")
    svc_selectors = parse_selector_list(o.label, a, "serviceSelectors")
    names = set(namespaces)
    if ns_selectors and run.namespaces is not None:
        # as MetalLB: namespaces whose labels match are added to the pool's namespace set
        names |= matching_names(ns_selectors, dict(run.namespaces))
    return ServiceAllocation(priority=priority, namespaces=frozenset(names),
                             namespace_selectors=ns_selectors, service_selectors=svc_selectors)


# --- advertisements --------------------------------------------------------------------------

def _selected_pools(o: _Obj, s: Fields, pool_infos: Mapping[str, _PoolInfo]) -> frozenset[str]:
    """ipAddressPools + ipAddressPoolSelectors; neither = every pool. Unknown names are ignored."""
    names = s.str_list("ipAddressPools")
    reject_duplicates(o.label, s.at("ipAddressPools"), names, "ipAddressPools entry")
    selectors = parse_selector_list(o.label, s, "ipAddressPoolSelectors")
    if not names and not selectors:
        return frozenset(pool_infos)
    chosen = {n for n in names if n in pool_infos}
    chosen |= matching_names(selectors, {n: dict(i.pool.labels) for n, i in pool_infos.items()})
    return frozenset(chosen)


def _l2_advertisements(run: _Run, objs: list[_Obj], pool_infos: Mapping[str, _PoolInfo]) -> list[L2Advertisement]:
    out = []
    for o in objs:
        s = o.spec
        try:
            pools = _selected_pools(o, s, pool_infos)
            node_selectors = parse_selector_list(o.label, s, "nodeSelectors")
            service_selectors = parse_selector_list(o.label, s, "serviceSelectors")
            interfaces = s.str_list("interfaces")
            preferred = []
            for i, raw in enumerate(s.list("preferredNodeSelectors")):
                p = Fields(o.label, f"spec.preferredNodeSelectors[{i}]", raw, required=True)
                weight = p.int("weight", 1, 100, required=True)
                if not p.has("preference"):
                    raise p.error("preference", "is required: the label selector of the preferred nodes")
                preferred.append((weight, parse_selector(o.label, p.at("preference"), p.get("preference"))))
        except ConfigError as e:
            run.add(e)
            continue
        out.append(L2Advertisement(name=o.name, pools=pools, node_selectors=node_selectors,
                                   interfaces=tuple(interfaces), service_selectors=service_selectors,
                                   preferred_node_selectors=tuple(preferred)))
    return out


def _legacy_l2_advertisements(objs: list[_Obj], pool_infos: Mapping[str, _PoolInfo]) -> list[L2Advertisement]:
    """A legacy ``protocol: layer2`` AddressPool is announced from every node, every interface."""
    return [L2Advertisement(name=o.name, pools=frozenset({o.name}))
            for o in objs if o.name in pool_infos and pool_infos[o.name].obj is o
            and o.spec.get("protocol") == "layer2"]


def _communities_of(o: _Obj, f: Fields, aliases: Mapping[str, Community], run: _Run) -> tuple[Community, ...]:
    texts = f.str_list("communities")
    reject_duplicates(o.label, f.at("communities"), texts, "community")
    out: set[Community] = set()
    for i, text in enumerate(texts):
        try:
            out.add(_resolve_community(text, aliases, o.label, f"{f.at('communities')}[{i}]"))
        except ConfigError as e:
            if not e.transient:
                raise
            run.add(e)
    return tuple(sorted(out, key=community_sort_key))


def _bgp_advertisements(run: _Run, objs: list[_Obj], pool_infos: Mapping[str, _PoolInfo],
                        aliases: Mapping[str, Community]) -> list[_AdvInfo]:
    out: list[_AdvInfo] = []
    seen_specs: dict[tuple, str] = {}
    for o in objs:
        s = o.spec
        try:
            pools = _selected_pools(o, s, pool_infos)
            peers = s.str_list("peers")
            reject_duplicates(o.label, "spec.peers", peers, "peer")
            node_selectors = parse_selector_list(o.label, s, "nodeSelectors")
            service_selectors = parse_selector_list(o.label, s, "serviceSelectors")
            agg = s.int("aggregationLength", 1, 32, default=32)
            agg6 = s.int("aggregationLengthV6", 0, 128, default=128)
            if service_selectors and agg != 32:
                raise s.error("aggregationLength", "serviceSelectors and aggregationLength are mutually "
                                                   "exclusive: remove one of them")
            if service_selectors and agg6 != 128:
                raise s.error("aggregationLengthV6", "serviceSelectors and aggregationLengthV6 are mutually "
                                                     "exclusive: remove one of them")
            local_pref = s.int("localPref", 0, UINT32_MAX, default=0)
            communities = _communities_of(o, s, aliases, run)
        except ConfigError as e:
            run.add(e)
            continue
        identity = (tuple(s.str_list("ipAddressPools")), tuple(s.list("ipAddressPoolSelectors") and
                    parse_selector_list(o.label, s, "ipAddressPoolSelectors")), agg, agg6, local_pref,
                    tuple(s.str_list("communities")), tuple(peers), node_selectors, service_selectors)
        if identity in seen_specs:
            run.add(ConfigError(o.label, "spec", f"duplicate definition of bgpadvertisements: the spec is "
                                                 f"identical to BGPAdvertisement/{seen_specs[identity]}; delete one"))
            continue
        seen_specs[identity] = o.name
        adv = BGPAdvertisement(name=o.name, pools=pools, aggregation_length=agg, aggregation_length_v6=agg6,
                               local_pref=local_pref, communities=communities, node_selectors=node_selectors,
                               peers=frozenset(peers), service_selectors=service_selectors)
        out.append(_AdvInfo(adv, o.label, "spec"))
    return out


def legacy_bgp_advertisement_names(pool_name: str, count: int) -> list[str]:
    """Names given to the BGPAdvertisements a legacy bgp AddressPool turns into (also by convert)."""
    if count <= 1:
        return [pool_name]
    return [f"{pool_name}-{i + 1}" for i in range(count)]


def _legacy_bgp_advertisements(run: _Run, objs: list[_Obj], pool_infos: Mapping[str, _PoolInfo],
                               aliases: Mapping[str, Community]) -> list[_AdvInfo]:
    """A ``protocol: bgp`` AddressPool: one BGPAdvertisement per bgpAdvertisements entry (or one default)."""
    out: list[_AdvInfo] = []
    for o in objs:
        if o.name not in pool_infos or pool_infos[o.name].obj is not o or o.spec.get("protocol") != "bgp":
            continue
        entries = o.spec.list("bgpAdvertisements") or [{}]
        names = legacy_bgp_advertisement_names(o.name, len(entries))
        for i, raw in enumerate(entries):
            try:
                f = Fields(o.label, f"spec.bgpAdvertisements[{i}]", raw, required=True)
                adv = BGPAdvertisement(
                    name=names[i], pools=frozenset({o.name}),
                    aggregation_length=f.int("aggregationLength", 1, 32, default=32),
                    aggregation_length_v6=f.int("aggregationLengthV6", 0, 128, default=128),
                    local_pref=f.int("localPref", 0, UINT32_MAX, default=0),
                    communities=_communities_of(o, f, aliases, run))
            except ConfigError as e:
                run.add(e)
                continue
            out.append(_AdvInfo(adv, o.label, f.path))
    return out


def _check_bfd_echo_with_ipv6(run: _Run, ads: list["_AdvInfo"], pools: Mapping[str, Pool],
                              peers: Mapping[str, BGPPeer], profiles: Mapping[str, BFDProfile]) -> None:
    """MetalLB's validateConfig rule: a pool with IPv6 addresses must not be advertised to a
    peer whose BFD profile has echo mode (echo is IPv4 only)."""
    def echo(peer: BGPPeer) -> bool:
        prof = profiles.get(peer.bfd_profile) if peer.bfd_profile else None
        return bool(prof and prof.echo_mode)
    for info in sorted(ads, key=lambda i: i.adv.name):
        adv = info.adv
        for pool_name in sorted(adv.pools):
            pool = pools.get(pool_name)
            if pool is None or 6 not in pool.families:
                continue
            targets = sorted(adv.peers) if adv.peers else sorted(peers)
            bad = [n for n in targets if n in peers and echo(peers[n])]
            if bad:
                run.add(ConfigError(info.obj_label, f"{info.field}.peers" if adv.peers else info.field,
                                    f"pool {pool_name} has bgpadvertisement {adv.name} which references "
                                    f"peer {bad[0]} which has bfd echo enabled, which is not possible "
                                    f"(BFD echo is IPv4 only; use a profile without echoMode for "
                                    f"this peer, or advertise the IPv6 pool to other peers)"))
                return


def _check_bgp_advertisements_per_pool(run: _Run, ads: list[_AdvInfo], pool_infos: Mapping[str, _PoolInfo]) -> None:
    """Aggregation must not be wider than a pool's prefixes; localPref must agree across ads."""
    attached: dict[str, list[_AdvInfo]] = {}
    for info in ads:
        adv = info.adv
        problem = None
        for pool_name in sorted(adv.pools):
            pinfo = pool_infos[pool_name]
            for i, text, cidrs in pinfo.entries:
                if not cidrs:
                    continue
                v6 = cidrs[0].version == 6
                length = adv.aggregation_length_v6 if v6 else adv.aggregation_length
                lowest = min(c.prefixlen for c in cidrs)
                if length < lowest:
                    key = "aggregationLengthV6" if v6 else "aggregationLength"
                    problem = ConfigError(info.obj_label, f"{info.field}.{key}",
                                          f"invalid aggregation length {length}: prefix {lowest} in pool "
                                          f"{pool_name!r} (addresses {text!r}) is more specific than the "
                                          f"aggregation length; use {lowest} or more")
                    break
            if problem:
                break
            if not adv.service_selectors:
                for other in attached.get(pool_name, []):
                    if other.adv.service_selectors:
                        continue
                    if not _compatible_local_pref(run, adv, other.adv, pinfo.pool):
                        problem = ConfigError(info.obj_label, f"{info.field}.localPref",
                                              f"invalid local preference {adv.local_pref}: local preference "
                                              f"{other.adv.local_pref} was already set by {other.obj_label} for "
                                              f"the same prefixes of pool {pool_name!r}; use the same localPref, "
                                              f"different aggregation lengths, peers or nodes")
                        break
            if problem:
                break
        if problem:
            run.add(problem)
            continue
        for pool_name in adv.pools:
            attached.setdefault(pool_name, []).append(info)


def _compatible_local_pref(run: _Run, a: BGPAdvertisement, b: BGPAdvertisement, pool: Pool) -> bool:
    """MetalLB's BGPAdvertisementsHaveCompatibleLocalPref."""
    if a.local_pref == b.local_pref:
        return True
    families = pool.families
    has4, has6 = 4 in families, 6 in families
    if a.aggregation_length != b.aggregation_length and not has6:
        return True
    if a.aggregation_length_v6 != b.aggregation_length_v6 and not has4:
        return True
    if a.aggregation_length != b.aggregation_length and a.aggregation_length_v6 != b.aggregation_length_v6:
        return True
    if a.peers and b.peers and not (a.peers & b.peers):
        return True
    return not run.share_a_node(run.nodes_for(a.node_selectors), run.nodes_for(b.node_selectors))


# --- the operator's MetalLB resource ---------------------------------------------------------

BGP_BACKENDS = ("native", "frr", "frr-k8s", "frr-k8s-external")
LOG_LEVELS = ("all", "debug", "info", "warn", "error", "none")


def _metallb_cr(run: _Run, o: _Obj) -> None:
    """The operator webhook's checks on a MetalLB resource (deployment settings, not config)."""
    s = o.spec
    try:
        level = s.str("logLevel")
        if level and level not in LOG_LEVELS:
            raise s.error("logLevel", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        # bgpType: the deprecated name of bgpBackend; both are accepted and both ignored
        for key in ("bgpBackend", "bgpType"):
            backend = s.str(key)
            if backend and backend not in BGP_BACKENDS:
                raise s.error(key, f"must be one of {', '.join(BGP_BACKENDS)}, got {backend!r}")
            if backend:
                run.warnings.append(f"{o.label}: spec.{key} {backend!r} is ignored: metalxdp always speaks "
                                    f"BGP through ExaBGP")
        s.str_map("nodeSelector")
        s.str_map("controllerNodeSelector")
        s.str("loadBalancerClass")
        for key in ("speakerTolerations", "controllerTolerations"):
            for i, raw in enumerate(s.list(key)):
                t = Fields(o.label, f"spec.{key}[{i}]", raw, required=True)
                effect = t.str("effect")
                if t.has("tolerationSeconds"):
                    t.int("tolerationSeconds")
                    if effect != "NoExecute":
                        raise t.error("effect", "tolerationSeconds is only valid with effect NoExecute")
                operator = t.str("operator")
                if operator and operator not in ("Exists", "Equal"):
                    raise t.error("operator", f"must be Exists or Equal, got {operator!r}")
                if operator == "Exists" and t.str("value"):
                    raise t.error("value", "must be empty when operator is Exists")
        for key in ("controllerConfig", "speakerConfig"):
            c = s.sub(key)
            c.str("priorityClassName")
            c.str("runtimeClassName")
            c.str_map("annotations")
            affinity = c.sub("affinity")
            for kind in ("podAffinity", "podAntiAffinity", "nodeAffinity"):
                terms = affinity.sub(kind).list("preferredDuringSchedulingIgnoredDuringExecution")
                for i, raw in enumerate(terms):
                    Fields(o.label, f"{affinity.at(kind)}.preferredDuringSchedulingIgnoredDuringExecution[{i}]",
                           raw, required=True).int("weight", 1, 100, required=True)
        frrk8s = s.sub("frrk8sConfig")
        for i, text in enumerate(frrk8s.str_list("alwaysBlock")):
            try:
                ipaddress.ip_network(text, strict=False)
                if "/" not in text:
                    raise ValueError
            except ValueError:
                raise ConfigError(o.label, f"spec.frrk8sConfig.alwaysBlock[{i}]",
                                  f"invalid CIDR {text!r}") from None
    except ConfigError as e:
        run.add(e)
