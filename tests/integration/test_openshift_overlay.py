"""deploy/openshift/ against the real API server with a minimal SecurityContextConstraints CRD
(tests/data/openshift/scc-crd.yaml: the fields, types and required list of OpenShift's
security.openshift.io/v1 type). It checks the overlay's objects against that schema with a
server-side dry run (strict field validation, so a misspelt field fails) and its RBAC by
impersonation. It is not OpenShift: no SCC admission runs here (tests/unit/test_openshift_scc.py
compares the SCC with the DaemonSet)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from tests.integration.test_deploy import DEPLOY, NS, kubectl, system_ns  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OPENSHIFT = DEPLOY / "openshift"
SCC_CRD = REPO / "tests" / "data" / "openshift" / "scc-crd.yaml"
SPEAKER = f"system:serviceaccount:{NS}:speaker"
CONTROLLER = f"system:serviceaccount:{NS}:controller"


@pytest.fixture(scope="module")
def scc_crd(apiserver):
    kc = str(apiserver.kubeconfig)
    kubectl(kc, "apply", "-f", str(SCC_CRD))
    kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/securitycontextconstraints.security.openshift.io")
    yield kc
    kubectl(kc, "delete", "-f", str(SCC_CRD), "--ignore-not-found", check=False)


def test_overlay_dry_run_server(scc_crd, system_ns):
    r = kubectl(scc_crd, "apply", "--dry-run=server", "-k", str(OPENSHIFT))
    lines = r.stdout.strip().splitlines()
    assert lines and all("(server dry run)" in ln for ln in lines), r.stdout
    assert "securitycontextconstraints.security.openshift.io/metalxdp-speaker created (server dry run)" in lines


def test_deploy_and_overlay_together_from_an_outside_overlay(scc_crd, crds_installed, system_ns, tmp_path):
    """The way docs/openshift.md tells users to combine them: an overlay outside the tree that
    lists deploy/ and deploy/openshift/ (deploy/openshift cannot list ../, kustomize refuses)."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [
        os.path.relpath(DEPLOY, tmp_path), os.path.relpath(OPENSHIFT, tmp_path)]}))
    r = kubectl(scc_crd, "apply", "--dry-run=server", "-k", str(tmp_path))
    lines = r.stdout.strip().splitlines()
    assert all("(server dry run)" in ln for ln in lines), r.stdout
    for obj in ("daemonset.apps/speaker", "deployment.apps/controller",
                "securitycontextconstraints.security.openshift.io/metalxdp-speaker",
                "rolebinding.rbac.authorization.k8s.io/metalxdp:scc:speaker"):
        assert any(ln.startswith(obj) for ln in lines), (obj, r.stdout)


def test_the_schema_catches_a_misspelt_or_missing_field(scc_crd, tmp_path):
    """Without this the dry run above could pass on anything (unknown fields pruned)."""
    [good] = [d for d in yaml.safe_load_all((OPENSHIFT / "scc.yaml").read_text()) if d]
    misspelt = copy.deepcopy(good)
    misspelt["allowHostNetwrk"] = misspelt.pop("allowHostNetwork")
    missing = copy.deepcopy(good)
    del missing["volumes"]
    wrong_type = copy.deepcopy(good)
    wrong_type["runAsUser"]["uid"] = "root"
    for name, doc in (("misspelt", misspelt), ("missing", missing), ("wrong-type", wrong_type)):
        f = tmp_path / f"{name}.yaml"
        f.write_text(yaml.safe_dump(doc))
        r = kubectl(scc_crd, "apply", "--dry-run=server", "-f", str(f), check=False)
        assert r.returncode != 0, (name, r.stdout)


def test_only_the_agent_may_use_its_scc(scc_crd, system_ns):
    kubectl(scc_crd, "apply", "-k", str(OPENSHIFT))
    try:
        def can_use(who, scc):
            r = kubectl(scc_crd, "auth", "can-i", "use", f"securitycontextconstraints.security.openshift.io/{scc}",
                        f"--as={who}", "-n", NS, check=False)
            return r.stdout.strip() == "yes"

        assert can_use(SPEAKER, "metalxdp-speaker")
        assert not can_use(CONTROLLER, "metalxdp-speaker")
        assert not can_use(f"system:serviceaccount:{NS}:default", "metalxdp-speaker")
        assert not can_use(SPEAKER, "privileged")
        assert can_use(CONTROLLER, "nonroot-v2")
        assert not can_use(SPEAKER, "nonroot-v2")
        # the grant reaches metallb-system only
        r = kubectl(scc_crd, "auth", "can-i", "use", "securitycontextconstraints.security.openshift.io/metalxdp-speaker",
                    f"--as={SPEAKER}", "-n", "default", check=False)
        assert r.stdout.strip() == "no"
    finally:
        kubectl(scc_crd, "delete", "-k", str(OPENSHIFT), "--ignore-not-found", check=False)
