"""Table tests for metalxdp.service, the one Service adapter: a Service object (as the API
server returns it) -> ServiceSpec, status IPs, the LoadBalancer filter, annotations."""
from __future__ import annotations

import ipaddress

import pytest

from controller.allocator import AllocationError, Allocator
from metalxdp.config.types import Pool
from metalxdp.service import (POOL_ANNOTATION, PREFER_DUAL_STACK, SHARED_IP_ANNOTATION, SINGLE_STACK,
                              ServiceSpecError, SpecWarning, annotation, ingress_ips, service_spec_from_k8s,
                              status_ips_from_k8s, wants_load_balancer)

ip = ipaddress.ip_address


def pools(*ps: Pool) -> dict[str, Pool]:
    return {p.name: p for p in ps}


def pool(name: str, *cidrs: str, **kw) -> Pool:
    return Pool(name=name, cidrs=tuple(ipaddress.ip_network(c) for c in cidrs), **kw)


def k8s_svc(name="web", ns="shop", annotations=None, labels=None, **spec) -> dict:
    base = {"type": "LoadBalancer", "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP"}]}
    base.update(spec)
    return {"metadata": {"name": name, "namespace": ns, "annotations": annotations or {},
                         "labels": labels or {}},
            "spec": base}


DUAL = dict(clusterIPs=["2001:db8:96::10", "198.19.0.10"], ipFamilies=["IPv6", "IPv4"])

TRANSLATIONS = [
    # (description, service, expected fields | ServiceSpecError reason, warning reasons)
    ("defaults", k8s_svc(),
     dict(key="shop/web", namespace="shop", requested_ips=(), pool_name=None, sharing_key=None,
          ports=frozenset({("TCP", 80)}), backend_key="", ip_families=(4,),
          ip_family_policy=SINGLE_STACK, cluster_ips=1), []),
    ("loadBalancerIPs annotation, spaces trimmed",
     k8s_svc(annotations={"metallb.io/loadBalancerIPs": "198.18.0.1, 2001:db8::1"},
             ipFamilyPolicy="RequireDualStack", **DUAL),
     dict(requested_ips=(ip("198.18.0.1"), ip("2001:db8::1")), ip_families=(6, 4), cluster_ips=2), []),
    ("deprecated loadBalancerIPs annotation warns",
     k8s_svc(annotations={"metallb.universe.tf/loadBalancerIPs": "198.18.0.1"}),
     dict(requested_ips=(ip("198.18.0.1"),)), ["deprecatedAnnotation"]),
    ("stable annotation wins over deprecated, no warning",
     k8s_svc(annotations={"metallb.io/address-pool": "new",
                          "metallb.universe.tf/address-pool": "old"}),
     dict(pool_name="new"), []),
    ("spec.loadBalancerIP", k8s_svc(loadBalancerIP="198.18.0.7"),
     dict(requested_ips=(ip("198.18.0.7"),)), []),
    ("loadBalancerIP and the annotation conflict",
     k8s_svc(annotations={"metallb.io/loadBalancerIPs": "198.18.0.1"}, loadBalancerIP="198.18.0.2"),
     "LoadBalancerFailed", []),
    ("invalid annotation IP", k8s_svc(annotations={"metallb.io/loadBalancerIPs": "198.18.0.300"}),
     "LoadBalancerFailed", []),
    ("three IPs", k8s_svc(annotations={"metallb.io/loadBalancerIPs": "198.18.0.1,2001:db8::1,198.18.0.2"}),
     "LoadBalancerFailed", []),
    ("two IPv4", k8s_svc(annotations={"metallb.io/loadBalancerIPs": "198.18.0.1,198.18.0.2"}),
     "LoadBalancerFailed", []),
    ("invalid loadBalancerIP", k8s_svc(loadBalancerIP="nope"), "LoadBalancerFailed", []),
    ("pool and sharing annotations, deprecated sharing key warns",
     k8s_svc(annotations={"metallb.io/address-pool": "gold",
                          "metallb.universe.tf/allow-shared-ip": "team"}),
     dict(pool_name="gold", sharing_key="team"), ["deprecatedAnnotation"]),
    ("empty annotations mean unset",
     k8s_svc(annotations={"metallb.io/address-pool": "", "metallb.io/allow-shared-ip": "",
                          "metallb.io/loadBalancerIPs": ""}),
     dict(pool_name=None, sharing_key=None, requested_ips=()), []),
    ("ETP Local: backend key is the sorted selector",
     k8s_svc(externalTrafficPolicy="Local", selector={"tier": "fe", "app": "web"}),
     dict(backend_key="app=web,tier=fe"), []),
    ("ETP Cluster: empty backend key",
     k8s_svc(externalTrafficPolicy="Cluster", selector={"app": "web"}), dict(backend_key=""), []),
    ("ports with default protocol",
     k8s_svc(ports=[{"port": 53, "protocol": "UDP"}, {"port": 53}, {"port": 443, "protocol": "TCP"}]),
     dict(ports=frozenset({("UDP", 53), ("TCP", 53), ("TCP", 443)})), []),
    ("families come from clusterIPs (PreferDualStack on a dual cluster)",
     k8s_svc(ipFamilyPolicy="PreferDualStack", **DUAL),
     dict(ip_families=(6, 4), ip_family_policy=PREFER_DUAL_STACK, cluster_ips=2), []),
    ("PreferDualStack on a single-stack cluster: one family",
     k8s_svc(ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4"]),
     dict(ip_families=(4,), cluster_ips=1), []),
    ("RequireDualStack with one clusterIP",
     k8s_svc(ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]),
     "not enough clusterips", []),
    ("no clusterIPs: fall back to spec.ipFamilies",
     k8s_svc(clusterIP=None, clusterIPs=None, ipFamilies=["IPv6"]),
     dict(ip_families=(6,), cluster_ips=0), []),
    ("unparsable clusterIP", k8s_svc(clusterIPs=["bogus"]), "noclusterIPsIPFamily", []),
    ("IPv4-mapped IPv6 is IPv4 (as Go's net.IP)",
     k8s_svc(annotations={"metallb.io/loadBalancerIPs": "::ffff:198.18.0.1"}),
     dict(requested_ips=(ip("198.18.0.1"),)), []),
    ("labels and namespace labels carried", k8s_svc(labels={"app": "web"}),
     dict(labels={"app": "web"}, namespace_labels={"env": "prod"}), []),
]


@pytest.mark.parametrize("desc,obj,want,warns", TRANSLATIONS, ids=[t[0] for t in TRANSLATIONS])
def test_service_spec_from_k8s(desc, obj, want, warns):
    if isinstance(want, str):
        with pytest.raises(ServiceSpecError) as e:
            service_spec_from_k8s(obj, {"env": "prod"})
        assert e.value.reason == want
        return
    spec, warnings = service_spec_from_k8s(obj, {"env": "prod"})
    for field_name, value in want.items():
        assert getattr(spec, field_name) == value, field_name
    assert [w.reason for w in warnings] == warns
    assert all(isinstance(w, SpecWarning) and w.message for w in warnings)


def test_translated_spec_allocates():
    """The translation and the allocator agree end to end (families, requested IPs)."""
    a = Allocator(pools(pool("dual", "198.18.0.0/30", "2001:db8::/126")))
    spec, _ = service_spec_from_k8s(k8s_svc(ipFamilyPolicy="RequireDualStack", **DUAL))
    assert a.allocate(spec).ips == (ip("198.18.0.0"), ip("2001:db8::"))
    spec, _ = service_spec_from_k8s(k8s_svc(name="one", annotations={
        "metallb.io/loadBalancerIPs": "198.18.0.3"}, ipFamilyPolicy="PreferDualStack", **DUAL))
    with pytest.raises(AllocationError) as e:      # one IP requested for a dual service
        a.allocate(spec)
    assert e.value.code == "familyMismatch"


def test_wants_load_balancer_and_status_ips():
    assert wants_load_balancer(k8s_svc())
    assert not wants_load_balancer(k8s_svc(type="ClusterIP"))
    assert not wants_load_balancer(k8s_svc(loadBalancerClass="other"))
    assert wants_load_balancer(k8s_svc(loadBalancerClass="metalxdp"), lb_class="metalxdp")
    assert not wants_load_balancer(k8s_svc(), lb_class="metalxdp")

    obj = k8s_svc()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "198.18.0.1"}, {"ip": "2001:db8::1"}]}}
    assert status_ips_from_k8s(obj) == (ip("198.18.0.1"), ip("2001:db8::1"))
    assert status_ips_from_k8s(k8s_svc()) == ()
    obj["status"]["loadBalancer"]["ingress"] = [{"ip": "198.18.0.1"}, {"ip": "198.18.0.2"}]
    with pytest.raises(ServiceSpecError) as e:
        status_ips_from_k8s(obj)
    assert e.value.reason == "nolbIPsIPFamily"


def test_status_ips_not_strict_skips_what_does_not_parse():
    """The agent announces what the status says: a bad entry does not hide the good ones."""
    obj = k8s_svc()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "198.18.0.1"}, {"ip": "bogus"}, {"hostname": "x"},
                                                  {"ip": "198.18.0.2"}]}}
    assert ingress_ips(obj) == ["198.18.0.1", "bogus", "198.18.0.2"]
    assert status_ips_from_k8s(obj, strict=False) == (ip("198.18.0.1"), ip("198.18.0.2"))
    with pytest.raises(ServiceSpecError):
        status_ips_from_k8s(obj)


def test_annotation_reads_full_names():
    obj = k8s_svc(annotations={POOL_ANNOTATION: "gold", SHARED_IP_ANNOTATION: "team"})
    assert (annotation(obj, POOL_ANNOTATION), annotation(obj, SHARED_IP_ANNOTATION)) == ("gold", "team")
    assert annotation(k8s_svc(), SHARED_IP_ANNOTATION, "") == ""
    assert annotation({}, POOL_ANNOTATION) is None
