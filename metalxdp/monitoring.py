"""deploy/monitoring read as a Prometheus would see it, without prometheus-operator: the scrape
configuration a ServiceMonitor / PodMonitor stands for, the PrometheusRule's groups as a rules
file, and the Grafana dashboard's queries with its variables filled in. All pure (dicts in, dicts
out); the lab test (tests/integration/test_prometheus_lab.py) feeds them the lab's real objects
and runs a real Prometheus on the result.

What the operator does and is reproduced here (a subset, refused loudly beyond it):

* ServiceMonitor: Services matching ``spec.selector.matchLabels`` in the namespaces of
  ``spec.namespaceSelector`` (``matchNames``, ``any``, default: the monitor's own); per entry
  of ``spec.endpoints``, the Service port named ``port``; its ``targetPort`` (a number, or a
  container port name) on every pod the Service selects that has an IP. ``job`` is the
  Service's name.
* PodMonitor: pods matching the selector; per ``podMetricsEndpoints`` entry, the container
  port named ``port``. ``job`` is ``<namespace>/<monitor name>``.
* Both: one scrape job per endpoint entry, named as the operator names it
  (``serviceMonitor/<ns>/<name>/<i>``), ``path``/``interval``/``scheme``, the target labels the
  operator adds (namespace, service, pod, container, endpoint) and the ``__meta_kubernetes_*``
  labels its service discovery would give, so the monitor's ``relabelings`` run unchanged
  (``instance`` <- ``__meta_kubernetes_pod_node_name`` for the agents).

``matchExpressions``, ``targetPort`` on a ServiceMonitor endpoint, TLS/auth settings and
``bearerTokenSecret`` are not modelled: ``MonitorError`` says so instead of producing a job that
silently differs from the operator's.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional

SERVICE_MONITOR, POD_MONITOR = "ServiceMonitor", "PodMonitor"
_SUPPORTED_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
                            "metricRelabelings", "honorLabels"}
# prometheus-operator's RelabelConfig (camelCase) -> Prometheus' relabel_config keys
_RELABEL_KEYS = {"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label",
                 "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}


class MonitorError(ValueError):
    """A monitor uses something this translation does not model."""


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _labels_match(match: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


def _selector(monitor: dict) -> dict:
    sel = (monitor.get("spec") or {}).get("selector") or {}
    if sel.get("matchExpressions"):
        raise MonitorError(f"{monitor.get('kind')} {_meta(monitor).get('name')}: matchExpressions not modelled")
    return sel.get("matchLabels") or {}


def _namespaces_match(monitor: dict, namespace: str) -> bool:
    ns_sel = (monitor.get("spec") or {}).get("namespaceSelector") or {}
    if ns_sel.get("any"):
        return True
    names = ns_sel.get("matchNames") or [_meta(monitor).get("namespace", "default")]
    return namespace in names


def _selected(monitor: dict, objs: Iterable[dict]) -> list[dict]:
    match = _selector(monitor)
    return sorted((o for o in objs
                   if _namespaces_match(monitor, _meta(o).get("namespace", "default"))
                   and _labels_match(match, _meta(o).get("labels") or {})),
                  key=lambda o: (_meta(o).get("namespace", ""), _meta(o).get("name", "")))


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _container_port(pod: dict, port: "str | int") -> Optional[tuple[str, str, int]]:
    """(container name, port name, number) of ``port`` (a name or a number) in ``pod``."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if (isinstance(port, int) and p.get("containerPort") == port) or p.get("name") == port:
                return c.get("name", ""), p.get("name", ""), int(p["containerPort"])
    if isinstance(port, int):
        return "", "", port       # a numeric targetPort need not be declared by the container
    return None


def _pod_meta(pod: dict, container: str, port_name: str) -> dict[str, str]:
    m = _meta(pod)
    return {"__meta_kubernetes_namespace": m.get("namespace", "default"),
            "__meta_kubernetes_pod_name": m.get("name", ""),
            "__meta_kubernetes_pod_node_name": (pod.get("spec") or {}).get("nodeName", ""),
            "__meta_kubernetes_pod_ip": (pod.get("status") or {}).get("podIP", ""),
            "__meta_kubernetes_pod_container_name": container,
            "__meta_kubernetes_pod_container_port_name": port_name,
            **{f"__meta_kubernetes_pod_label_{_sanitize(k)}": v for k, v in (m.get("labels") or {}).items()}}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabel(rules: Iterable[dict]) -> list[dict]:
    out = []
    for r in rules or []:
        unknown = set(r) - set(_RELABEL_KEYS)
        if unknown:
            raise MonitorError(f"relabeling keys not modelled: {sorted(unknown)}")
        out.append({_RELABEL_KEYS[k]: (v.lower() if k == "action" else v) for k, v in r.items()})
    return out


def _job(monitor: dict, index: int, endpoint: dict, groups: list[dict], interval: Optional[str]) -> dict:
    unknown = set(endpoint) - _SUPPORTED_ENDPOINT_KEYS
    if unknown:
        raise MonitorError(f"{monitor['kind']} {_meta(monitor)['name']}: endpoint keys not modelled: {sorted(unknown)}")
    kind = "serviceMonitor" if monitor["kind"] == SERVICE_MONITOR else "podMonitor"
    job: dict = {"job_name": f"{kind}/{_meta(monitor).get('namespace', 'default')}/{_meta(monitor)['name']}/{index}",
                 "metrics_path": endpoint.get("path") or "/metrics",
                 "scheme": endpoint.get("scheme") or "http",
                 "static_configs": groups}
    if interval or endpoint.get("interval"):
        job["scrape_interval"] = interval or endpoint["interval"]
    if endpoint.get("scrapeTimeout") and not interval:
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    if endpoint.get("honorLabels"):
        job["honor_labels"] = True
    if endpoint.get("relabelings"):
        job["relabel_configs"] = _relabel(endpoint["relabelings"])
    if endpoint.get("metricRelabelings"):
        job["metric_relabel_configs"] = _relabel(endpoint["metricRelabelings"])
    return job


def scrape_configs(monitors: Iterable[dict], services: Iterable[dict], pods: Iterable[dict], *,
                   interval: Optional[str] = None, reach: Mapping[str, str] = {}) -> list[dict]:
    """Prometheus ``scrape_configs`` for ``monitors`` (ServiceMonitor/PodMonitor objects) over the
    cluster's ``services`` and ``pods`` (API objects as dicts).

    interval: overrides every endpoint's ``interval`` (and drops its scrapeTimeout), e.g. "2s"
    for a test. reach: target address -> the address Prometheus really connects to, for a
    network Prometheus is not on (the lab's node namespaces, through loopback forwarders); the
    ``instance`` label keeps the pod's address unless the monitor relabels it, as in a cluster.
    """
    services, pods = list(services), list(pods)
    jobs = []
    for mon in monitors:
        spec = mon.get("spec") or {}
        if mon.get("kind") == SERVICE_MONITOR:
            endpoints, targets = spec.get("endpoints") or [], _service_targets
        elif mon.get("kind") == POD_MONITOR:
            endpoints, targets = spec.get("podMetricsEndpoints") or [], _pod_targets
        else:
            raise MonitorError(f"not a ServiceMonitor or PodMonitor: {mon.get('kind')}")
        for i, ep in enumerate(endpoints):
            # instance: the pod's own address (the operator's default), not the forwarder's
            groups = [{"targets": [reach.get(addr, addr)], "labels": {"instance": addr, **labels}}
                      for addr, labels in targets(mon, ep, services, pods)]
            jobs.append(_job(mon, i, ep, groups, interval))
    return jobs


def _service_targets(mon: dict, ep: dict, services: list[dict], pods: list[dict]):
    if "targetPort" in ep:
        raise MonitorError(f"ServiceMonitor {_meta(mon)['name']}: endpoint targetPort not modelled (use port)")
    for svc in _selected(mon, services):
        ns = _meta(svc).get("namespace", "default")
        sport = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("name") == ep.get("port")), None)
        if sport is None:
            continue
        target_port = sport.get("targetPort", sport.get("port"))
        selector = (svc.get("spec") or {}).get("selector") or {}
        if not selector:
            continue       # a Service without selector has hand-made endpoints: not modelled
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or _meta(pod).get("namespace", "default") != ns or \
                    not _labels_match(selector, _meta(pod).get("labels") or {}):
                continue
            cp = _container_port(pod, target_port)
            if cp is None:
                continue
            container, port_name, number = cp
            yield _address(ip, number), {
                "job": _meta(svc)["name"], "namespace": ns, "service": _meta(svc)["name"],
                "pod": _meta(pod)["name"], "container": container, "endpoint": ep.get("port", ""),
                **_pod_meta(pod, container, port_name),
                "__meta_kubernetes_service_name": _meta(svc)["name"],
                "__meta_kubernetes_endpoint_port_name": sport.get("name", "")}


def _pod_targets(mon: dict, ep: dict, services: list[dict], pods: list[dict]):
    if "port" not in ep:
        raise MonitorError(f"PodMonitor {_meta(mon)['name']}: an endpoint without a port name is not modelled")
    for pod in _selected(mon, pods):
        ip = (pod.get("status") or {}).get("podIP")
        cp = _container_port(pod, ep["port"]) if ip else None
        if cp is None or not cp[1]:
            continue
        container, port_name, number = cp
        ns = _meta(pod).get("namespace", "default")
        yield _address(ip, number), {
            "job": f"{_meta(mon).get('namespace', 'default')}/{_meta(mon)['name']}", "namespace": ns,
            "pod": _meta(pod)["name"], "container": container, "endpoint": port_name,
            **_pod_meta(pod, container, port_name)}


def rule_file(prometheus_rule: dict) -> dict:
    """A PrometheusRule's groups as a Prometheus rules file."""
    if prometheus_rule.get("kind") != "PrometheusRule":
        raise MonitorError(f"not a PrometheusRule: {prometheus_rule.get('kind')}")
    return {"groups": (prometheus_rule.get("spec") or {}).get("groups") or []}


# ---- the Grafana dashboard -----------------------------------------------------------------

# Grafana's built-in interval variables, at values a 2 s scrape interval can answer
GRAFANA_BUILTINS = {"__rate_interval": "30s", "__interval": "15s", "__range": "5m"}


def grafana_expr(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana's ``$name``, ``${name}``, ``${name:fmt}`` and ``[[name]]`` replaced
    from ``variables`` (template variables and built-ins alike); an unknown variable is left as
    it is, so the query fails to parse instead of silently matching something else."""
    def sub(m: re.Match) -> str:
        name = m.group("b") or m.group("s") or m.group("o")
        return variables.get(name, m.group(0))
    return re.sub(r"\$\{(?P<b>\w+)(?::\w+)?\}|\[\[(?P<o>\w+)\]\]|\$(?P<s>\w+)", sub, expr)


def dashboard_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus query of every panel, rows' nested panels
    included."""
    out = []

    def walk(panels):
        for p in panels or []:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((p.get("title", ""), t.get("refId", ""), t["expr"]))
            walk(p.get("panels"))
    walk(dashboard.get("panels"))
    return out


def template_variables(dashboard: dict, value: str = ".*") -> dict[str, str]:
    """Every query/custom template variable set to ``value`` (what "All" means with
    ``allValue: .*``), plus Grafana's built-in intervals."""
    names = {v["name"]: value for v in (dashboard.get("templating") or {}).get("list") or []
             if v.get("type") in ("query", "custom", "textbox")}
    return {**GRAFANA_BUILTINS, **names}
