"""The Grafana dashboard (deploy/monitoring/dashboards/metalxdp.json): a plain dashboard model
whose data source is a ``${datasource}`` variable, every query valid PromQL (the real promtool
parses them, with Grafana's variables filled in) over metrics the agent and controller really
export, and shipped as a ConfigMap for Grafana's sidecar. That every query returns data is the
lab test's job (tests/integration/test_prometheus_lab.py)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from metalxdp.monitoring import dashboard_queries, grafana_expr, template_variables

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "monitoring" / "dashboards" / "metalxdp.json"
SOURCES = [*(ROOT / "agent").rglob("*.py"), *(ROOT / "controller").rglob("*.py"), ROOT / "metalxdp" / "health.py"]
METRIC = re.compile(r"\b(?:metallb|metalxdp)_[a-z0-9_]+")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def exported_names() -> set[str]:
    """Every metallb_*/metalxdp_* name in a string literal of the code, with the ``_total`` the
    Python client appends to counters (and families declared without it)."""
    names = set()
    for f in SOURCES:
        for lit in re.findall(r'"((?:metallb|metalxdp)_[a-z0-9_]+)"', f.read_text()):
            names |= {lit, lit + "_total"}
    return names


def test_datasource_is_a_prometheus_variable_everywhere():
    d = dashboard()
    [ds] = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert d["uid"] == "metalxdp" and d["panels"]
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}" and v["allValue"] == ".*"


def test_the_required_panels_exist():
    exprs = " ".join(e for _t, _r, e in dashboard_queries(dashboard()))
    for name in ("metallb_speaker_announced", "metallb_allocator_addresses_in_use_total",
                 "metallb_allocator_addresses_total", "metalxdp_vip_packets_total", "metalxdp_vip_bytes_total",
                 "metallb_bgp_session_up", "metallb_bfd_session_up", "metalxdp_speaker_announcement_changes_total",
                 "metalxdp_controller_leader_bool", "metalxdp_xdp_attached", "metalxdp_xdp_liveness_gate_open"):
        assert name in exprs, name


def test_every_query_uses_exported_metrics():
    have = exported_names()
    d = dashboard()
    queries = [e for _t, _r, e in dashboard_queries(d)] + [
        v["query"]["query"] for v in d["templating"]["list"] if v["type"] == "query"]
    for e in queries:
        missing = set(METRIC.findall(e)) - have
        assert not missing, (e, missing)


def test_every_query_parses(tmp_path):
    """Each query, variables filled in as the lab test fills them, as a recording rule:
    ``promtool check rules`` runs Prometheus' own parser on it."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: Debian's prometheus package (`make setup`)"
    d = dashboard()
    variables = template_variables(d)
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_expr(e, variables)}
             for i, (_t, _r, e) in enumerate(dashboard_queries(d))]
    assert all("$" not in r["expr"] for r in rules), [r["expr"] for r in rules if "$" in r["expr"]]
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", "q.yaml"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shipped_as_a_grafana_sidecar_configmap():
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found (make setup puts the pinned one in /var/cache/metalxdp/bin)"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "monitoring")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [cm] = [d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["name"] == "metalxdp-grafana-dashboard"     # no hash suffix: one stable object
    assert json.loads(cm["data"]["metalxdp.json"]) == dashboard()
    assert len(out.stdout) < 262144   # kubectl apply's last-applied annotation limit
