"""The test rig itself: real API server, real namespaces, real FRR, and clean teardown."""
from __future__ import annotations

import subprocess
import time

import pytest

from metalxdp.rig.frr import Neighbor, RouterSpec, render_frr_conf
from metalxdp.rig.netns import Topology, check_lab_address, list_namespaces

pytestmark = pytest.mark.integration


def test_apiserver_crd_custom_object_status_and_service_status(apiserver, kube_api, k8s_namespace):
    from metalxdp.kube import client, dynamic_client
    ext = client.ApiextensionsV1Api(kube_api)
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.rig.example.com"},
        "spec": {"group": "rig.example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                   "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}}}]}})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                res = dynamic_client(kube_api).resources.get(api_version="rig.example.com/v1", kind="Widget")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        res.create(body={"apiVersion": "rig.example.com/v1", "kind": "Widget",
                         "metadata": {"name": "w1"}, "spec": {"size": 3}}, namespace=k8s_namespace)
        # status is a subresource: a main-resource write must not change it, a status write must
        res.status.patch(body={"status": {"ok": True}}, name="w1", namespace=k8s_namespace,
                         content_type="application/merge-patch+json")
        got = res.get(name="w1", namespace=k8s_namespace)
        assert got.spec.size == 3 and got.status.ok is True
    finally:
        ext.delete_custom_resource_definition("widgets.rig.example.com")

    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(k8s_namespace, {
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})
    core.patch_namespaced_service_status("lb", k8s_namespace, {
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.200"}]}}})
    svc = core.read_namespaced_service("lb", k8s_namespace)
    assert svc.status.load_balancer.ingress[0].ip == "192.0.2.200"


def test_topology_pings_v4_and_v6(topology):
    a = topology.add_host("a", ipv4=["192.0.2.11/24"], ipv6=["2001:db8:0:1::11/64"])
    b = topology.add_host("b", ipv4=["192.0.2.12/24"], ipv6=["2001:db8:0:1::12/64"])
    assert a.run(["ping", "-c1", "-W3", b.ip4], check=False).returncode == 0
    assert a.run(["ping", "-c1", "-W3", b.ip6], check=False).returncode == 0
    topology.set_link("b", up=False)
    assert a.run(["ping", "-c1", "-W1", b.ip4], check=False).returncode != 0


def test_lab_addresses_are_documentation_ranges_only():
    check_lab_address("203.0.113.9/24")
    check_lab_address("2001:db8::1/64")
    for bad in ("10.0.0.1/8", "192.168.1.1/24", "8.8.8.8/32", "fd00::1/64"):
        with pytest.raises(ValueError):
            check_lab_address(bad)


def test_frr_fixture_shows_bgp_summary(topology, frr_router):
    node = topology.add_host("node1", ipv4=["192.0.2.11/24"], ipv6=["2001:db8:0:1::11/64"])
    conf = render_frr_conf(RouterSpec(64512, "192.0.2.1", (Neighbor(node.ip4, 64513),)))
    frr_router.start(conf)
    summary = frr_router.json("show bgp summary")
    ipv4 = summary["ipv4Unicast"]
    assert ipv4["as"] == 64512 and ipv4["routerId"] == "192.0.2.1"
    assert node.ip4 in ipv4["peers"]
    assert ipv4["peers"][node.ip4]["state"] != "Established"   # nobody speaks BGP on node1 yet


def _processes_in(ns_names):
    out = []
    for ns in ns_names:
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        out += r.stdout.split()
    return out


def test_failing_test_body_leaves_nothing_behind():
    """A test body that raises half way still leaves no namespace or process behind."""
    t = Topology()
    created = []
    with pytest.raises(RuntimeError, match="deliberate"):
        with t:
            h = t.add_host("x", ipv4=["192.0.2.50/24"])
            created = list(t.namespaces)
            h.popen(["sleep", "300"])
            assert _processes_in(created)          # a process really runs in there
            raise RuntimeError("deliberate failure in the test body")
    assert created and not set(created) & set(list_namespaces())
    assert not _processes_in(created)


def test_frr_with_bfd_profiles_keeps_router_bgp(topology, frr_router):
    """The bfd block goes to bfdd alone: bgpd must still get its whole `router bgp`."""
    from metalxdp.rig.frr import BFDTimers
    node = topology.add_host("node1", ipv4=["192.0.2.11/24"])
    frr_router.start(render_frr_conf(RouterSpec(64512, "192.0.2.1", (Neighbor(node.ip4, 64513, bfd_profile="fast"),),
                                                bfd_profiles=(BFDTimers("fast", 100, 100, 3),))))
    assert node.ip4 in frr_router.json("show bgp summary")["ipv4Unicast"]["peers"]
    assert "profile fast" in frr_router.vtysh("show running-config")
