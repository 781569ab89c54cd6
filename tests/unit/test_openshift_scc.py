"""deploy/openshift/scc.yaml against deploy/agent/daemonset.yaml: the SCC grants every host
access, volume type, capability and uid the agent DaemonSet asks for, and nothing more; the
RBAC of the overlay lets exactly the DaemonSet's ServiceAccount use it. Pure: both YAMLs parsed.
(The server-side dry run against an SCC CRD is tests/integration/test_openshift_overlay.py.)"""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OPENSHIFT = DEPLOY / "openshift"

# every SCC field this file knows how to judge; a field added to scc.yaml must be judged here
JUDGED = {"apiVersion", "kind", "metadata", "allowHostNetwork", "allowHostPorts", "allowHostDirVolumePlugin",
          "allowHostIPC", "allowHostPID", "allowPrivilegedContainer", "allowPrivilegeEscalation",
          "defaultAllowPrivilegeEscalation", "readOnlyRootFilesystem", "requiredDropCapabilities",
          "allowedCapabilities", "defaultAddCapabilities", "runAsUser", "seLinuxContext", "fsGroup",
          "supplementalGroups", "volumes", "priority", "users", "groups"}


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def scc() -> dict:
    [doc] = load(OPENSHIFT / "scc.yaml")
    assert doc["apiVersion"] == "security.openshift.io/v1" and doc["kind"] == "SecurityContextConstraints"
    return doc


def daemonset_pod() -> dict:
    [ds] = load(DEPLOY / "agent" / "daemonset.yaml")
    return ds["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def volume_type(volume: dict) -> str:
    [kind] = [k for k in volume if k != "name"]
    return kind


def test_the_scc_has_no_field_this_test_does_not_judge():
    assert set(scc()) <= JUDGED, set(scc()) - JUDGED


def test_host_namespaces_and_ports():
    pod, s = daemonset_pod(), scc()
    assert s["allowHostNetwork"] is bool(pod.get("hostNetwork"))
    assert s["allowHostPID"] is bool(pod.get("hostPID")) is False
    assert s["allowHostIPC"] is bool(pod.get("hostIPC")) is False
    # Kubernetes defaults hostPort = containerPort for every port of a hostNetwork pod
    ports = [p for c in containers(pod) for p in c.get("ports", [])]
    asks_host_ports = any(p.get("hostPort") for p in ports) or (bool(pod.get("hostNetwork")) and bool(ports))
    assert s["allowHostPorts"] is asks_host_ports is True


def test_volumes_are_the_daemonsets_plus_the_token():
    pod, s = daemonset_pod(), scc()
    kinds = {volume_type(v) for v in pod["volumes"]}
    if pod.get("automountServiceAccountToken", True):
        kinds.add("projected")      # the kube-api-access-* token volume added at admission
    assert set(s["volumes"]) == kinds
    assert len(s["volumes"]) == len(set(s["volumes"]))
    assert s["allowHostDirVolumePlugin"] is ("hostPath" in kinds)
    # each hostPath the DaemonSet mounts (the SCC cannot name paths, so the test pins them)
    assert [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v] == ["/sys/fs/bpf"]


def test_capabilities_are_exactly_the_added_ones():
    pod, s = daemonset_pod(), scc()
    added, dropped = set(), []
    for c in containers(pod):
        caps = c["securityContext"]["capabilities"]
        added |= set(caps.get("add", []))
        dropped.append(caps.get("drop", []))
    assert set(s["allowedCapabilities"]) == added == {"BPF", "NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "PERFMON"}
    assert len(s["allowedCapabilities"]) == len(added)
    assert all(d == ["ALL"] for d in dropped)
    assert s["requiredDropCapabilities"] == ["ALL"]
    assert s["defaultAddCapabilities"] in (None, [])


def test_privilege_root_fs_and_user():
    pod, s = daemonset_pod(), scc()
    for c in containers(pod):
        sc = c["securityContext"]
        assert not sc.get("privileged") and s["allowPrivilegedContainer"] is False
        assert sc["allowPrivilegeEscalation"] is False
        assert s["allowPrivilegeEscalation"] is False and s["defaultAllowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and s["readOnlyRootFilesystem"] is True
        uid = sc.get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
        assert s["runAsUser"] == {"type": "MustRunAs", "uid": uid}
        assert uid == 0


def test_strategies_grant_no_range_or_label():
    s = scc()
    assert s["seLinuxContext"] == {"type": "MustRunAs"}      # no seLinuxOptions granted
    assert s["fsGroup"] == {"type": "MustRunAs"}
    assert s["supplementalGroups"] == {"type": "RunAsAny"}   # the DaemonSet sets none
    assert s["priority"] in (None, 0)   # 0 (not null: kubectl apply drops nulls and the field is required)
    # nobody by name: access goes through RBAC `use` (rbac.yaml)
    assert not s.get("users") and not s.get("groups")


def test_rbac_lets_exactly_the_daemonsets_serviceaccount_use_it():
    pod, name = daemonset_pod(), scc()["metadata"]["name"]
    docs = load(OPENSHIFT / "rbac.yaml")
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    users = []
    for b in bindings:
        role = roles[b["roleRef"]["name"]]
        for rule in role["rules"]:
            assert rule == {"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"],
                            "resourceNames": rule["resourceNames"], "verbs": ["use"]}
            if name in rule["resourceNames"]:
                users += [(b["metadata"]["namespace"], s["kind"], s["name"], s["namespace"]) for s in b["subjects"]]
    assert users == [("metallb-system", "ServiceAccount", pod["serviceAccountName"], "metallb-system")]


def test_the_controller_is_granted_nonroot_v2_only():
    docs = load(OPENSHIFT / "rbac.yaml")
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "metalxdp:scc:controller"]
    assert [r["resourceNames"] for r in role["rules"]] == [["nonroot-v2"]]
    [dep] = load(DEPLOY / "controller" / "deployment.yaml")
    spec = dep["spec"]["template"]["spec"]
    # what nonroot-v2 admits: a non-root uid, no added capability, no host access
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert not spec.get("hostNetwork") and all("hostPath" not in v for v in spec.get("volumes", []))
    assert all(not c["securityContext"]["capabilities"].get("add") for c in spec["containers"])
    [b] = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "metalxdp:scc:controller"]
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"],
                              "namespace": "metallb-system"}]


def test_the_kustomization_lists_both_files():
    k = yaml.safe_load((OPENSHIFT / "kustomization.yaml").read_text())
    assert k["resources"] == ["scc.yaml", "rbac.yaml"]
