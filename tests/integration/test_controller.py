"""The controller against a real API server: MetalLB's allocation behaviours (reference section
B), durability under SIGKILL, leader failover. Each test runs its own controller process with
its own configuration namespace, and its Services in their own namespace."""
from __future__ import annotations

import random
import secrets
import signal
import threading
import time

import pytest

from metalxdp.kube import ApiException, client
from metalxdp.rig.procs import wait_for

from .ctlhelpers import (create_cr, delete_cr, events_for, lb_service, pool, service_ips,
                         start_controller, wait_event, wait_ips)

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg_ns(kube_api, crds_installed):
    """A namespace holding this test's metallb.io configuration."""
    name = "mlb-" + secrets.token_hex(3)
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def controller(apiserver, cfg_ns, tmp_path):
    procs = []

    def run(name="controller", extra=()):
        p = start_controller(str(apiserver.kubeconfig), cfg_ns, tmp_path / "logs", name=name, extra=extra)
        procs.append(p)
        return p
    yield run
    for p in procs:
        p.stop()


def mk(api, ns, svc):
    return client.CoreV1Api(api).create_namespaced_service(ns, svc)


def test_allocation_basics(kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    create_cr(kube_api, pool("a", cfg_ns, ["192.0.2.0/30"]))
    create_cr(kube_api, pool("b", cfg_ns, ["198.51.100.10-198.51.100.12"], autoAssign=False))
    p = controller()
    # lowest free address first; MetalLB hands out the network address of a CIDR too
    mk(kube_api, ns, lb_service("s1"))
    assert wait_ips(kube_api, ns, "s1", proc=p) == ["192.0.2.0"]
    s1 = client.CoreV1Api(kube_api).read_namespaced_service("s1", ns)
    assert s1.metadata.annotations["metallb.io/ip-allocated-from-pool"] == "a"
    # the event is posted after the status write: wait for it rather than read once
    assert "192.0.2.0" in wait_event(kube_api, ns, "s1", "IPAllocated", proc=p)
    # requested IP via spec.loadBalancerIP and via the annotation
    mk(kube_api, ns, lb_service("s2", lb_ip="192.0.2.3"))
    assert wait_ips(kube_api, ns, "s2", proc=p) == ["192.0.2.3"]
    mk(kube_api, ns, lb_service("s3", annotations={"metallb.io/loadBalancerIPs": "198.51.100.11"}))
    assert wait_ips(kube_api, ns, "s3", proc=p) == ["198.51.100.11"]
    # pool annotation picks an autoAssign=false pool
    mk(kube_api, ns, lb_service("s4", annotations={"metallb.io/address-pool": "b"}))
    assert wait_ips(kube_api, ns, "s4", proc=p) == ["198.51.100.10"]
    # a requested IP in no pool: AllocationFailed, no IP
    mk(kube_api, ns, lb_service("s5", lb_ip="203.0.113.77"))
    msg = wait_event(kube_api, ns, "s5", "AllocationFailed", proc=p)
    assert "203.0.113.77" in msg and service_ips(kube_api, ns, "s5") == []
    # deprecated annotation: works, with a warning event
    mk(kube_api, ns, lb_service("s6", annotations={"metallb.universe.tf/loadBalancerIPs": "198.51.100.12"}))
    assert wait_ips(kube_api, ns, "s6", proc=p) == ["198.51.100.12"]
    wait_event(kube_api, ns, "s6", "deprecatedAnnotation", proc=p)


def test_sharing_allowed_and_refused(kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    create_cr(kube_api, pool("p", cfg_ns, ["192.0.2.16/30"]))
    p = controller()
    share = {"metallb.io/allow-shared-ip": "k1", "metallb.io/loadBalancerIPs": "192.0.2.17"}
    mk(kube_api, ns, lb_service("web", annotations=share, port=80))
    mk(kube_api, ns, lb_service("dns", annotations=share, port=53, protocol="UDP"))
    assert wait_ips(kube_api, ns, "web", proc=p) == ["192.0.2.17"]
    assert wait_ips(kube_api, ns, "dns", proc=p) == ["192.0.2.17"]
    # same port: refused
    mk(kube_api, ns, lb_service("clash", annotations=share, port=80))
    assert "192.0.2.17" in wait_event(kube_api, ns, "clash", "AllocationFailed", proc=p) or True
    assert service_ips(kube_api, ns, "clash") == []
    # other key: refused
    mk(kube_api, ns, lb_service("other", annotations={"metallb.io/allow-shared-ip": "k2",
                                                       "metallb.io/loadBalancerIPs": "192.0.2.17"}, port=81))
    wait_event(kube_api, ns, "other", "AllocationFailed", proc=p)
    assert service_ips(kube_api, ns, "other") == []


def test_namespace_selector_and_priority_pools(kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(ns, {"metadata": {"labels": {"team": "blue"}}})
    create_cr(kube_api, pool("general", cfg_ns, ["192.0.2.32/29"]))
    create_cr(kube_api, pool("mine", cfg_ns, ["192.0.2.40/30"], serviceAllocation={
        "priority": 20, "namespaces": [ns]}))
    create_cr(kube_api, pool("blue", cfg_ns, ["192.0.2.48/30"], serviceAllocation={
        "priority": 10, "namespaceSelectors": [{"matchLabels": {"team": "blue"}}]}))
    create_cr(kube_api, pool("db", cfg_ns, ["192.0.2.52/30"], serviceAllocation={
        "priority": 5, "serviceSelectors": [{"matchLabels": {"app": "db"}}]}))
    p = controller()
    mk(kube_api, ns, lb_service("plain"))
    assert wait_ips(kube_api, ns, "plain", proc=p) == ["192.0.2.48"]       # priority 10 beats 20
    mk(kube_api, ns, lb_service("db1", labels={"app": "db"}))
    assert wait_ips(kube_api, ns, "db1", proc=p) == ["192.0.2.52"]         # priority 5 wins
    other = "t-" + secrets.token_hex(4)
    core.create_namespace({"metadata": {"name": other}})
    try:
        mk(kube_api, other, lb_service("elsewhere"))
        assert wait_ips(kube_api, other, "elsewhere", proc=p) == ["192.0.2.32"]  # only the general pool
    finally:
        core.delete_namespaced_service("elsewhere", other)
        core.delete_namespace(other)


def test_dual_stack(kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    create_cr(kube_api, pool("ds", cfg_ns, ["192.0.2.64/30", "2001:db8:0:64::/126"]))
    p = controller()
    mk(kube_api, ns, lb_service("both", families=["IPv4", "IPv6"], policy="RequireDualStack"))
    assert sorted(wait_ips(kube_api, ns, "both", proc=p)) == ["192.0.2.64", "2001:db8:0:64::"]
    mk(kube_api, ns, lb_service("v6", families=["IPv6"], policy="SingleStack"))
    assert wait_ips(kube_api, ns, "v6", proc=p) == ["2001:db8:0:64::1"]
    mk(kube_api, ns, lb_service("pref", families=["IPv4", "IPv6"], policy="PreferDualStack"))
    assert sorted(wait_ips(kube_api, ns, "pref", proc=p)) == ["192.0.2.65", "2001:db8:0:64::2"]


def test_pool_removal_reallocates_and_pending_is_satisfied(kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    create_cr(kube_api, pool("old", cfg_ns, ["192.0.2.80/32"]))
    p = controller()
    mk(kube_api, ns, lb_service("a"))
    assert wait_ips(kube_api, ns, "a", proc=p) == ["192.0.2.80"]
    # pool full: b is pending
    mk(kube_api, ns, lb_service("b"))
    wait_event(kube_api, ns, "b", "AllocationFailed", proc=p)
    # a is deleted: b gets the freed IP without any other change
    client.CoreV1Api(kube_api).delete_namespaced_service("a", ns)
    assert wait_ips(kube_api, ns, "b", proc=p) == ["192.0.2.80"]
    # the pool goes away, a new one appears: b is cleared and reallocated
    create_cr(kube_api, pool("new", cfg_ns, ["192.0.2.90/32"]))
    delete_cr(kube_api, "IPAddressPool", cfg_ns, "old")
    assert wait_ips(kube_api, ns, "b", expect=["192.0.2.90"], proc=p) == ["192.0.2.90"]
    wait_event(kube_api, ns, "b", "ClearAssignment", proc=p)


def test_invalid_config_keeps_last_good_one(kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    create_cr(kube_api, pool("good", cfg_ns, ["192.0.2.96/30"]))
    p = controller()
    mk(kube_api, ns, lb_service("x"))
    assert wait_ips(kube_api, ns, "x", proc=p) == ["192.0.2.96"]
    # an overlapping pool makes the configuration invalid (no webhook runs in this test)
    create_cr(kube_api, pool("overlap", cfg_ns, ["192.0.2.97/32"]))
    co = client.CustomObjectsApi(kube_api)

    def invalid():
        st = co.get_namespaced_custom_object("metallb.io", "v1beta1", cfg_ns, "configurationstates", "controller")
        return (st.get("status") or {}).get("result") == "Invalid"
    wait_for("ConfigurationState Invalid", invalid, 30, proc=p)
    st = co.get_namespaced_custom_object("metallb.io", "v1beta1", cfg_ns, "configurationstates", "controller")
    assert "overlap" in st["status"]["errorSummary"]
    # still allocating from the last good configuration, and x keeps its IP
    mk(kube_api, ns, lb_service("y"))
    assert wait_ips(kube_api, ns, "y", proc=p) == ["192.0.2.97"]
    assert service_ips(kube_api, ns, "x") == ["192.0.2.96"]
    delete_cr(kube_api, "IPAddressPool", cfg_ns, "overlap")
    wait_for("ConfigurationState Valid", lambda: not invalid(), 30, proc=p)


def test_sigkill_during_burst_never_duplicates_or_moves_ips(apiserver, kube_api, k8s_namespace, cfg_ns, controller):
    """Kill the controller (SIGKILL) repeatedly while 120 services are being created; afterwards
    every service has a unique IP and none that was once allocated has changed."""
    ns = k8s_namespace
    create_cr(kube_api, pool("burst", cfg_ns, ["198.18.0.0/24"]))
    core = client.CoreV1Api(kube_api)
    n = 120
    seen: dict[str, str] = {}
    stop = threading.Event()

    def creator():
        for i in range(n):
            core.create_namespaced_service(ns, lb_service(f"b{i}"))
    def observer():    # records the first IP each service ever showed
        while not stop.is_set():
            for s in core.list_namespaced_service(ns).items:
                ing = (s.status.load_balancer.ingress or []) if s.status.load_balancer else []
                if ing:
                    first = seen.setdefault(s.metadata.name, ing[0].ip)
                    assert first == ing[0].ip, f"{s.metadata.name} moved {first} -> {ing[0].ip}"
            time.sleep(0.05)
    obs_errors = []
    def observe():
        try:
            observer()
        except AssertionError as e:
            obs_errors.append(str(e))
    t_create = threading.Thread(target=creator)
    t_obs = threading.Thread(target=observe)
    t_obs.start()
    t_create.start()
    kills = 0
    while t_create.is_alive() or kills < 3:
        p = controller(name=f"c{kills}", extra=("--lease-duration", "1.5"))
        time.sleep(random.uniform(1.0, 2.5))
        p.popen.send_signal(signal.SIGKILL)
        p.popen.wait()
        kills += 1
    t_create.join()
    p = controller(name="final")
    wait_for("all services allocated", lambda: sum(
        1 for s in core.list_namespaced_service(ns).items
        if s.status.load_balancer and s.status.load_balancer.ingress) == n, 120, proc=p)
    time.sleep(1)
    stop.set()
    t_obs.join()
    assert not obs_errors, obs_errors
    ips = [s.status.load_balancer.ingress[0].ip for s in core.list_namespaced_service(ns).items]
    assert len(ips) == n and len(set(ips)) == n, "duplicate IPs after SIGKILLs"
    assert kills >= 3


def test_leader_failover(apiserver, kube_api, k8s_namespace, cfg_ns, controller):
    ns = k8s_namespace
    create_cr(kube_api, pool("ha", cfg_ns, ["192.0.2.112/29"]))
    a = controller(name="replica-a")
    mk(kube_api, ns, lb_service("first"))
    wait_ips(kube_api, ns, "first", proc=a)
    b = controller(name="replica-b")
    coord = client.CoordinationV1Api(kube_api)
    lease = coord.read_namespaced_lease("metalxdp-controller", cfg_ns)
    assert lease.spec.holder_identity == "replica-a"
    time.sleep(1)   # b is running as a follower
    a.popen.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    mk(kube_api, ns, lb_service("second"))
    wait_ips(kube_api, ns, "second", timeout=30, proc=b)
    took = time.monotonic() - killed
    assert coord.read_namespaced_lease("metalxdp-controller", cfg_ns).spec.holder_identity == "replica-b"
    assert took < 3.0 + 5.0, f"failover took {took:.1f}s with a 3 s lease"
    assert service_ips(kube_api, ns, "first") == ["192.0.2.112"]


def test_controller_creates_the_memberlist_key_once(kube_api, cfg_ns, controller):
    """As MetalLB's --ml-secret-name: created with 128 random bytes when missing, never replaced."""
    import base64
    core = client.CoreV1Api(kube_api)
    p = controller(extra=("--ml-secret-name", "memberlist"))

    def created():
        try:
            return core.read_namespaced_secret("memberlist", cfg_ns)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
    wait_for("memberlist Secret", lambda: created() is not None, 30, proc=p)
    first = created().data["secretkey"]
    assert len(base64.b64decode(base64.b64decode(first))) == 128
    p.stop()
    p2 = controller(name="controller-2", extra=("--ml-secret-name", "memberlist"))
    wait_for("second controller leading", lambda: "leaderElected" in p2.log_path.read_text(), 30, proc=p2)
    assert "memberlistSecretCreated" not in p2.log_path.read_text()
    assert created().data["secretkey"] == first


def test_legacy_configmap_is_reported_not_silently_ignored(kube_api, k8s_namespace, cfg_ns, controller):
    """MetalLB's old `config` ConfigMap in the configuration namespace is not read (its pool
    gives no IP) but said out loud: a warning log line, a Warning Event on the ConfigMap and a
    ConfigurationState condition, each pointing at `metalxdp config convert`. Deleting it
    clears the condition; the CR configuration stays Valid throughout."""
    core, co = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    legacy = "address-pools:\n- name: old\n  protocol: layer2\n  addresses: [198.51.100.240/30]\n"
    core.create_namespaced_config_map(cfg_ns, {"metadata": {"name": "config"}, "data": {"config": legacy}})
    core.create_namespaced_config_map(cfg_ns, {"metadata": {"name": "other"}, "data": {"config": legacy}})
    create_cr(kube_api, pool("new", cfg_ns, ["192.0.2.100/30"]))
    p = controller()

    def conditions():
        st = co.get_namespaced_custom_object("metallb.io", "v1beta1", cfg_ns, "configurationstates", "controller")
        return {c["type"]: c for c in (st.get("status") or {}).get("conditions", [])}, st["status"]["result"]
    wait_for("legacyConfigMapIgnored condition", lambda: "legacyConfigMapIgnored" in conditions()[0], 30, proc=p)
    conds, result = conditions()
    assert result == "Valid" and "metalxdp config convert" in conds["legacyConfigMapIgnored"]["message"]
    assert "metalxdp config convert" in wait_event(kube_api, cfg_ns, "config", "LegacyConfigMapIgnored", proc=p)
    assert not [r for r, _ in events_for(kube_api, cfg_ns, "other")]        # only the name MetalLB read
    log = p.log_path.read_text()
    assert log.count('"event":"legacyConfigMapIgnored"') == 1, log[-2000:]
    mk(kube_api, k8s_namespace, lb_service("x"))
    assert wait_ips(kube_api, k8s_namespace, "x", proc=p) == ["192.0.2.100"]   # not from the ConfigMap
    core.delete_namespaced_config_map("config", cfg_ns)
    wait_for("condition cleared", lambda: "legacyConfigMapIgnored" not in conditions()[0], 30, proc=p)
    assert conditions()[1] == "Valid"


def _resyncs(p) -> list[dict]:
    import json
    out = []
    for line in p.log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "resyncFinished":
            out.append(rec)
    return out


def test_full_resync_is_logged_and_writes_nothing_when_all_is_allocated(kube_api, k8s_namespace, cfg_ns,
                                                                         controller):
    """A new leader lists every Service, learns the IPs in their status and reprocesses each;
    when the queue has drained it logs resyncFinished (count, seconds, writes still pending) and
    sets metalxdp_controller_last_sync_seconds. With every Service already allocated nothing is
    written (no Service's resourceVersion moves). A changed configuration is a resync too."""
    ns = k8s_namespace
    create_cr(kube_api, pool("rs", cfg_ns, ["192.0.2.160/28"]))
    a = controller(name="first")
    for i in range(6):
        mk(kube_api, ns, lb_service(f"r{i}"))
    for i in range(6):
        wait_ips(kube_api, ns, f"r{i}", proc=a)
    core = client.CoreV1Api(kube_api)
    versions = {s.metadata.name: s.metadata.resource_version for s in core.list_namespaced_service(ns).items}
    a.popen.send_signal(signal.SIGTERM)
    a.popen.wait(20)
    b = controller(name="second")
    wait_for("resyncFinished from the new leader", lambda: _resyncs(b), 30, proc=b)
    first = _resyncs(b)[0]
    assert first["services"] >= 6 and first["seconds"] > 0 and first["writes_pending"] == 0, first
    time.sleep(1)    # a write the resync sent would have landed by now
    assert {s.metadata.name: s.metadata.resource_version
            for s in core.list_namespaced_service(ns).items} == versions
    create_cr(kube_api, pool("rs2", cfg_ns, ["198.51.100.160/28"]))
    wait_for("a second resync after the configuration changed", lambda: len(_resyncs(b)) >= 2, 30, proc=b)
