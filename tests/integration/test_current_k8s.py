"""What only a current Kubernetes can show (issue 14), end to end against the pinned release
(``scripts/kube/VERSION``): the server and kubectl versions, ``spec.loadBalancerClass`` and
``--lb-class``, ``status.loadBalancer.ingress[].ipMode``, EndpointSlice v1 conditions
(terminating but serving), strict field validation of metallb.io objects, and the install
with the matching kubectl.

One lab (real API server + controller-manager, controller, three agents with XDP) for the
module; each test makes and removes its own objects.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from metalxdp.lab import tools as lt
from metalxdp.lab.cluster import Lab, kubectl, running_lab
from metalxdp.lab.spec import NAMESPACE
from metalxdp.rig.apiserver import start_control_plane
from metalxdp.rig.procs import wait_for

from .ctlhelpers import lb_service, start_controller

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PINNED = (REPO / "scripts" / "kube" / "VERSION").read_text().strip()
OTHER_CLASS = "example.com/other-lb"
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab("k8s", tmp_path_factory.mktemp("k8slab")) as lab:
        yield lab


def svc_json(lab: Lab, name: str, ns: str = "default") -> dict:
    return get_svc(lab.kubeconfig(), name, ns)


def get_svc(kubeconfig: str, name: str, ns: str = "default") -> dict:
    return json.loads(kubectl(kubeconfig, "get", "svc", name, "-n", ns, "-o", "json").stdout)


def announced_anywhere(lab: Lab, service: str) -> list[dict]:
    return [e for n in NODES for e in lt.agent_log_events(lab, n, "serviceAnnounced", service=service)]


def ingress(obj: dict) -> list[dict]:
    return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


@contextlib.contextmanager
def applied(lab: Lab, *objs: dict):
    kc = lab.kubeconfig()
    try:
        for o in objs:
            kubectl(kc, "apply", "-f", "-", input_=json.dumps(o))
        yield
    finally:
        for o in reversed(objs):
            kubectl(kc, "delete", o["kind"], o["metadata"]["name"], "-n", o["metadata"].get("namespace", "default"),
                    "--ignore-not-found", "--wait=false", check=False)


# ---- versions ------------------------------------------------------------------------------
def test_server_and_kubectl_are_the_pinned_release(lab):
    v = json.loads(kubectl(lab.kubeconfig(), "version", "-o", "json").stdout)
    assert v["serverVersion"]["gitVersion"] == PINNED, v
    assert v["clientVersion"]["gitVersion"] == PINNED, v
    assert v["serverVersion"]["gitTreeState"] == "clean"


# ---- ipMode ----------------------------------------------------------------------------------
def test_ingress_ip_mode_is_vip(lab):
    """The ingress carries ipMode VIP, as MetalLB writes it (traffic arrives for the IP itself,
    so kube-proxy may short-cut in-cluster clients). Since 1.30 the server also defaults a
    missing ipMode to VIP (a status written without it reads back with it, checked below), so
    this fails only when the controller writes another mode or the server drops the field; the
    controller writes it explicitly for servers whose LoadBalancerIPMode gate is off."""
    name = "ipm-" + secrets.token_hex(2)
    lt.apply_service(lab, name)
    try:
        (ip,) = lt.wait_service_ips(lab, name)
        assert ingress(svc_json(lab, name)) == [{"ip": ip, "ipMode": "VIP"}]
        kubectl(lab.kubeconfig(), "patch", "svc", name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}))
        assert ingress(svc_json(lab, name)) == [{"ip": ip, "ipMode": "VIP"}]   # the server's default
    finally:
        kubectl(lab.kubeconfig(), "delete", "svc", name, "--ignore-not-found", check=False)


# ---- loadBalancerClass -----------------------------------------------------------------------
def test_service_of_another_class_is_untouched_by_controller_and_agents(lab):
    """The lab runs without --lb-class: a Service with a loadBalancerClass belongs to another
    implementation. Its status (written here, as that implementation would) is neither cleared
    by our controller nor announced by our agents, although the IP is in our L2 pool."""
    name = "other-" + secrets.token_hex(2)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "LoadBalancer", "loadBalancerClass": OTHER_CLASS, "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "name": "http"}]}}
    ours = "cls-" + secrets.token_hex(2)
    with applied(lab, svc):
        assert svc_json(lab, name)["spec"]["loadBalancerClass"] == OTHER_CLASS   # kept by the server
        foreign_ip = "192.0.2.219"                                               # inside lab-l2
        kubectl(lab.kubeconfig(), "patch", "svc", name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": foreign_ip}]}}}))
        # a Service of our (empty) class created after it is handled: the controller is running
        lab.add_backend(ours, "node1", {"app": ours})
        lt.apply_service(lab, ours, selector={"app": ours})
        try:
            (ip,) = lt.wait_service_ips(lab, ours)
            wait_for(f"a node to answer for our {ip}", lambda: lt.announcing_node(lab, ip) is not None, 30)
            assert [i.get("ip") for i in ingress(svc_json(lab, name))] == [foreign_ip]
            assert lt.announcing_nodes(lab, foreign_ip, count=2) == set(), "an agent announced a foreign class"
            assert not announced_anywhere(lab, f"default/{name}")
        finally:
            kubectl(lab.kubeconfig(), "delete", "svc", ours, "--ignore-not-found", check=False)
            lt.remove_backend(lab, ours)


def test_controller_with_lb_class_handles_only_its_class(apiserver, crds_installed, tmp_path):
    """A controller run with --lb-class (as the MetalLB CR's loadBalancerClass renders it) on
    the session's API server: it gives IPs to Services of its class only."""
    kc = str(apiserver.kubeconfig)
    cls = "metalxdp.io/test-" + secrets.token_hex(2)
    cfg = "cls-" + secrets.token_hex(3)
    ns = "lbc-" + secrets.token_hex(3)
    kubectl(kc, "create", "namespace", cfg)
    kubectl(kc, "create", "namespace", ns)
    try:
        kubectl(kc, "apply", "-f", "-", input_=json.dumps({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "cls", "namespace": cfg}, "spec": {"addresses": ["198.51.100.64/30"]}}))
        proc = start_controller(kc, cfg, tmp_path / "logs", name="ctl-class", extra=("--lb-class", cls))
        try:
            mine = lb_service("mine")
            mine["spec"]["loadBalancerClass"] = cls
            other = lb_service("other")
            other["spec"]["loadBalancerClass"] = OTHER_CLASS
            # the other class first: once ours has its IP, the controller has been through both
            for s in (other, mine):
                s["metadata"]["namespace"] = ns
                kubectl(kc, "apply", "-f", "-", input_=json.dumps(s))
            wait_for("the classed Service gets an IP from the class's pool", lambda: [
                i.get("ip") for i in ingress(get_svc(kc, "mine", ns))] == ["198.51.100.64"], 30, proc=proc)
            # the other class: no IP, no event
            assert ingress(get_svc(kc, "other", ns)) == []
            events = json.loads(kubectl(kc, "get", "events", "-n", ns, "-o", "json").stdout)["items"]
            assert not [e for e in events if e["involvedObject"]["name"] == "other"], events
            # the other implementation (MetalLB, say) allocates: it writes the same pool annotation
            # name we write. Found running MetalLB beside us: we used to strip it (and MetalLB
            # retried on conflicts, ~1 s per Service); now a foreign class is never written
            kubectl(kc, "annotate", "svc", "other", "-n", ns, "metallb.io/ip-allocated-from-pool=theirs")
            kubectl(kc, "patch", "svc", "other", "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.77"}]}}}))
            mine2 = lb_service("mine2")
            mine2["spec"]["loadBalancerClass"] = cls
            mine2["metadata"]["namespace"] = ns
            kubectl(kc, "apply", "-f", "-", input_=json.dumps(mine2))
            wait_for("a second Service of our class gets an IP", lambda: ingress(get_svc(kc, "mine2", ns)), 30,
                     proc=proc)
            time.sleep(2)
            theirs = get_svc(kc, "other", ns)
            assert theirs["metadata"]["annotations"].get("metallb.io/ip-allocated-from-pool") == "theirs"
            assert [i.get("ip") for i in ingress(theirs)] == ["203.0.113.77"]
        finally:
            proc.stop()
    finally:
        kubectl(kc, "delete", "namespace", ns, cfg, "--wait=false", check=False)


# ---- EndpointSlice v1 conditions -------------------------------------------------------------
def slice_for(svc: str, node: str, *, ready: bool, serving: bool, terminating: bool) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-manual", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc,
                                    "endpointslice.kubernetes.io/managed-by": "metalxdp-test"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["198.18.5.10"], "nodeName": node,
                           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}]}


def test_etp_local_terminating_but_serving_endpoint_keeps_the_announcement(lab):
    """A Service without a selector and an EndpointSlice written as kube-controller-manager
    writes one for a terminating pod: ready false, serving true, terminating true on node2. As
    in MetalLB, such an endpoint still serves: node2 keeps announcing (ETP Local). Once it stops
    serving, nobody announces."""
    name = "term-" + secrets.token_hex(2)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "name": "http"}]}}
    with applied(lab, svc, slice_for(name, "node2", ready=True, serving=True, terminating=False)):
        (ip,) = lt.wait_service_ips(lab, name)
        wait_for("node2 announces (ready endpoint)", lambda: lt.announcing_nodes(lab, ip) == {"node2"}, 30)
        kubectl(lab.kubeconfig(), "apply", "-f", "-", input_=json.dumps(
            slice_for(name, "node2", ready=False, serving=True, terminating=True)))
        got = json.loads(kubectl(lab.kubeconfig(), "get", "endpointslice", f"{name}-manual", "-o", "json").stdout)
        assert got["endpoints"][0]["conditions"] == {"ready": False, "serving": True, "terminating": True}
        # still announced, checked for 3 s (agents react to a slice change well within that)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            assert lt.announcing_nodes(lab, ip) == {"node2"}
        kubectl(lab.kubeconfig(), "apply", "-f", "-", input_=json.dumps(
            slice_for(name, "node2", ready=False, serving=False, terminating=True)))
        wait_for("nobody announces once the endpoint stops serving",
                 lambda: lt.announcing_nodes(lab, ip) == set(), 30)


# ---- strict field validation -----------------------------------------------------------------
def test_unknown_field_in_a_metallb_object_is_refused_the_way_kubectl_shows_it(lab, tmp_path):
    bad = tmp_path / "pool.yaml"
    name = "strict-" + secrets.token_hex(2)
    bad.write_text(json.dumps({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                               "metadata": {"name": name, "namespace": NAMESPACE},
                               "spec": {"addresses": ["198.51.100.96/30"], "autoAsign": False}}))
    kc = lab.kubeconfig()
    r = kubectl(kc, "apply", "-f", str(bad), check=False)
    assert r.returncode != 0
    assert 'strict decoding error: unknown field "spec.autoAsign"' in r.stderr, r.stderr
    assert kubectl(kc, "get", "ipaddresspool", name, "-n", NAMESPACE, check=False).returncode != 0
    # --validate=warn: created, the unknown field pruned, and the warning printed
    try:
        r = kubectl(kc, "apply", "--validate=warn", "-f", str(bad))
        assert 'Warning: unknown field "spec.autoAsign"' in r.stderr, r.stderr
        spec = json.loads(kubectl(kc, "get", "ipaddresspool", name, "-n", NAMESPACE, "-o", "json").stdout)["spec"]
        assert "autoAsign" not in spec
    finally:
        kubectl(kc, "delete", "ipaddresspool", name, "-n", NAMESPACE, "--ignore-not-found", check=False)


def test_kubectl_apply_k_deploy_with_the_matching_kubectl(tmp_path):
    """`kubectl apply -k deploy/` as a user runs it, with the kubectl of the server's minor, on
    an empty cluster of its own: a server-side dry run, then for real, then delete -k."""
    client = json.loads(subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True,
                                       text=True, check=True).stdout)["clientVersion"]["gitVersion"]
    assert client == PINNED
    cp = start_control_plane(tmp_path / "cp", controller_manager=False)
    try:
        kc = str(cp.kubeconfig)
        deploy = str(REPO / "deploy")
        # a server-side dry run cannot create the namespace its other objects go to: as a user
        # would, create it first (deploy/namespace.yaml, the same object apply -k creates)
        kubectl(kc, "apply", "-f", str(REPO / "deploy" / "namespace.yaml"))
        r = kubectl(kc, "apply", "--dry-run=server", "-k", deploy)
        lines = r.stdout.strip().splitlines()
        assert lines and all("(server dry run)" in ln for ln in lines), r.stdout
        assert "daemonset.apps/speaker created (server dry run)" in lines, r.stdout
        r = kubectl(kc, "apply", "-k", deploy)
        assert "daemonset.apps/speaker created" in r.stdout, r.stdout
        assert "deployment.apps/controller created" in r.stdout, r.stdout
        assert "customresourcedefinition.apiextensions.k8s.io/ipaddresspools.metallb.io created" in r.stdout
        # a second apply changes nothing
        again = kubectl(kc, "apply", "-k", deploy).stdout.strip().splitlines()
        assert again and all(ln.endswith(" unchanged") or ln.endswith(" configured") for ln in again), again
        assert not [ln for ln in again if ln.endswith(" configured") and ("daemonset" in ln or "deployment" in ln)]
        kubectl(kc, "delete", "-k", deploy, "--wait=false")
    finally:
        cp.stop()
