"""deploy/ against the real API server: every manifest passes a server-side dry run, and the
RBAC grants each component what it needs and nothing it must not have (checked by
impersonating the ServiceAccounts with `kubectl auth can-i`, and once with a real token)."""
from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NS = "metallb-system"
AGENT = f"system:serviceaccount:{NS}:speaker"
CONTROLLER = f"system:serviceaccount:{NS}:controller"
OPERATOR = f"system:serviceaccount:{NS}:metalxdp-operator"


def kubectl(kubeconfig, *args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
                       timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r


@pytest.fixture(scope="module")
def system_ns(apiserver, kube_api):
    """metallb-system exists (a dry run of a namespaced object in a missing namespace fails)."""
    from metalxdp.kube import ApiException, client
    try:
        client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": NS}})
    except ApiException as e:
        if e.status != 409:
            raise
    return NS


@pytest.fixture(scope="module")
def rbac_applied(apiserver, system_ns):
    kc = str(apiserver.kubeconfig)
    kubectl(kc, "apply", "-k", str(DEPLOY / "rbac"))
    kubectl(kc, "apply", "-f", str(DEPLOY / "operator" / "rbac.yaml"))
    yield kc
    kubectl(kc, "delete", "-f", str(DEPLOY / "operator" / "rbac.yaml"), "--ignore-not-found", check=False)
    kubectl(kc, "delete", "-k", str(DEPLOY / "rbac"), "--ignore-not-found", check=False)


def built(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


# ---- dry runs ---------------------------------------------------------------------------------
def test_kustomization_dry_run_server(apiserver, crds_installed, system_ns):
    r = kubectl(str(apiserver.kubeconfig), "apply", "--dry-run=server", "-k", str(DEPLOY))
    lines = r.stdout.strip().splitlines()
    assert all("(server dry run)" in ln for ln in lines), r.stdout
    for obj in ("daemonset.apps/speaker", "deployment.apps/controller", "clusterrole.rbac.authorization.k8s.io/"
                "metallb-system:speaker", "namespace/metallb-system",
                "validatingwebhookconfiguration.admissionregistration.k8s.io/metallb-webhook-configuration"):
        assert any(ln.startswith(obj) for ln in lines), (obj, r.stdout)


def test_operator_manifests_dry_run_server(apiserver, crds_installed, system_ns):
    kc = str(apiserver.kubeconfig)
    r = kubectl(kc, "apply", "--dry-run=server", "-k", str(DEPLOY / "operator"))
    assert "deployment.apps/metalxdp-operator created (server dry run)" in r.stdout
    r = kubectl(kc, "apply", "--dry-run=server", "-f", str(DEPLOY / "operator" / "metallb.yaml"))
    assert "metallb.metallb.io/metallb created (server dry run)" in r.stdout


def test_each_manifest_file_dry_run_server(apiserver, crds_installed, system_ns):
    """File by file too, so a broken file is named (the kustomization could hide one)."""
    kc = str(apiserver.kubeconfig)
    files = [DEPLOY / "namespace.yaml", *sorted((DEPLOY / "rbac").glob("*.yaml")),
             *sorted((DEPLOY / "controller").glob("*.yaml")), *sorted((DEPLOY / "agent").glob("*.yaml")),
             *sorted((DEPLOY / "operator").glob("*.yaml"))]
    for f in files:
        if f.name == "kustomization.yaml":
            continue
        kubectl(kc, "apply", "--dry-run=server", "-f", str(f))


# ---- security contexts of what gets deployed -------------------------------------------------
def test_security_contexts_of_the_built_manifests():
    objs = {(o["kind"], o["metadata"]["name"]): o for o in built(DEPLOY) + built(DEPLOY / "operator")}
    for key in (("Deployment", "controller"), ("Deployment", "metalxdp-operator")):
        spec = objs[key]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, key
        assert spec["securityContext"]["runAsUser"] == 65534, key
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, key
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, key
        assert not spec.get("hostNetwork"), key
    ctl = objs[("Deployment", "controller")]["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in ctl["ports"]} == {9120, 9443}
    assert ctl["readinessProbe"] and ctl["livenessProbe"]
    ds = objs[("DaemonSet", "speaker")]["spec"]["template"]["spec"]
    sc = ds["containers"][0]["securityContext"]
    assert not sc.get("privileged")
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"BPF", "NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "PERFMON"}
    assert ds["hostNetwork"] is True and not ds.get("hostPID") and not ds.get("hostIPC")
    # metalxdp.health's paths (the old server answered any path, so any probe was green)
    for c in (ds["containers"][0], ctl):
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "monitoring"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "monitoring"}


def test_no_cluster_wide_secret_access():
    """Secrets are only ever granted by Roles in metallb-system."""
    for o in built(DEPLOY) + built(DEPLOY / "operator"):
        if o["kind"] == "ClusterRole":
            for rule in o["rules"]:
                assert "secrets" not in rule.get("resources", []), o["metadata"]["name"]
                assert "*" not in rule.get("resources", []) and "*" not in rule.get("apiGroups", [])


def test_webhook_service_selects_the_controller_pods():
    objs = {(o["kind"], o["metadata"]["name"]): o for o in built(DEPLOY)}
    selector = objs[("Service", "metallb-webhook-service")]["spec"]["selector"]
    labels = objs[("Deployment", "controller")]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


# ---- RBAC -----------------------------------------------------------------------------------------
# (subject, kubectl auth can-i arguments, allowed?)
CHECKS = [
    # the agent: what it needs
    (AGENT, "list services -A", True),
    (AGENT, "watch services -A", True),
    (AGENT, "watch endpointslices.discovery.k8s.io -A", True),
    (AGENT, "list endpoints -A", True),
    (AGENT, "watch nodes", True),
    (AGENT, "list namespaces", True),
    (AGENT, "watch ipaddresspools.metallb.io -n metallb-system", True),
    (AGENT, "list bgppeers.metallb.io -n metallb-system", True),
    (AGENT, "list l2advertisements.metallb.io -n metallb-system", True),
    (AGENT, "list bfdprofiles.metallb.io -n metallb-system", True),
    (AGENT, "create servicel2statuses.metallb.io -n metallb-system", True),
    (AGENT, "update servicel2statuses.metallb.io --subresource=status -n metallb-system", True),
    (AGENT, "delete servicebgpstatuses.metallb.io -n metallb-system", True),
    (AGENT, "patch configurationstates.metallb.io --subresource=status -n metallb-system", True),
    (AGENT, "create events -n default", True),
    (AGENT, "get secrets -n metallb-system", True),
    (AGENT, "list pods -n metallb-system", True),
    # the agent: what it must not
    (AGENT, "get secrets -n default", False),
    (AGENT, "list secrets -A", False),
    (AGENT, "update services --subresource=status -n default", False),
    (AGENT, "patch services --subresource=status -n default", False),
    (AGENT, "patch services -n default", False),
    (AGENT, "create services -n default", False),
    (AGENT, "update nodes", False),
    (AGENT, "create pods -n metallb-system", False),
    (AGENT, "create ipaddresspools.metallb.io -n metallb-system", False),
    (AGENT, "list ipaddresspools.metallb.io -n default", False),
    (AGENT, "create servicel2statuses.metallb.io -n default", False),
    (AGENT, "create secrets -n metallb-system", False),
    # the controller: what it needs
    (CONTROLLER, "list services -A", True),
    (CONTROLLER, "update services --subresource=status -n default", True),
    (CONTROLLER, "patch services --subresource=status -n default", True),
    (CONTROLLER, "patch services -n default", True),
    (CONTROLLER, "watch namespaces", True),
    (CONTROLLER, "list nodes", True),
    (CONTROLLER, "create events -n default", True),
    (CONTROLLER, "get secrets -n metallb-system", True),
    (CONTROLLER, "create secrets -n metallb-system", True),
    (CONTROLLER, "update ipaddresspools.metallb.io --subresource=status -n metallb-system", True),
    (CONTROLLER, "update configurationstates.metallb.io --subresource=status -n metallb-system", True),
    (CONTROLLER, "get validatingwebhookconfigurations/metallb-webhook-configuration", True),
    (CONTROLLER, "update validatingwebhookconfigurations/metallb-webhook-configuration", True),
    (CONTROLLER, "update customresourcedefinitions.apiextensions.k8s.io/bgppeers.metallb.io", True),
    (CONTROLLER, "create leases.coordination.k8s.io -n metallb-system", True),
    (CONTROLLER, "update leases.coordination.k8s.io/metalxdp-controller -n metallb-system", True),
    # the controller: what it must not
    (CONTROLLER, "get secrets -n default", False),
    (CONTROLLER, "list secrets -A", False),
    (CONTROLLER, "delete services -n default", False),
    (CONTROLLER, "update services -n default", False),
    (CONTROLLER, "update customresourcedefinitions.apiextensions.k8s.io/ipaddresspools.metallb.io", False),
    (CONTROLLER, "update validatingwebhookconfigurations/someone-elses", False),
    (CONTROLLER, "update leases.coordination.k8s.io/kube-scheduler -n metallb-system", False),
    (CONTROLLER, "create servicel2statuses.metallb.io -n metallb-system", False),
    # the operator
    (OPERATOR, "create deployments.apps -n metallb-system", True),
    (OPERATOR, "update daemonsets.apps -n metallb-system", True),
    (OPERATOR, "delete daemonsets.apps -n metallb-system", True),
    (OPERATOR, "watch metallbs.metallb.io -n metallb-system", True),
    (OPERATOR, "patch metallbs.metallb.io --subresource=status -n metallb-system", True),
    (OPERATOR, "create secrets -n metallb-system", True),
    (OPERATOR, "get secrets/memberlist -n metallb-system", True),
    (OPERATOR, "get secrets/metallb-webhook-cert -n metallb-system", False),
    (OPERATOR, "list secrets -n metallb-system", False),
    (OPERATOR, "create deployments.apps -n default", False),
    (OPERATOR, "create roles.rbac.authorization.k8s.io -n metallb-system", False),
    (OPERATOR, "create clusterrolebindings.rbac.authorization.k8s.io", False),
    (OPERATOR, "update metallbs.metallb.io -n metallb-system", False),
]


def test_rbac_by_impersonation(rbac_applied):
    def can_i(check):
        subject, args, _ = check
        r = kubectl(rbac_applied, "auth", "can-i", f"--as={subject}", *args.split(), check=False)
        return r.stdout.strip()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(can_i, CHECKS))
    wrong = [(s.rsplit(":", 1)[1], a, want, got) for (s, a, want), got in zip(CHECKS, answers)
             if got != ("yes" if want else "no")]
    assert not wrong, "\n".join(f"{who}: can-i {a}: want {'yes' if w else 'no'}, got {g!r}"
                                for who, a, w, g in wrong)


def test_rbac_with_a_real_agent_token(apiserver, kube_api, rbac_applied):
    """A token of the speaker ServiceAccount (TokenRequest API), used as the agent would."""
    from metalxdp.kube import client
    tr = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        "speaker", NS, {"spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 600}})
    token = tr.status.token
    ctx = ssl._create_unverified_context()

    def call(method, path, body=None):
        req = urllib.request.Request(apiserver.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/merge-patch+json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert call("GET", "/api/v1/services") == 200
    assert call("GET", "/apis/discovery.k8s.io/v1/endpointslices") == 200
    assert call("GET", f"/apis/metallb.io/v1beta1/namespaces/{NS}/ipaddresspools") == 200
    assert call("GET", f"/api/v1/namespaces/{NS}/secrets") == 200
    assert call("GET", "/api/v1/namespaces/default/secrets") == 403
    assert call("GET", "/api/v1/namespaces/kube-system/secrets") == 403
    assert call("PATCH", "/api/v1/namespaces/default/services/kubernetes/status",
                {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}) == 403
