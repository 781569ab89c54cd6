"""agent.wake_filter: which watch events wake the agent's reconcile pass (tables, no I/O)."""
from __future__ import annotations

import pytest

from agent.wake_filter import WakeFilter


def svc(name="web", ns="default", type_="LoadBalancer", ips=(), lb_class=None, etp="Cluster"):
    spec = {"type": type_, "externalTrafficPolicy": etp}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def eps(service="web", ns="default", ready=True):
    return {"metadata": {"name": f"{service}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": ["198.51.100.7"], "conditions": {"ready": ready}}]}


def node(name="node1", labels=None, ip="192.0.2.11", unavailable=False, heartbeat="t0"):
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat},
                                      {"type": "NetworkUnavailable",
                                       "status": "True" if unavailable else "False"}]}}


IP = ("203.0.113.5",)

# (events in order, whether each wakes the pass)
SERVICE_CASES = {
    "created without an IP, then given one, then deleted": (
        [("ADDED", svc()), ("MODIFIED", svc(ips=IP)), ("DELETED", svc(ips=IP))],
        [False, True, True]),
    "an IP taken away is seen": (
        [("ADDED", svc(ips=IP)), ("MODIFIED", svc())], [True, True]),
    "a change while it has its IP": (
        [("ADDED", svc(ips=IP)), ("MODIFIED", svc(ips=IP, etp="Local"))], [True, True]),
    "a ClusterIP Service never": (
        [("ADDED", svc(type_="ClusterIP")), ("MODIFIED", svc(type_="ClusterIP")),
         ("DELETED", svc(type_="ClusterIP"))], [False, False, False]),
    "another loadBalancerClass never, even with an IP": (
        [("ADDED", svc(ips=IP, lb_class="example.com/other")),
         ("DELETED", svc(ips=IP, lb_class="example.com/other"))], [False, False]),
    "a Service that stops being a LoadBalancer is seen once": (
        [("ADDED", svc(ips=IP)), ("MODIFIED", svc(type_="ClusterIP", ips=IP)),
         ("MODIFIED", svc(type_="ClusterIP"))], [True, True, False]),
    "deleted before it ever had an IP": (
        [("ADDED", svc()), ("DELETED", svc())], [False, False]),
}


@pytest.mark.parametrize("events, wakes", SERVICE_CASES.values(), ids=SERVICE_CASES.keys())
def test_service_events(events, wakes):
    f = WakeFilter()
    assert [f.service(t, o) for t, o in events] == wakes


def test_our_load_balancer_class_counts():
    f = WakeFilter(lb_class="example.com/ours")
    assert f.service("ADDED", svc(ips=IP, lb_class="example.com/ours"))
    assert not f.service("ADDED", svc(name="plain", ips=IP))


def test_slices_wake_only_for_a_service_the_pass_looks_at():
    f = WakeFilter()
    assert not f.endpoint_slice("ADDED", eps())                 # its Service has no IP yet
    f.service("ADDED", svc())
    assert not f.endpoint_slice("MODIFIED", eps(ready=False))
    f.service("MODIFIED", svc(ips=IP))
    assert f.endpoint_slice("MODIFIED", eps())
    assert not f.endpoint_slice("MODIFIED", eps(ns="other"))    # same name, other namespace
    assert not f.endpoint_slice("ADDED", {"metadata": {"name": "x", "namespace": "default"}})
    f.service("DELETED", svc(ips=IP))
    assert not f.endpoint_slice("DELETED", eps())


NODE_CASES = {
    "a heartbeat changes nothing": ([node(), node(heartbeat="t1")], [True, False]),
    "a label": ([node(), node(labels={"zone": "a"})], [True, True]),
    "the exclusion label": ([node(), node(labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""})],
                            [True, True]),
    "NetworkUnavailable": ([node(), node(unavailable=True)], [True, True]),
    "an InternalIP": ([node(), node(ip="192.0.2.12")], [True, True]),
    "two nodes are apart": ([node("node1"), node("node2"), node("node1", heartbeat="t2")], [True, True, False]),
}


@pytest.mark.parametrize("objs, wakes", NODE_CASES.values(), ids=NODE_CASES.keys())
def test_node_events(objs, wakes):
    f = WakeFilter()
    assert [f.node("ADDED" if i == 0 else "MODIFIED", o) for i, o in enumerate(objs)] == wakes


def test_a_deleted_node_wakes_and_is_new_again_after():
    f = WakeFilter()
    f.node("ADDED", node())
    assert f.node("DELETED", node())
    assert f.node("ADDED", node())
