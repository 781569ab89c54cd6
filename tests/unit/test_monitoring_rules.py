"""deploy/monitoring's alert rules, run by the real `promtool test rules` (Debian's prometheus
package, installed by `make setup`) against tests/monitoring/rules_test.yaml."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_CR = ROOT / "deploy" / "monitoring" / "prometheusrule.yaml"
RULE_TESTS = ROOT / "tests" / "monitoring" / "rules_test.yaml"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: it comes with Debian's `prometheus` package (`make setup` installs it)"
    return path


def test_promtool_rule_tests_pass(tmp_path):
    cr = yaml.safe_load(RULE_CR.read_text())
    assert cr["kind"] == "PrometheusRule" and cr["apiVersion"] == "monitoring.coreos.com/v1"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(cr["spec"]))
    shutil.copy(RULE_TESTS, tmp_path / "rules_test.yaml")
    check = subprocess.run([promtool(), "check", "rules", "rules.yaml"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([promtool(), "test", "rules", "rules_test.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_promtool_case():
    names = {r["alert"] for g in yaml.safe_load(RULE_CR.read_text())["spec"]["groups"] for r in g["rules"]}
    tested = {c["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for c in t.get("alert_rule_test", [])}
    assert names - tested == set()
    assert {"MetalLBStaleConfig", "MetalLBConfigNotLoaded", "MetalLBAddressPoolExhausted",
            "MetalLBBGPSessionDown"} <= names


def test_component_builds_alone_and_as_a_component(tmp_path):
    """`kubectl apply -k deploy/monitoring` and `components: [deploy/monitoring]` both build (the
    real kubectl's kustomize)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found (make setup puts the pinned one in /var/cache/metalxdp/bin)"
    kinds = {"Service", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    alone = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "monitoring")],
                           capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr
    assert {d["kind"] for d in yaml.safe_load_all(alone.stdout)} == kinds
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize wants relative paths: from the overlay up to / and down to the tree
    root = Path(*[".."] * (len(overlay.parts) - 1)) / ROOT.relative_to("/")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(root / "deploy")], "components": [str(root / "deploy" / "monitoring")]}))
    both = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert both.returncode == 0, both.stderr
    got = {d["kind"] for d in yaml.safe_load_all(both.stdout)}
    assert kinds | {"DaemonSet", "Deployment"} <= got
