"""`metalxdp operator` as a process against the real API server, with seed 001's MetalLB CRs:
the Deployment and DaemonSet carry exactly those settings, CR edits flow through, hand edits
are reverted, a second instance is reported and ignored, deletion removes the workloads (by the
operator, and by the garbage collector alone when the operator is down)."""
from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from controller import operator_render as r

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests" / "data" / "seeds"
GROUP, VERSION, PLURAL = "metallb.io", "v1beta1", "metallbs"
DEFAULT_TOLERATIONS = r.AGENT_DEFAULT_TOLERATIONS


def seed(name: str, namespace: str, new_name: str | None = None) -> dict:
    cr = yaml.safe_load((SEEDS / f"001-metallb-{name}.yaml").read_text())
    cr["metadata"]["namespace"] = namespace
    if new_name:
        cr["metadata"]["name"] = new_name
    return cr


def wait_for(what: str, fn, timeout: float = 30, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 - not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Cluster:
    """The few calls the tests make, as plain dicts."""

    def __init__(self, api, ns):
        from metalxdp.kube import ApiException, client
        self.ApiException = ApiException
        self.api, self.ns = api, ns
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.co = client.CustomObjectsApi(api)

    def d(self, obj) -> dict:
        return self.api.sanitize_for_serialization(obj)

    def _read(self, read, name: str):
        """``read(name, namespace)`` as a dict; None when there is no such object."""
        try:
            return self.d(read(name, self.ns))
        except self.ApiException as e:
            if e.status == 404:
                return None
            raise

    def deployment(self):
        return self._read(self.apps.read_namespaced_deployment, "controller")

    def daemonset(self):
        return self._read(self.apps.read_namespaced_daemon_set, "speaker")

    def create_cr(self, cr: dict) -> dict:
        return self.co.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, cr)

    def get_cr(self, name: str) -> dict:
        return self.co.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def replace_cr_spec(self, name: str, spec: dict) -> None:
        for _ in range(10):
            cur = self.get_cr(name)
            cur["spec"] = spec
            try:
                self.co.replace_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, cur)
                return
            except self.ApiException as e:
                if e.status != 409:   # the operator wrote its status meanwhile
                    raise
        raise AssertionError("could not update the CR")

    def delete_cr(self, name: str) -> None:
        self.co.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def condition(self, name: str, typ: str) -> dict | None:
        for c in (self.get_cr(name).get("status") or {}).get("conditions") or []:
            if c["type"] == typ:
                return c
        return None


@pytest.fixture
def cluster(kube_api, crds_installed, k8s_namespace):
    return Cluster(kube_api, k8s_namespace)


def start_operator(apiserver, ns: str, tmp_path: Path, image: str = "registry.example/metalxdp:test",
                   log_name: str = "operator.log"):
    log = open(tmp_path / log_name, "w")
    p = subprocess.Popen([sys.executable, "-m", "metalxdp.cli", "operator", "--kubeconfig",
                          str(apiserver.kubeconfig), "--namespace", ns, "--image", image,
                          "--log-level", "debug"],
                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def operator(apiserver, cluster, tmp_path):
    p = start_operator(apiserver, cluster.ns, tmp_path)
    yield p
    stop(p)
    if p.returncode not in (0, -15):
        print((tmp_path / "operator.log").read_text()[-5000:])


def pod(o):
    return o["spec"]["template"]["spec"]


def container(o):
    return pod(o)["containers"][0]


def rendered_with(cluster, name: str, check_ds=lambda ds: True, check_d=lambda d: True, timeout=30):
    """Wait until both workloads are owned by CR ``name`` and pass the checks."""
    uid = cluster.get_cr(name)["metadata"]["uid"]

    def ok():
        d, ds = cluster.deployment(), cluster.daemonset()
        if not d or not ds:
            return None
        owners = [o["uid"] for o in (d["metadata"].get("ownerReferences") or [])] + \
                 [o["uid"] for o in (ds["metadata"].get("ownerReferences") or [])]
        return (d, ds) if owners == [uid, uid] and check_d(d) and check_ds(ds) else None
    return wait_for(f"workloads rendered from {name}", ok, timeout)


# ---- seed 001 examples -----------------------------------------------------------------------------
def test_worker_nodes_and_tolerations(cluster, operator):
    cluster.create_cr(seed("speaker-worker-nodes", cluster.ns))
    d, ds = rendered_with(cluster, "metallb")
    assert pod(ds)["nodeSelector"] == {"kubernetes.io/os": "linux", "node-role.kubernetes.io/worker": ""}
    assert pod(ds)["tolerations"] == DEFAULT_TOLERATIONS + [
        {"key": "Example", "operator": "Exists", "effect": "NoExecute"}]
    assert pod(d)["nodeSelector"] == {"kubernetes.io/os": "linux"} and "tolerations" not in pod(d)
    assert container(d)["image"] == container(ds)["image"] == "registry.example/metalxdp:test"
    ref = ds["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"], ref["blockOwnerDeletion"]) == ("MetalLB", "metallb", True, True)
    # the memberlist key was created: 128 random bytes, base64
    import base64
    s = cluster.core.read_namespaced_secret("memberlist", cluster.ns)
    assert len(base64.b64decode(base64.b64decode(s.data["secretkey"]))) == 128
    # no kubelet or workload controllers in the test cluster: rolling out, never available
    prog = wait_for("Progressing condition", lambda: cluster.condition("metallb", "Progressing"))
    assert (prog["status"], prog["reason"]) == ("True", "Deploying")
    assert "not been observed by the deployment controller" in prog["message"]
    avail = cluster.condition("metallb", "Available")
    assert (avail["status"], avail["reason"]) == ("False", "ComponentsNotAvailable")
    assert cluster.condition("metallb", "Degraded")["status"] == "False"


def test_priority_class_and_pod_affinity(cluster, operator):
    cluster.create_cr(seed("pod-priority-affinity", cluster.ns))
    d, ds = rendered_with(cluster, "metallb")
    affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "metallb"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    for o in (d, ds):
        assert pod(o)["priorityClassName"] == "high-priority"
        assert pod(o)["affinity"] == affinity
        assert "--log-level=debug" in container(o)["args"]
        assert o["spec"]["template"]["metadata"]["labels"]["app"] == "metallb"


def test_cpu_limits(cluster, operator):
    cluster.create_cr(seed("cpu-limits", cluster.ns))
    d, ds = rendered_with(cluster, "metallb")
    assert container(d)["resources"] == {"limits": {"cpu": "200m"}}
    assert container(ds)["resources"] == {"limits": {"cpu": "300m"}}


# ---- life cycle ---------------------------------------------------------------------------------------
def test_edits_drift_second_instance_and_deletion(cluster, operator):
    cluster.create_cr(seed("speaker-worker-nodes", cluster.ns))
    d, ds = rendered_with(cluster, "metallb")

    # editing the CR updates the workloads (and drops what the CR no longer says)
    spec = copy.deepcopy(seed("cpu-limits", cluster.ns)["spec"])
    spec["loadBalancerClass"] = "metalxdp.io/test"
    cluster.replace_cr_spec("metallb", spec)
    d, ds = rendered_with(
        cluster, "metallb",
        check_ds=lambda ds: container(ds).get("resources") == {"limits": {"cpu": "300m"}},
        check_d=lambda d: container(d).get("resources") == {"limits": {"cpu": "200m"}})
    assert pod(ds)["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod(ds)["tolerations"] == DEFAULT_TOLERATIONS
    for o in (d, ds):
        assert "--lb-class=metalxdp.io/test" in container(o)["args"]
        assert "--log-level=debug" in container(o)["args"]

    # a hand edit of the DaemonSet is put back
    gen = ds["metadata"]["generation"]
    cluster.apps.patch_namespaced_daemon_set("speaker", cluster.ns, {"spec": {"template": {"spec": {
        "nodeSelector": {"hand": "edited"},
        "containers": [{"name": "speaker", "args": ["agent", "--log-level=all"]}]}}}})
    ds = wait_for("DaemonSet reverted", lambda: (lambda ds: ds if ds["metadata"]["generation"] > gen + 1 and
                                                 pod(ds)["nodeSelector"] == {"kubernetes.io/os": "linux"} and
                                                 "--lb-class=metalxdp.io/test" in container(ds)["args"] else None)(
        cluster.daemonset()))
    assert container(ds)["args"] == r.render_agent(cluster.get_cr("metallb"))["spec"]["template"]["spec"][
        "containers"][0]["args"]
    # ... and of the Deployment, keeping a `kubectl rollout restart` stamp
    cluster.apps.patch_namespaced_deployment("controller", cluster.ns, {"spec": {"replicas": 4, "template": {
        "metadata": {"annotations": {r.RESTARTED_AT: "2024-01-01T00:00:00Z"}},
        "spec": {"priorityClassName": "", "containers": [{"name": "controller", "image": "evil/image"}]}}}})
    d = wait_for("Deployment reverted", lambda: (lambda d: d if d["spec"]["replicas"] == 1 and
                                                 container(d)["image"] == "registry.example/metalxdp:test" else None)(
        cluster.deployment()))
    assert d["spec"]["template"]["metadata"]["annotations"] == {r.RESTARTED_AT: "2024-01-01T00:00:00Z"}

    # a second instance is reported and ignored
    time.sleep(1.1)   # creationTimestamp has a one-second resolution
    cluster.create_cr(seed("pod-priority-affinity", cluster.ns, new_name="second"))
    deg = wait_for("MultipleInstances on the second CR", lambda: (
        lambda c: c if c and c["reason"] == "MultipleInstances" else None)(cluster.condition("second", "Degraded")))
    assert deg["status"] == "True" and "'metallb'" in deg["message"]
    assert "only one MetalLB instance is supported" in deg["message"]
    time.sleep(1)
    d2, ds2 = cluster.deployment(), cluster.daemonset()
    assert d2["metadata"]["generation"] == d["metadata"]["generation"]
    assert "priorityClassName" not in pod(ds2)
    assert ds2["metadata"]["ownerReferences"][0]["name"] == "metallb"
    assert cluster.condition("metallb", "Degraded")["status"] == "False"

    # the active instance goes: the second one takes over
    cluster.delete_cr("metallb")
    d, ds = rendered_with(cluster, "second", check_ds=lambda ds: pod(ds).get("priorityClassName") == "high-priority")
    wait_for("second no longer degraded", lambda: cluster.condition("second", "Degraded")["status"] == "False")

    # the last instance goes: the workloads go
    cluster.delete_cr("second")
    wait_for("workloads deleted", lambda: cluster.deployment() is None and cluster.daemonset() is None)
    # the key stays: re-creating the CR must not rotate it under running agents
    assert cluster.core.read_namespaced_secret("memberlist", cluster.ns)
    assert operator.poll() is None


def test_garbage_collector_removes_workloads_when_operator_is_down(apiserver, cluster, tmp_path):
    p = start_operator(apiserver, cluster.ns, tmp_path)
    try:
        cluster.create_cr(seed("basic", cluster.ns))
        rendered_with(cluster, "metallb")
    finally:
        stop(p)
    cluster.delete_cr("metallb")
    wait_for("the garbage collector to delete the owned workloads",
             lambda: cluster.deployment() is None and cluster.daemonset() is None, timeout=60, interval=0.5)


def test_restarted_operator_adopts_without_churn(apiserver, cluster, tmp_path):
    p = start_operator(apiserver, cluster.ns, tmp_path)
    try:
        cluster.create_cr(seed("cpu-limits", cluster.ns))
        d, ds = rendered_with(cluster, "metallb")
    finally:
        stop(p)
    p = start_operator(apiserver, cluster.ns, tmp_path, log_name="operator2.log")
    try:
        # the new process waits out the old Lease (15 s) before it leads; its first sync
        # rewrites the unchanged rendering, a no-op on the server
        wait_for("the restarted operator to lead", lambda: "operator started" in
                 (tmp_path / "operator2.log").read_text(), timeout=40, interval=0.5)
        wait_for("a status write by the new operator", lambda: cluster.condition("metallb", "Progressing"))
        time.sleep(1)
        d2, ds2 = cluster.deployment(), cluster.daemonset()
        assert d2["metadata"]["generation"] == d["metadata"]["generation"]
        assert ds2["metadata"]["generation"] == ds["metadata"]["generation"]
    finally:
        stop(p)
