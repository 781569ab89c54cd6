"""deploy/monitoring against a real Prometheus scraping the network-namespace lab (issue 18,
item 4): the real controller and agents (BGP with BFD towards the lab's FRR), Debian's
``prometheus`` binary, its scrape jobs generated from the shipped ServiceMonitor and PodMonitor
(metalxdp.monitoring, as prometheus-operator would generate them) and its rules from the shipped
PrometheusRule. Asserted over Prometheus' HTTP API: every target up, every query of the Grafana
dashboard returning data, and MetalLBAddressPoolExhausted firing for a pool filled to the brim.

What stands in for the cluster Prometheus would run in: the lab has no kubelet, so the agents and
the controller are processes, and the Pod objects the monitors select (labels, container port
``monitoring``, node, IP) are created in the lab's API server the way the lab creates its backends'
Pods; the Services are deploy/monitoring/services.yaml, applied as shipped. The node namespaces are
not routable from the host, so each agent's :7472 is reached through a loopback forwarder
(``metalxdp.rig.forward --into-netns``); the generated jobs keep the pods' addresses as targets'
``instance`` until the PodMonitor's relabeling replaces it with the node's name.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from metalxdp.lab import tools as lt
from metalxdp.lab.cluster import kubectl
from metalxdp.lab.spec import NAMESPACE, LabSpec
from metalxdp.monitoring import dashboard_queries, grafana_expr, rule_file, scrape_configs, template_variables
from metalxdp.rig.procs import free_port, start, stop_pid, wait_for

from .test_bgp_lab import NODE4, NODE6, NODES, established_lab, metallb, wait_equal
from .test_bgp_lab import made  # noqa: F401 - the per-test Cleanup fixture, over this module's lab
from .test_bfd_lab import bfd_up

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
DASHBOARD = MON / "dashboards" / "metalxdp.json"
SCRAPE = "2s"
CONTROLLER_POD_IP = "198.51.100.10"   # the controller's Pod object; Prometheus reaches 127.0.0.1
SPEAKER = {"app": "metallb", "component": "speaker"}
CONTROLLER = {"app": "metallb", "component": "controller"}


# ---- Prometheus over HTTP ------------------------------------------------------------------

class Prometheus:
    def __init__(self, url: str):
        self.url = url
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def get(self, path: str, **params) -> dict:
        q = f"?{urllib.parse.urlencode(params)}" if params else ""
        with self._open(f"{self.url}{path}{q}", timeout=10) as r:
            body = json.loads(r.read())
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def targets(self) -> list[dict]:
        return self.get("/api/v1/targets", state="active")["activeTargets"]

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts")["alerts"]


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    assert path, "prometheus not found: Debian's `prometheus` package (setup.sh / `make setup` installs it)"
    return path


def monitoring_docs() -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for f in sorted(MON.glob("*.yaml"))
            if f.name != "kustomization.yaml" for d in yaml.safe_load_all(f.read_text())}


def pod_object(name: str, labels: dict, container: str, port: int, node: str = "", host_network: bool = False) -> dict:
    spec = {"containers": [{"name": container, "image": "lab/metalxdp",
                            "ports": [{"name": "monitoring", "containerPort": port}]}]}
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": spec}


def create_ready_pod(lab, obj: dict, ip: str) -> None:
    """A Pod object standing for a lab process (as Lab.add_backend makes its backends'): Running,
    Ready, with the process's address."""
    kc = lab.kubeconfig()
    kubectl(kc, "apply", "-f", "-", input_=json.dumps(obj))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                         "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                                        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]}}
    kubectl(kc, "patch", "pod", obj["metadata"]["name"], "-n", NAMESPACE, "--subresource=status",
            "--type=merge", "-p", json.dumps(status))


def items(lab, kind: str) -> list[dict]:
    return json.loads(kubectl(lab.kubeconfig(), "get", kind, "-n", NAMESPACE, "-o", "json").stdout)["items"]


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    spec = LabSpec(bfd_profile="lab-bfd", controller_metrics_port=free_port())
    with established_lab(tmp_path_factory, "prom", spec, timeout=90) as lab:
        wait_equal("6 BFD sessions up", lambda: bfd_up(lab), set(NODE4.values()) | set(NODE6.values()), 60)
        yield lab


@pytest.fixture(scope="module")
def prom(lab, tmp_path_factory):
    """A real Prometheus scraping the lab as the shipped monitors say, with the shipped rules."""
    binary = prometheus_binary()
    work = tmp_path_factory.mktemp("prometheus")
    logs = work / "logs"
    procs = []
    try:
        kc = lab.kubeconfig()
        kubectl(kc, "apply", "-f", str(MON / "services.yaml"))
        ctl_port = lab.load()["spec"]["controller_metrics_port"]
        assert ctl_port, "the lab's controller serves no metrics (LabSpec.controller_metrics_port)"
        create_ready_pod(lab, pod_object("controller-lab", CONTROLLER, "controller", ctl_port), CONTROLLER_POD_IP)
        reach = {f"{CONTROLLER_POD_IP}:{ctl_port}": f"127.0.0.1:{ctl_port}"}
        for n in NODES:
            create_ready_pod(lab, pod_object(f"speaker-{n}", SPEAKER, "speaker", 7472, node=n, host_network=True),
                             NODE4[n])
            port = free_port()
            fwd = start(f"prom-forward-{n}", [sys.executable, "-m", "metalxdp.rig.forward", "--into-netns",
                                              lab.host(n).netns, "--port", str(port), "--upstream-port", "7472"], logs)
            procs.append(fwd)
            wait_for(f"the forwarder to {n}'s agent", lambda: "forwarding" in fwd.log_path.read_text(), 15, proc=fwd)
            reach[f"{NODE4[n]}:7472"] = f"127.0.0.1:{port}"

        docs = monitoring_docs()
        jobs = scrape_configs([docs["ServiceMonitor/controller"], docs["PodMonitor/speaker"]],
                              items(lab, "services"), items(lab, "pods"), interval=SCRAPE, reach=reach)
        assert [len(j["static_configs"]) for j in jobs] == [1, len(NODES)], jobs
        (work / "rules.yaml").write_text(yaml.safe_dump(rule_file(docs["PrometheusRule/metalxdp"])))
        (work / "prometheus.yaml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": "1s"},
            "rule_files": [str(work / "rules.yaml")], "scrape_configs": jobs}))
        promtool = shutil.which("promtool")
        assert promtool, "promtool not found (Debian's prometheus package)"
        check = subprocess.run([promtool, "check", "config", str(work / "prometheus.yaml")],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"promtool check config: {check.stdout}{check.stderr}"

        port = free_port()
        p = start("prometheus", [binary, f"--config.file={work / 'prometheus.yaml'}",
                                 f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--storage.tsdb.retention.time=1h"], logs)
        procs.append(p)
        api = Prometheus(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            try:
                with api._open(f"{api.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for("Prometheus /-/ready", ready, 60, proc=p)
        yield api
    finally:
        for proc in reversed(procs):
            stop_pid(proc.pid)


def wait_targets_up(prom: Prometheus, timeout: float = 60) -> list[dict]:
    last: list = []

    def all_up() -> bool:
        nonlocal last
        last = prom.targets()
        return len(last) == 1 + len(NODES) and all(t["health"] == "up" for t in last)
    try:
        wait_for("every scrape target up", all_up, timeout, interval=0.5)
    except Exception as e:
        raise AssertionError(f"{e}: {[(t['labels'], t['health'], t.get('lastError')) for t in last]}") from None
    return last


# ---- tests -----------------------------------------------------------------------------------

def test_every_target_is_up_with_node_names_and_the_rules_loaded(prom):
    targets = wait_targets_up(prom)
    by_job = {}
    for t in targets:
        by_job.setdefault(t["labels"]["job"], set()).add(t["labels"]["instance"])
    # the operator's job labels: the Service's name, and <namespace>/<PodMonitor name>
    assert by_job[f"{NAMESPACE}/speaker"] == set(NODES)       # the PodMonitor's relabeling
    assert set(by_job) == {"controller-monitor", f"{NAMESPACE}/speaker"}
    assert {t["scrapeInterval"] for t in targets} == {SCRAPE}
    rules = {r["name"] for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]}
    shipped = {r["alert"] for g in rule_file(monitoring_docs()["PrometheusRule/metalxdp"])["groups"] for r in g["rules"]}
    assert rules == shipped


def test_every_dashboard_query_returns_data(lab, prom, made):  # noqa: F811 - pytest fixture
    """An L2 and a BGP Service with backends, traffic to the L2 VIP, and a failover (the
    announcing agent restarted: another node gains the VIP); then every panel query of the
    dashboard, variables set to "All", must return at least one series."""
    made.backend("prom-web", "node2", {"app": "prom-web"})
    made.service("prom-l2", selector={"app": "prom-web"})
    made.service("prom-bgp", pool="lab-bgp", selector={"app": "prom-web"})
    l2 = lt.wait_service_ips(lab, "prom-l2")[0]
    bgp = lt.wait_service_ips(lab, "prom-bgp")[0]
    for _ in range(5):
        lt.wait_curl(lab, l2)
        lt.wait_curl(lab, bgp)
    wait_for(f"packets to {l2} counted by XDP", lambda: any(
        float(s["value"][1]) > 0 for s in prom.query(f'metalxdp_vip_packets_total{{ip="{l2}"}}')), 30, interval=0.5)

    wait_for(f"a node answering for {l2}", lambda: lt.announcing_node(lab, l2) is not None, 30)
    owner = lt.announcing_node(lab, l2)
    lab.restart_agent(owner)
    gained = f'metalxdp_speaker_announcement_changes_total{{ip="{l2}", change="gained", instance!="{owner}"}}'
    wait_for(f"another node than {owner} to gain {l2} (failover seen by Prometheus)",
             lambda: any(float(s["value"][1]) >= 1 for s in prom.query(gained)), 60, interval=0.5)
    wait_targets_up(prom)
    lt.wait_curl(lab, l2)

    dash = json.loads(DASHBOARD.read_text())
    variables = template_variables(dash)
    pending = {(title, ref): grafana_expr(e, variables) for title, ref, e in dashboard_queries(dash)}
    for v in dash["templating"]["list"]:
        if v["type"] == "query":     # label_values(metric, label): the metric must have series
            metric = v["query"]["query"].removeprefix("label_values(").split(",")[0]
            pending[(f"variable {v['name']}", "")] = metric
    deadline = time.monotonic() + 90     # rate windows of 30s need a few scrapes after the restart
    while pending and time.monotonic() < deadline:
        for key, expr in list(pending.items()):
            if prom.query(expr):
                del pending[key]
        time.sleep(1)
    assert not pending, "dashboard queries without any series:\n" + "\n".join(
        f"  {t} [{r}]: {e}" for (t, r), e in pending.items())


def test_a_full_pool_fires_metallb_address_pool_exhausted(lab, prom, made):  # noqa: F811
    """Two Services take both addresses of a two-address pool; the shipped rule (``for: 1m``,
    unchanged) must fire in the real Prometheus."""
    made.obj(metallb("IPAddressPool", "prom-full", {"addresses": ["198.51.100.240-198.51.100.241"],
                                                    "autoAssign": False}))
    for name in ("prom-full-a", "prom-full-b"):
        made.service(name, pool="prom-full", selector={"app": "nothing"})
    assert sorted(lt.wait_service_ips(lab, "prom-full-a") + lt.wait_service_ips(lab, "prom-full-b")) == [
        "198.51.100.240", "198.51.100.241"]
    wait_for("the controller's pool gauges at 2 of 2", lambda: [
        (s["metric"].get("pool"), s["value"][1]) for s in prom.query(
            'metallb_allocator_addresses_in_use_total{pool="prom-full"} == on(pool) '
            'metallb_allocator_addresses_total{pool="prom-full"}')] == [("prom-full", "2")], 30, interval=0.5)
    states: list = []

    def firing() -> bool:
        nonlocal states
        states = [(a["labels"]["alertname"], a["state"]) for a in prom.alerts()
                  if a["labels"].get("pool") == "prom-full"]
        return ("MetalLBAddressPoolExhausted", "firing") in states
    try:
        wait_for("MetalLBAddressPoolExhausted firing for pool prom-full", firing, 150, interval=1)
    except Exception as e:
        raise AssertionError(f"{e}; alerts for the pool: {states}") from None
    assert ("MetalLBAddressPoolUsage95Percent", "firing") in states
