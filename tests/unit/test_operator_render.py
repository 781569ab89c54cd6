"""The operator's pure renderer: seed 001's MetalLB CR examples -> the exact fields of the
controller Deployment and the speaker DaemonSet; one-instance choice; drift detection; status."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller import operator_render as r

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests" / "data" / "seeds"


def seed(name: str) -> dict:
    return yaml.safe_load((SEEDS / f"001-metallb-{name}.yaml").read_text())


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def container(obj: dict) -> dict:
    return pod(obj)["containers"][0]


DEFAULT_AGENT_TOLERATIONS = [
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
]

# (seed example, component, path -> exact value); None = the field is absent
SEED_CASES = [
    # 6.5.2.4.1: speaker limited to worker nodes, tolerating taint "Example"
    ("speaker-worker-nodes", "agent", {
        "nodeSelector": {"kubernetes.io/os": "linux", "node-role.kubernetes.io/worker": ""},
        "tolerations": DEFAULT_AGENT_TOLERATIONS + [{"key": "Example", "operator": "Exists", "effect": "NoExecute"}],
        "priorityClassName": None, "affinity": None}),
    ("speaker-worker-nodes", "controller", {
        "nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": None}),
    # 6.5.2.4.2: priority class and pod affinity on both
    ("pod-priority-affinity", "controller", {
        "priorityClassName": "high-priority",
        "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "metallb"}}, "topologyKey": "kubernetes.io/hostname"}]}},
        "nodeSelector": {"kubernetes.io/os": "linux"}}),
    ("pod-priority-affinity", "agent", {
        "priorityClassName": "high-priority",
        "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "metallb"}}, "topologyKey": "kubernetes.io/hostname"}]}},
        "tolerations": DEFAULT_AGENT_TOLERATIONS}),
    # 6.5.2.4.3: CPU limits
    ("cpu-limits", "controller", {"resources": {"limits": {"cpu": "200m"}}}),
    ("cpu-limits", "agent", {"resources": {"limits": {"cpu": "300m"}}}),
    # 6.5.2.3: the plain instance renders the defaults
    ("basic", "controller", {"resources": None, "priorityClassName": None, "affinity": None}),
    ("basic", "agent", {"resources": None, "tolerations": DEFAULT_AGENT_TOLERATIONS}),
]


def _field(obj: dict, name: str):
    if name == "resources":
        return container(obj).get(name)
    return pod(obj).get(name)


@pytest.mark.parametrize("example,component,fields", SEED_CASES,
                         ids=[f"{e}-{c}" for e, c, _ in SEED_CASES])
def test_seed_001_examples(example, component, fields):
    cr = seed(example)
    obj = (r.render_agent if component == "agent" else r.render_controller)(cr)
    for name, want in fields.items():
        assert _field(obj, name) == want, name


@pytest.mark.parametrize("example", ["pod-priority-affinity", "cpu-limits"])
def test_seed_log_level_debug_on_both(example):
    cr = seed(example)
    for obj in (r.render_controller(cr), r.render_agent(cr)):
        args = container(obj)["args"]
        assert "--log-level=debug" in args and "--log-level=info" not in args


def test_seed_pod_affinity_matches_our_own_pods():
    # the seed's affinity selects app=metallb: our pods must carry it, or a required podAffinity
    # would leave the first pod unschedulable
    for obj in (r.render_controller({}), r.render_agent({})):
        assert obj["spec"]["template"]["metadata"]["labels"]["app"] == "metallb"


def test_every_other_field():
    cr = {"spec": {"loadBalancerClass": "metalxdp.io/lb", "logLevel": "warn", "image": "reg.example/m:1",
                   "controllerNodeSelector": {"role": "infra"},
                   "controllerTolerations": [{"key": "infra", "operator": "Exists"}],
                   "controllerConfig": {"runtimeClassName": "gvisor", "annotations": {"a": "1"}},
                   "speakerConfig": {"annotations": {"b": "2"}, "runtimeClassName": "runc"}}}
    d, ds = r.render_controller(cr, namespace="ns1"), r.render_agent(cr, namespace="ns1")
    assert d["metadata"]["namespace"] == ds["metadata"]["namespace"] == "ns1"
    for obj in (d, ds):
        assert "--lb-class=metalxdp.io/lb" in container(obj)["args"]
        assert "--log-level=warn" in container(obj)["args"]
        assert container(obj)["image"] == "reg.example/m:1"
    assert pod(d)["nodeSelector"] == {"kubernetes.io/os": "linux", "role": "infra"}
    assert pod(d)["tolerations"] == [{"key": "infra", "operator": "Exists"}]
    assert pod(d)["runtimeClassName"] == "gvisor" and pod(ds)["runtimeClassName"] == "runc"
    assert d["spec"]["template"]["metadata"]["annotations"] == {"a": "1"}
    assert ds["spec"]["template"]["metadata"]["annotations"] == {"b": "2"}
    assert pod(ds)["nodeSelector"] == {"kubernetes.io/os": "linux"}   # controllerNodeSelector only
    # the defaults are not shared mutable state
    assert "annotations" not in r.render_controller({})["spec"]["template"]["metadata"]


def test_image_flag_used_when_cr_has_none():
    assert container(r.render_agent({}, image="x/y:z"))["image"] == "x/y:z"


def test_static_manifests_equal_default_rendering():
    """`kubectl apply -k deploy/` and the operator deploy the same workloads."""
    d = yaml.safe_load((REPO / "deploy/controller/deployment.yaml").read_text())
    ds = yaml.safe_load((REPO / "deploy/agent/daemonset.yaml").read_text())
    assert d == r.render_controller({})
    assert ds == r.render_agent({})


def test_security_contexts():
    d, ds = r.render_controller({}), r.render_agent({})
    assert pod(d)["securityContext"]["runAsNonRoot"] is True and pod(d)["securityContext"]["runAsUser"] == 65534
    sc = container(d)["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    sc = container(ds)["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "PERFMON"]}
    assert "privileged" not in sc and sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"]
    assert pod(ds)["hostNetwork"] is True and pod(ds)["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod(ds)["terminationGracePeriodSeconds"] == 2
    mounts = {m["mountPath"]: m for m in container(ds)["volumeMounts"]}
    # the image carries the kernel headers: nodes without /lib/modules or /usr/src work
    assert "/lib/modules" not in mounts and "/usr/src" not in mounts
    assert not [v for v in pod(ds)["volumes"] if v.get("hostPath", {}).get("path") in ("/lib/modules", "/usr/src")]
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "HostToContainer"
    env = {e["name"]: e for e in container(ds)["env"]}
    assert env["METALLB_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["METALLB_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


# ---- one instance -----------------------------------------------------------------------------
def cr(name: str, created: str, deleting: bool = False) -> dict:
    md = {"name": name, "creationTimestamp": created, "uid": f"uid-{name}", "generation": 1}
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:09Z"
    return {"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB", "metadata": md, "spec": {}}


@pytest.mark.parametrize("crs,active,ignored", [
    ([], None, []),
    ([cr("a", "2024-01-01T00:00:01Z")], "a", []),
    ([cr("b", "2024-01-01T00:00:02Z"), cr("a", "2024-01-01T00:00:01Z")], "a", ["b"]),
    # same second: the name decides, so every operator replica agrees
    ([cr("z", "2024-01-01T00:00:01Z"), cr("m", "2024-01-01T00:00:01Z")], "m", ["z"]),
    # the active one is being deleted: the next one takes over
    ([cr("a", "2024-01-01T00:00:01Z", deleting=True), cr("b", "2024-01-01T00:00:02Z")], "b", []),
])
def test_select_active(crs, active, ignored):
    a, ig = r.select_active(crs)
    assert (a and a["metadata"]["name"]) == active
    assert [c["metadata"]["name"] for c in ig] == ignored


def test_multiple_instances_condition_names_the_active_one():
    conds = {c.type: c for c in r.multiple_instances(cr("metallb", "x"))}
    assert conds["Degraded"].status == "True" and conds["Degraded"].reason == "MultipleInstances"
    assert "'metallb'" in conds["Degraded"].message and "only one MetalLB instance" in conds["Degraded"].message


# ---- drift ---------------------------------------------------------------------------------
def test_hash_follows_the_cr_and_in_sync_follows_generation():
    a = cr("metallb", "t")
    d1 = r.owned(r.render_agent(a), a)
    b = copy.deepcopy(a)
    b["spec"] = {"logLevel": "debug"}
    d2 = r.owned(r.render_agent(b), b)
    h1, h2 = (d["metadata"]["annotations"][r.HASH_ANNOTATION] for d in (d1, d2))
    assert h1 != h2
    assert d1["metadata"]["ownerReferences"][0]["uid"] == "uid-metallb"
    server = copy.deepcopy(d1)
    server["metadata"]["generation"] = 3
    assert r.in_sync(server, d1, 3)
    assert not r.in_sync(server, d1, 2)          # someone edited the spec after our write
    assert not r.in_sync(server, d1, None)       # a fresh operator writes once
    assert not r.in_sync(server, d2, 3)          # the CR changed
    assert not r.in_sync(None, d1, 3)
    other = copy.deepcopy(server)
    other["metadata"]["ownerReferences"] = []
    assert not r.in_sync(other, d1, 3)


def test_for_update_keeps_rollout_restart_and_foreign_annotations():
    a = cr("metallb", "t")
    desired = r.owned(r.render_controller(a), a)
    current = copy.deepcopy(desired)
    current["metadata"].update(resourceVersion="42", annotations={"deployment.kubernetes.io/revision": "3",
                                                                   r.HASH_ANNOTATION: "old"})
    current["spec"]["template"]["metadata"]["annotations"] = {r.RESTARTED_AT: "2024-01-01T00:00:00Z"}
    current["spec"]["replicas"] = 5
    body = r.for_update(current, desired)
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert body["metadata"]["annotations"][r.HASH_ANNOTATION] == desired["metadata"]["annotations"][r.HASH_ANNOTATION]
    assert body["spec"]["template"]["metadata"]["annotations"] == {r.RESTARTED_AT: "2024-01-01T00:00:00Z"}
    assert body["spec"]["replicas"] == 1


# ---- status ---------------------------------------------------------------------------------
def _types(conds):
    return {c.type: (c.status, c.reason) for c in conds}


def test_conditions_without_workload_controllers():
    d, ds = r.render_controller({}), r.render_agent({})
    for o in (d, ds):
        o["metadata"]["generation"] = 1
    assert _types(r.workload_conditions(d, ds)) == {
        "Available": ("False", "ComponentsNotAvailable"), "Progressing": ("True", "Deploying"),
        "Degraded": ("False", "AsExpected")}
    msg = r.workload_conditions(d, ds)[0].message
    assert "not been observed by the deployment controller" in msg and "daemonset controller" in msg


def test_conditions_rolled_out_and_failing():
    d, ds = r.render_controller({}), r.render_agent({})
    d["metadata"]["generation"] = ds["metadata"]["generation"] = 2
    d["status"] = {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    ds["status"] = {"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                    "numberAvailable": 2}
    assert _types(r.workload_conditions(d, ds))["Available"] == ("False", "ComponentsNotAvailable")
    assert "speaker: 2/3 pods available" in r.workload_conditions(d, ds)[0].message
    ds["status"]["numberAvailable"] = 3
    assert _types(r.workload_conditions(d, ds)) == {
        "Available": ("True", "AllComponentsAvailable"), "Progressing": ("False", "Deployed"),
        "Degraded": ("False", "AsExpected")}
    d["metadata"]["generation"] = 3   # a new rendering not observed yet
    assert _types(r.workload_conditions(d, ds))["Progressing"] == ("True", "Deploying")
    assert _types(r.workload_conditions(None, None, error="403 Forbidden"))["Degraded"] == ("True", "SyncFailed")


def test_last_transition_time_moves_only_on_flips():
    c1 = r.status_conditions(r.workload_conditions(None, None), None, 1, "T1")
    c2 = r.status_conditions(r.workload_conditions(None, None), c1, 2, "T2")
    assert all(c["lastTransitionTime"] == "T1" for c in c2)
    flipped = r.status_conditions(r.workload_conditions(None, None, error="x"), c2, 2, "T3")
    ltt = {c["type"]: c["lastTransitionTime"] for c in flipped}
    assert ltt == {"Available": "T1", "Progressing": "T3", "Degraded": "T3"}
    assert r.same_conditions(c1, [dict(c, lastTransitionTime="other") for c in c1])
    assert not r.same_conditions(c1, c2)   # observedGeneration differs


def test_memberlist_secret_is_not_owned_by_the_cr():
    s = r.memberlist_secret("metallb-system", "a2V5")
    assert s["stringData"] == {"secretkey": "a2V5"} and "ownerReferences" not in s["metadata"]
