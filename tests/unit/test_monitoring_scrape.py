"""metalxdp.monitoring: the scrape jobs deploy/monitoring's ServiceMonitor and PodMonitor stand
for (as prometheus-operator would generate them), the rules file of the PrometheusRule, and the
Grafana variables' substitution. Tables over small objects, then the shipped monitors over lab-like
objects; the real Prometheus runs the result in tests/integration/test_prometheus_lab.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metalxdp.monitoring import (MonitorError, dashboard_queries, grafana_expr, rule_file,
                                 scrape_configs, template_variables)

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
NS = "metallb-system"


def pod(name, labels, ip, node="", ports=(("monitoring", 7472),), ns=NS, container="speaker"):
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [
                {"name": container, "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
            "status": {"podIP": ip} if ip else {}}


def svc(name, labels, selector, ports, ns=NS):
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": selector, "ports": [dict(p) for p in ports]}}


def smon(match, port="monitoring", ns_names=None, **ep):
    spec = {"selector": {"matchLabels": match}, "endpoints": [{"port": port, **ep}]}
    if ns_names is not None:
        spec["namespaceSelector"] = {"matchNames": ns_names}
    return {"kind": "ServiceMonitor", "metadata": {"name": "m", "namespace": NS}, "spec": spec}


def pmon(match, port="monitoring", **ep):
    return {"kind": "PodMonitor", "metadata": {"name": "p", "namespace": NS},
            "spec": {"selector": {"matchLabels": match}, "podMetricsEndpoints": [{"port": port, **ep}]}}


CTL = {"app": "metallb", "component": "controller"}
SPK = {"app": "metallb", "component": "speaker"}
CTL_POD = pod("controller-1", CTL, "198.51.100.5", ports=(("monitoring", 9120), ("webhook", 9443)),
              container="controller")
SPK_PODS = [pod("speaker-a", SPK, "192.0.2.11", "node1"), pod("speaker-b", SPK, "192.0.2.12", "node2"),
            pod("speaker-pending", SPK, None, "node3")]
CTL_SVC = svc("controller-monitor", CTL, CTL, [{"name": "monitoring", "port": 9120, "targetPort": "monitoring"}])

# (description, monitor, services, pods, {target address: selected labels} or the error)
TARGETS = [
    ("service port name -> targetPort name -> the pod's container port",
     smon(CTL), [CTL_SVC], [CTL_POD, *SPK_PODS],
     {"198.51.100.5:9120": {"job": "controller-monitor", "service": "controller-monitor", "pod": "controller-1",
                            "endpoint": "monitoring", "container": "controller", "namespace": NS}}),
    ("numeric targetPort", smon(CTL),
     [svc("c", CTL, CTL, [{"name": "monitoring", "port": 80, "targetPort": 9120}])], [CTL_POD],
     {"198.51.100.5:9120": {"job": "c"}}),
    ("no targetPort: the port itself", smon(CTL),
     [svc("c", CTL, CTL, [{"name": "monitoring", "port": 9120}])], [CTL_POD], {"198.51.100.5:9120": {}}),
    ("service labels do not match: nothing", smon({"app": "other"}), [CTL_SVC], [CTL_POD], {}),
    ("other namespace: not selected by default", smon(CTL), [svc("c", CTL, CTL, [{"name": "monitoring", "port": 1}], ns="x")],
     [CTL_POD], {}),
    ("namespaceSelector.matchNames reaches it", smon(CTL, ns_names=["x"]),
     [svc("c", CTL, CTL, [{"name": "monitoring", "port": 9120}], ns="x")],
     [pod("c1", CTL, "198.51.100.6", ns="x", ports=(("monitoring", 9120),))], {"198.51.100.6:9120": {"namespace": "x"}}),
    ("service port of another name: nothing", smon(CTL, port="metrics"), [CTL_SVC], [CTL_POD], {}),
    ("pod monitor: every matching pod with an IP, job namespace/name", pmon(SPK), [], [CTL_POD, *SPK_PODS],
     {"192.0.2.11:7472": {"job": f"{NS}/p", "pod": "speaker-a", "endpoint": "monitoring"},
      "192.0.2.12:7472": {"pod": "speaker-b", "__meta_kubernetes_pod_node_name": "node2"}}),
    ("pod monitor: IPv6 pod address in brackets", pmon(SPK), [], [pod("s6", SPK, "2001:db8:0:1::11", "node1")],
     {"[2001:db8:0:1::11]:7472": {}}),
    ("pod monitor: port name the container lacks", pmon(SPK, port="metrics"), [], SPK_PODS, {}),
    ("matchExpressions refused", {"kind": "PodMonitor", "metadata": {"name": "p", "namespace": NS}, "spec": {
        "selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
        "podMetricsEndpoints": [{"port": "monitoring"}]}}, [], SPK_PODS, MonitorError),
    ("TLS settings refused", pmon(SPK, tlsConfig={"insecureSkipVerify": True}), [], SPK_PODS, MonitorError),
]


@pytest.mark.parametrize("desc,mon,services,pods,want", TARGETS, ids=[r[0] for r in TARGETS])
def test_targets(desc, mon, services, pods, want):
    if want is MonitorError:
        with pytest.raises(MonitorError):
            scrape_configs([mon], services, pods)
        return
    [job] = scrape_configs([mon], services, pods)
    got = {g["targets"][0]: g["labels"] for g in job["static_configs"]}
    assert set(got) == set(want)
    for addr, labels in want.items():
        assert got[addr]["instance"] == addr          # the operator's default instance
        assert labels.items() <= got[addr].items(), (addr, got[addr])


JOBS = [  # (description, monitor, interval override, expected job keys)
    ("operator's job name, defaults", smon(CTL), None,
     {"job_name": f"serviceMonitor/{NS}/m/0", "metrics_path": "/metrics", "scheme": "http"}),
    ("path and interval from the endpoint", smon(CTL, path="/m", interval="30s"), None,
     {"metrics_path": "/m", "scrape_interval": "30s"}),
    ("a test's interval overrides the monitor's and drops its timeout",
     smon(CTL, interval="30s", scrapeTimeout="10s"), "2s", {"scrape_interval": "2s"}),
    ("relabelings translated", pmon(SPK, relabelings=[{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                        "targetLabel": "instance", "action": "Replace"}]), None,
     {"job_name": f"podMonitor/{NS}/p/0", "relabel_configs": [
         {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "instance", "action": "replace"}]}),
]


@pytest.mark.parametrize("desc,mon,interval,want", JOBS, ids=[r[0] for r in JOBS])
def test_job_settings(desc, mon, interval, want):
    [job] = scrape_configs([mon], [CTL_SVC], [CTL_POD, *SPK_PODS], interval=interval)
    assert want.items() <= job.items(), job
    if interval:
        assert "scrape_timeout" not in job


def test_reach_rewrites_the_address_not_the_instance():
    [job] = scrape_configs([pmon(SPK)], [], SPK_PODS[:1], reach={"192.0.2.11:7472": "127.0.0.1:40001"})
    [group] = job["static_configs"]
    assert group["targets"] == ["127.0.0.1:40001"] and group["labels"]["instance"] == "192.0.2.11:7472"


def test_the_shipped_monitors_over_lab_objects():
    """deploy/monitoring's own ServiceMonitor, PodMonitor and Services: one controller job
    through the controller-monitor Service, one agent job whose relabeling names nodes."""
    docs = {d["kind"] + "/" + d["metadata"]["name"]: d for f in MON.glob("*.yaml") if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text())}
    monitors = [docs["ServiceMonitor/controller"], docs["PodMonitor/speaker"]]
    services = [d for k, d in docs.items() if k.startswith("Service/")]
    ctl, spk = scrape_configs(monitors, services, [CTL_POD, *SPK_PODS], interval="2s")
    assert [g["targets"] for g in ctl["static_configs"]] == [["198.51.100.5:9120"]]
    assert ctl["static_configs"][0]["labels"]["service"] == "controller-monitor"
    assert [g["targets"] for g in spk["static_configs"]] == [["192.0.2.11:7472"], ["192.0.2.12:7472"]]
    assert spk["relabel_configs"] == [{"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "instance"}]
    assert {ctl["scrape_interval"], spk["scrape_interval"]} == {"2s"}


def test_rule_file_is_the_groups():
    cr = yaml.safe_load((MON / "prometheusrule.yaml").read_text())
    assert rule_file(cr) == {"groups": cr["spec"]["groups"]}
    with pytest.raises(MonitorError):
        rule_file({"kind": "ConfigMap"})


SUBST = [  # (description, expr, variables, result)
    ("$name", 'up{instance=~"$node"}', {"node": ".*"}, 'up{instance=~".*"}'),
    ("${name} and ${name:regex}", 'a{x=~"${node}",y=~"${vip:regex}"}', {"node": "n", "vip": "v"}, 'a{x=~"n",y=~"v"}'),
    ("[[name]]", 'a{x=~"[[node]]"}', {"node": "n"}, 'a{x=~"n"}'),
    ("built-in intervals", "rate(x[$__rate_interval]) + changes(y[$__range])",
     {"__rate_interval": "30s", "__range": "5m"}, "rate(x[30s]) + changes(y[5m])"),
    ("a longer name is not a shorter one's prefix", "$nodes $node", {"node": "n"}, "$nodes n"),
    ("unknown stays (the query then fails loudly)", "rate(x[$__foo])", {}, "rate(x[$__foo])"),
]


@pytest.mark.parametrize("desc,expr,variables,want", SUBST, ids=[r[0] for r in SUBST])
def test_grafana_expr(desc, expr, variables, want):
    assert grafana_expr(expr, variables) == want


def test_dashboard_queries_walk_rows():
    dash = {"templating": {"list": [{"name": "datasource", "type": "datasource"}, {"name": "node", "type": "query"}]},
            "panels": [{"title": "a", "targets": [{"refId": "A", "expr": "up"}]},
                       {"type": "row", "title": "r", "panels": [{"title": "b", "targets": [
                           {"refId": "A", "expr": "x"}, {"refId": "B", "expr": ""}]}]}]}
    assert dashboard_queries(dash) == [("a", "A", "up"), ("b", "A", "x")]
    assert template_variables(dash)["node"] == ".*" and "datasource" not in template_variables(dash)
