"""The one Service adapter: a Service object (the API server's JSON as a dict) as the rest of
metalxdp reads it. Pure: no Kubernetes client, no I/O.

The controller and the agent both read Services through here, so a Service means the same to
both (which annotations count, which ingress addresses it holds, whether it is ours at all):

* ``wants_load_balancer(service, lb_class)``: MetalLB's filter (type LoadBalancer, our class);
* ``service_spec_from_k8s(service, namespace_labels)``: the ``ServiceSpec`` the allocator works
  on (requested IPs, pool annotation, sharing key, ports, backend key and IP families), with
  MetalLB's event reasons on errors and ``deprecatedAnnotation`` warnings;
* ``ingress_ips(service)`` / ``status_ips_from_k8s(service)``: the addresses in
  status.loadBalancer.ingress, as written or checked;
* ``annotation(service, name)``: one annotation's value (names: the constants below).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

from metalxdp.config.types import IPAddress

__all__ = [
    "SINGLE_STACK", "PREFER_DUAL_STACK", "REQUIRE_DUAL_STACK", "POOL_ANNOTATION", "SHARED_IP_ANNOTATION",
    "ServiceSpec", "SpecWarning", "ServiceSpecError", "parse_ip", "annotation", "wants_load_balancer",
    "service_spec_from_k8s", "ingress_ips", "status_ips_from_k8s",
]

SINGLE_STACK = "SingleStack"
PREFER_DUAL_STACK = "PreferDualStack"
REQUIRE_DUAL_STACK = "RequireDualStack"
_POLICIES = (SINGLE_STACK, PREFER_DUAL_STACK, REQUIRE_DUAL_STACK)

ANNOTATION_PREFIX = "metallb.io/"
DEPRECATED_ANNOTATION_PREFIX = "metallb.universe.tf/"
ANNOTATION_ADDRESS_POOL = "address-pool"
ANNOTATION_LOADBALANCER_IPS = "loadBalancerIPs"
ANNOTATION_ALLOW_SHARED_IP = "allow-shared-ip"
# Full names.
POOL_ANNOTATION = ANNOTATION_PREFIX + "ip-allocated-from-pool"      # written by the controller
SHARED_IP_ANNOTATION = ANNOTATION_PREFIX + ANNOTATION_ALLOW_SHARED_IP

# The apiserver's names for IP families in spec.ipFamilies.
_FAMILY_NAMES = {"IPv4": 4, "IPv6": 6}


@dataclass(frozen=True)
class ServiceSpec:
    """What the allocator needs to know about one Service.

    ip_families: the service's families in order, as the apiserver resolved them (its
    clusterIPs): one entry for a single-stack service, two (primary first) for a dual-stack one.
    backend_key: "" for externalTrafficPolicy Cluster; for Local the selector as "k=v,k2=v2"
    (sorted): services sharing an IP must land on the same endpoints when traffic stays local.
    labels / namespace_labels take no part in equality hashing (dicts are unhashable).
    """
    key: str                                            # "namespace/name"
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    namespace_labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    requested_ips: tuple[IPAddress, ...] = ()           # metallb.io/loadBalancerIPs or spec.loadBalancerIP
    pool_name: Optional[str] = None                     # metallb.io/address-pool
    sharing_key: Optional[str] = None                   # metallb.io/allow-shared-ip
    ports: frozenset[tuple[str, int]] = frozenset()     # (protocol, port)
    backend_key: str = ""
    ip_families: tuple[int, ...] = (4,)
    ip_family_policy: str = SINGLE_STACK
    cluster_ips: int = 0                                # how many clusterIPs; 0 = not known

    def __post_init__(self):
        if not self.namespace and "/" in self.key:
            object.__setattr__(self, "namespace", self.key.split("/", 1)[0])
        # Normalise the "unset" spellings so comparisons are exact.
        if self.pool_name == "":
            object.__setattr__(self, "pool_name", None)
        if self.sharing_key == "":
            object.__setattr__(self, "sharing_key", None)
        if self.ip_family_policy not in _POLICIES:
            raise ValueError(f"unknown ipFamilyPolicy {self.ip_family_policy!r}")


@dataclass(frozen=True)
class SpecWarning:
    """Something accepted but worth a Warning event (reason is MetalLB's event reason)."""
    reason: str
    message: str


class ServiceSpecError(ValueError):
    """The Service cannot be allocated as written. ``reason`` is MetalLB's event reason
    (``LoadBalancerFailed``, ``nolbIPsIPFamily``, ``noclusterIPsIPFamily``,
    ``not enough clusterips``, ``noClusterIPs``)."""

    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message
        super().__init__(f"{reason}: {message}")


def wants_load_balancer(service: Mapping, lb_class: Optional[str] = None) -> bool:
    """MetalLB's filter: type LoadBalancer, and loadBalancerClass equal to ours (unset when we
    run without --lb-class). Other services must have their state cleared."""
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    return spec.get("loadBalancerClass") == lb_class


def annotation(service: Mapping, name: str, default: Optional[str] = None) -> Optional[str]:
    """The value of annotation ``name`` (a full name, e.g. ``POOL_ANNOTATION``), as written."""
    return ((service.get("metadata") or {}).get("annotations") or {}).get(name, default)


def _stable_or_deprecated(annotations: Mapping[str, str], name: str, warnings: list) -> Optional[str]:
    """The stable annotation wins when present (even empty, as MetalLB's valueForAnnotation);
    otherwise the deprecated metallb.universe.tf one, with a warning."""
    stable = ANNOTATION_PREFIX + name
    if stable in annotations:
        return annotations[stable]
    old = DEPRECATED_ANNOTATION_PREFIX + name
    if old in annotations:
        warnings.append(SpecWarning(
            "deprecatedAnnotation",
            f"annotation {old} is deprecated, use {stable} instead"))
        return annotations[old]
    return None


def parse_ip(text: str) -> IPAddress:
    ip = ipaddress.ip_address(text.strip())
    # An IPv4-mapped IPv6 address is an IPv4 address to Go's net.IP (To4() != nil).
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def service_spec_from_k8s(service: Mapping,
                          namespace_labels: Optional[Mapping[str, str]] = None,
                          ) -> tuple[ServiceSpec, list[SpecWarning]]:
    """Build a ServiceSpec from a Service object (the apiserver's JSON as a dict).

    namespace_labels: the labels of the Service's Namespace (for namespaceSelectors); the
    Service object does not carry them. Raises ServiceSpecError with MetalLB's event reason.
    """
    warnings: list[SpecWarning] = []
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    annotations = meta.get("annotations") or {}
    namespace = meta.get("namespace") or "default"
    key = f"{namespace}/{meta.get('name', '')}"

    # Requested addresses: the annotation, or spec.loadBalancerIP (deprecated upstream), never both.
    ips_text = _stable_or_deprecated(annotations, ANNOTATION_LOADBALANCER_IPS, warnings) or ""
    lb_ip_text = spec.get("loadBalancerIP") or ""
    requested: tuple[IPAddress, ...] = ()
    if ips_text and lb_ip_text:
        raise ServiceSpecError(
            "LoadBalancerFailed",
            f"service can not have both {ANNOTATION_PREFIX}{ANNOTATION_LOADBALANCER_IPS} "
            "and svc.Spec.LoadBalancerIP")
    if ips_text:
        try:
            requested = tuple(parse_ip(s) for s in ips_text.split(","))
        except ValueError:
            raise ServiceSpecError(
                "LoadBalancerFailed",
                f"invalid {ANNOTATION_PREFIX}{ANNOTATION_LOADBALANCER_IPS}: {ips_text!r}") from None
        if len(requested) > 2:
            raise ServiceSpecError("LoadBalancerFailed",
                                   f"more than two addresses requested: {ips_text!r}")
        if len(requested) == 2 and requested[0].version == requested[1].version:
            raise ServiceSpecError("LoadBalancerFailed",
                                   f"requested addresses have the same family: {ips_text!r}")
    elif lb_ip_text:
        try:
            requested = (parse_ip(lb_ip_text),)
        except ValueError:
            raise ServiceSpecError("LoadBalancerFailed",
                                   f"invalid spec.loadBalancerIP {lb_ip_text!r}") from None

    pool_name = _stable_or_deprecated(annotations, ANNOTATION_ADDRESS_POOL, warnings) or None
    sharing_key = _stable_or_deprecated(annotations, ANNOTATION_ALLOW_SHARED_IP, warnings) or None

    ports = frozenset((p.get("protocol") or "TCP", int(p["port"]))
                      for p in spec.get("ports") or () if "port" in p)

    # Sharing with ETP=Local is only safe when both services select the same pods (k8salloc.BackendKey).
    backend_key = ""
    if spec.get("externalTrafficPolicy") == "Local":
        selector = spec.get("selector") or {}
        backend_key = ",".join(f"{k}={selector[k]}" for k in sorted(selector))

    policy = spec.get("ipFamilyPolicy") or SINGLE_STACK
    if policy not in _POLICIES:
        raise ServiceSpecError("LoadBalancerFailed", f"unknown ipFamilyPolicy {policy!r}")

    # The families come from the clusterIPs, as MetalLB's ipfamily.ForService: they are what
    # the apiserver actually granted (PreferDualStack on a single-stack cluster gets one).
    cluster_texts = [c for c in (spec.get("clusterIPs") or
                                 ([spec["clusterIP"]] if spec.get("clusterIP") else []))
                     if c and c != "None"]
    if cluster_texts:
        try:
            cluster_ips = [parse_ip(c) for c in cluster_texts]
        except ValueError:
            raise ServiceSpecError("noclusterIPsIPFamily",
                                   f"failed to parse clusterIPs {cluster_texts!r}") from None
        if len(cluster_ips) > 2 or (len(cluster_ips) == 2 and
                                    cluster_ips[0].version == cluster_ips[1].version):
            raise ServiceSpecError("noclusterIPsIPFamily",
                                   f"clusterIPs {cluster_texts!r} are not one IP per family")
        families = tuple(ip.version for ip in cluster_ips)
    else:
        # Deviation: MetalLB refuses a service without clusterIPs (noClusterIPs). The apiserver
        # always sets them for LoadBalancer services; we fall back to spec.ipFamilies so that
        # hand-written objects still work.
        try:
            families = tuple(_FAMILY_NAMES[f] for f in spec.get("ipFamilies") or ("IPv4",))
        except KeyError:
            raise ServiceSpecError("noclusterIPsIPFamily",
                                   f"unknown ipFamilies {spec.get('ipFamilies')!r}") from None
        if policy == SINGLE_STACK:
            families = families[:1]
    if policy == REQUIRE_DUAL_STACK and len(families) < 2:
        raise ServiceSpecError("not enough clusterips",
                               f"ipFamilyPolicy RequireDualStack needs two clusterIPs, got {cluster_texts!r}")

    # A requested family that does not match the service's is the allocator's to report
    # (AllocationFailed, code familyMismatch), as in MetalLB's allocateIPs.
    return ServiceSpec(
        key=key,
        namespace=namespace,
        labels=dict(meta.get("labels") or {}),
        namespace_labels=dict(namespace_labels or {}),
        requested_ips=requested,
        pool_name=pool_name,
        sharing_key=sharing_key,
        ports=ports,
        backend_key=backend_key,
        ip_families=families,
        ip_family_policy=policy,
        cluster_ips=len(cluster_texts),
    ), warnings


def ingress_ips(service: Mapping) -> list[str]:
    """The addresses in status.loadBalancer.ingress as written, in order (entries without an
    ``ip`` skipped)."""
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    return [i["ip"] for i in ingress if i.get("ip")]


def status_ips_from_k8s(service: Mapping, strict: bool = True) -> tuple[IPAddress, ...]:
    """The addresses in status.loadBalancer.ingress, parsed.

    strict (the controller, learning what to ``assign`` after a restart): raises
    ServiceSpecError("nolbIPsIPFamily") when they are not one valid address per family; the
    controller then clears the status and allocates afresh, as MetalLB does. Not strict (the
    agent, announcing what the status says): addresses that do not parse are skipped."""
    texts = ingress_ips(service)
    if not strict:
        out = []
        for t in texts:
            try:
                out.append(parse_ip(t))
            except ValueError:
                pass
        return tuple(out)
    try:
        ips = tuple(parse_ip(t) for t in texts)
    except ValueError:
        raise ServiceSpecError("nolbIPsIPFamily", f"invalid ingress IPs {texts!r}") from None
    if len(ips) > 2 or (len(ips) == 2 and ips[0].version == ips[1].version):
        raise ServiceSpecError("nolbIPsIPFamily",
                               f"ingress IPs {texts!r} are not one address per family")
    return ips
