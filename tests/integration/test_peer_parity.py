"""Allocation and Event parity with MetalLB's own controller (issue 16, item 3).

The real MetalLB controller (the release pinned in scripts/metallb/VERSION, built from Go
modules by scripts/metallb/build.sh, cached) and the real metalxdp controller run at once
against the session's API server. Each has its own configuration namespace holding the *same*
IPAddressPools, and its own loadBalancerClass, so each sees only its own Services. The same
sequence of Services (plain, pool annotation, requested IPs, a requested IP the pool avoids,
a manual pool, dual stack, IPv6, IP sharing with and without a port conflict, a namespace-scoped
pool with a priority, an IP freed and reused, an unknown pool, a taken IP, an exhausted pool) is
created for both, step by step; after each step both must have settled, and then:

* each Service got the same IPs from both (or none from both), and
* the same Event reasons were emitted for it (IPAllocated, AllocationFailed, ...).

A difference fails the test with the step, both answers and both Event messages. What is not
compared is listed in docs/compatibility.md (Event *messages* are MetalLB's words only where
they carry the same facts; with several autoAssign pools and no priority MetalLB's choice is
random, so the sequence has one such pool).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalxdp.kube import client
from metalxdp.rig.procs import start, wait_for
from metalxdp.service import ingress_ips

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMPLS = {   # name: (configuration namespace, loadBalancerClass)
    "mx": ("parity-mx", "parity.example/metalxdp"),
    "mlb": ("parity-mlb", "parity.example/metallb"),
}
SVC_NS, TEAM_NS = "parity-apps", "parity-team"

POOLS = {
    # spread over two ranges, the first a range with a hole
    "a": {"addresses": ["198.18.10.0/30", "198.18.10.8/29"]},
    # a /24 whose .0 and .255 are avoided. Not autoAssign: with two autoAssign pools and no
    # priority, MetalLB tries them in Go's map order, i.e. at random (`range a.pools.ByName` in
    # its allocator); metalxdp by name. That difference is documented, not compared.
    "b": {"addresses": ["198.18.12.0/24"], "avoidBuggyIPs": True, "autoAssign": False},
    "manual": {"addresses": ["198.18.13.0/29"], "autoAssign": False},
    "ds": {"addresses": ["198.18.14.0/30", "2001:db8:14::/126"], "autoAssign": False},
    "v6": {"addresses": ["2001:db8:16::-2001:db8:16::3"], "autoAssign": False},
    "team": {"addresses": ["198.18.15.0/30"],
             "serviceAllocation": {"priority": 10, "namespaces": [TEAM_NS]}},
    "tiny": {"addresses": ["198.18.17.5/32"], "autoAssign": False},
}

POOL = "metallb.io/address-pool"
IPS = "metallb.io/loadBalancerIPs"
SHARE = "metallb.io/allow-shared-ip"

# (step name, namespace, annotations, spec additions, port); ("delete", name) frees a Service
STEPS = [
    ("plain-1", SVC_NS, {}, {}, 80),
    ("plain-2", SVC_NS, {}, {}, 80),
    ("pool-b-1", SVC_NS, {POOL: "b"}, {}, 80),
    ("pool-b-2", SVC_NS, {POOL: "b"}, {}, 80),
    ("want-buggy", SVC_NS, {IPS: "198.18.12.255"}, {}, 80),
    ("want-9", SVC_NS, {IPS: "198.18.10.9"}, {}, 80),
    ("want-9-again", SVC_NS, {IPS: "198.18.10.9"}, {}, 80),
    ("manual", SVC_NS, {POOL: "manual"}, {}, 80),
    ("dual", SVC_NS, {POOL: "ds"}, {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}, 80),
    ("v6", SVC_NS, {POOL: "v6"}, {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}, 80),
    ("share-80", SVC_NS, {POOL: "manual", SHARE: "k"}, {}, 80),
    ("share-81", SVC_NS, {POOL: "manual", SHARE: "k"}, {}, 81),
    ("share-80-clash", SVC_NS, {POOL: "manual", SHARE: "k"}, {}, 80),
    ("team-1", TEAM_NS, {}, {}, 80),
    ("delete", "plain-1"),
    ("plain-3", SVC_NS, {}, {}, 80),
    ("no-such-pool", SVC_NS, {POOL: "nosuch"}, {}, 80),
    ("tiny-1", SVC_NS, {POOL: "tiny"}, {}, 80),
    ("tiny-2", SVC_NS, {POOL: "tiny"}, {}, 80),
]


@pytest.fixture(scope="module")
def metallb_bin() -> Path:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "metallb" / "build.sh")], capture_output=True, text=True)
    assert r.returncode == 0, f"MetalLB could not be built: {r.stderr[-2000:]}"
    return Path(r.stdout.strip().splitlines()[-1])


def _svc(impl: str, step: tuple) -> dict:
    name, _ns, ann, spec, port = step
    return {"metadata": {"name": f"{impl}-{name}", "annotations": dict(ann)},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": IMPLS[impl][1],
                     "allocateLoadBalancerNodePorts": False, "ports": [{"port": port}], **spec}}


def _reasons(core, ns: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the controller's Events about Service ``name``: the ones whose
    source is ``metallb-controller`` (both name themselves so; the API server's own repair
    Events, e.g. ClusterIPNotAllocated, are not the controllers' and are left out)."""
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return sorted({(e.reason, e.message) for e in evs if e.involved_object.kind == "Service"
                   and "metallb-controller" in ((e.source and e.source.component) or "",
                                                e.reporting_component or "")})


def test_same_ips_and_event_reasons_as_metallbs_controller(apiserver, kube_api, crds_installed, metallb_bin,
                                                          tmp_path):
    core = client.CoreV1Api(kube_api)
    co = client.CustomObjectsApi(kube_api)
    kc = str(apiserver.kubeconfig)
    for ns in [SVC_NS, TEAM_NS] + [v[0] for v in IMPLS.values()]:
        core.create_namespace({"metadata": {"name": ns}})
    procs = {}
    try:
        for impl, (cfg_ns, _cls) in IMPLS.items():
            for name, spec in POOLS.items():
                co.create_namespaced_custom_object("metallb.io", "v1beta1", cfg_ns, "ipaddresspools", {
                    "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                    "metadata": {"name": name}, "spec": spec})
        procs["mx"] = start("parity-metalxdp-controller", [
            sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc, "--namespace", IMPLS["mx"][0],
            "--lb-class", IMPLS["mx"][1], "--webhook-mode", "disabled", "--metrics-port", "0"], tmp_path)
        procs["mlb"] = start("parity-metallb-controller", [
            str(metallb_bin / "controller"), "--kubeconfig", kc, "--namespace", IMPLS["mlb"][0],
            "--lb-class", IMPLS["mlb"][1], "--webhook-mode", "disabled", "--disable-cert-rotation",
            "--port", "17473", "--log-level", "info"], tmp_path)

        allocated = 0
        live: dict[str, str] = {}           # step name -> namespace, of the Services that exist
        diffs = []
        for k, step in enumerate(STEPS):
            if step[0] == "delete":
                ns = live.pop(step[1])
                for impl in IMPLS:
                    core.delete_namespaced_service(f"{impl}-{step[1]}", ns)
                for impl in IMPLS:
                    wait_for(f"{impl}-{step[1]} gone", lambda impl=impl: not [
                        s for s in core.list_namespaced_service(ns).items if s.metadata.name == f"{impl}-{step[1]}"], 30)
                time.sleep(1)                 # both controllers see the deletion (and free the IP)
                continue
            name, ns = step[0], step[1]
            for impl in (IMPLS if k % 2 == 0 else reversed(list(IMPLS))):   # alternate who goes first
                core.create_namespaced_service(ns, _svc(impl, step))
            live[name] = ns

            def ips(impl: str) -> list[str]:
                return sorted(ingress_ips(kube_api.sanitize_for_serialization(
                    core.read_namespaced_service(f"{impl}-{name}", ns))))

            def settled(impl: str) -> bool:
                return bool(ips(impl)) or bool(_reasons(core, ns, f"{impl}-{name}"))
            for impl in IMPLS:
                wait_for(f"{impl} to allocate (or refuse) {name}", lambda impl=impl: settled(impl), 60, proc=procs[impl])
            time.sleep(0.5)                   # a second write or Event for the same step lands
            got = {impl: ips(impl) for impl in IMPLS}
            allocated += bool(got["mx"])
            ev = {impl: _reasons(core, ns, f"{impl}-{name}") for impl in IMPLS}
            reasons = {impl: sorted({r for r, _m in ev[impl]}) for impl in IMPLS}
            if got["mx"] != got["mlb"] or reasons["mx"] != reasons["mlb"]:
                diffs.append(f"step {name}: metalxdp {got['mx']} {ev['mx']} | MetalLB {got['mlb']} {ev['mlb']}")
        assert not diffs, "metalxdp and MetalLB disagree:\n" + "\n".join(diffs)
        # the sequence exercised both outcomes (and the comparison is not of two empty lists)
        assert 10 <= allocated < len([s for s in STEPS if s[0] != "delete"]), allocated
    finally:
        for p in procs.values():
            p.stop()
        for ns in [SVC_NS, TEAM_NS] + [v[0] for v in IMPLS.values()]:
            for s in core.list_namespaced_service(ns).items:
                core.delete_namespaced_service(s.metadata.name, ns)
            core.delete_namespace(ns)
