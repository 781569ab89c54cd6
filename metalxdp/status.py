"""``metalxdp status``: one cluster-wide view, from the API alone, of what MetalLB users ask first —
which Services have which IPs from which pool, which node announces each (per protocol), and
for a Service that is not announced, the reason each agent gave; pools with their usage; the
configuration's state.

Sources (all of them objects MetalLB's controller and speakers write too, so the view also reads
a cluster where both ran):

* Services of type LoadBalancer: ``status.loadBalancer.ingress`` and the controller's annotation
  ``metallb.io/ip-allocated-from-pool``;
* ServiceL2Status / ServiceBGPStatus: who announces now (the agents keep them current);
* Events about Services: ``nodeAssigned`` and the agents' "not announcing ..." events
  (``agent.reasons``), the controller's ``AllocationFailed`` & co. An agent posts an Event
  only when its decision changes; the newest per (node, protocol) is its current decision;
* IPAddressPool status (assigned/available per family), ConfigurationState.

``build`` turns the listed objects into the document ``--json`` prints; ``format_status``
renders it. Both pure; the command (``metalxdp.status_cli``) does the reading.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Optional

from agent.reasons import ANNOUNCED, reason_from_event
from agent.status_report import text_table
from metalxdp.service import POOL_ANNOTATION, annotation, ingress_ips

PROTOCOLS = ("layer2", "bgp")
# the controller's Warning events about a Service (controller/reconcile.py; MetalLB's names)
CONTROLLER_COMPONENT = "metallb-controller"
SPEAKER_COMPONENT = "metallb-speaker"
NO_RECENT_EVENT = ("no agent reported a reason in the Events still kept (the API server keeps them "
                   "1 h by default): run `metalxdp agent status` on the nodes")


def _key(obj: Mapping) -> str:
    m = obj.get("metadata") or {}
    return f"{m.get('namespace')}/{m.get('name')}"


def _event_order(ev: Mapping) -> tuple:
    """Newest last: lastTimestamp (seconds), then resourceVersion (etcd's revision: monotonic
    in practice; events posted within one second keep their order)."""
    rv = (ev.get("metadata") or {}).get("resourceVersion") or "0"
    return (ev.get("lastTimestamp") or ev.get("eventTime") or (ev.get("metadata") or {}).get("creationTimestamp") or "",
            int(rv) if str(rv).isdigit() else 0)


def _status_announcers(objs: Iterable[Mapping], field: str) -> dict[str, dict[str, list[str]]]:
    """ServiceL2Status/ServiceBGPStatus objects -> "ns/name" -> node -> interfaces (L2) or peers (BGP)."""
    out: dict[str, dict[str, list[str]]] = {}
    for o in objs:
        st = o.get("status") or {}
        node, name, ns = st.get("node"), st.get("serviceName"), st.get("serviceNamespace")
        if not (node and name and ns):
            continue
        vals = [(i.get("name") if isinstance(i, Mapping) else str(i)) for i in (st.get(field) or [])]
        out.setdefault(f"{ns}/{name}", {})[node] = sorted(v for v in vals if v)
    return out


def _pool_doc(pool: Mapping) -> dict:
    spec, st = pool.get("spec") or {}, pool.get("status") or {}
    assigned = int(st.get("assignedIPv4") or 0) + int(st.get("assignedIPv6") or 0)
    available = int(st.get("availableIPv4") or 0) + int(st.get("availableIPv6") or 0)
    total = assigned + available
    return {"name": (pool.get("metadata") or {}).get("name"), "addresses": list(spec.get("addresses") or []),
            "autoAssign": spec.get("autoAssign", True) is not False,
            "assignedIPv4": int(st.get("assignedIPv4") or 0), "availableIPv4": int(st.get("availableIPv4") or 0),
            "assignedIPv6": int(st.get("assignedIPv6") or 0), "availableIPv6": int(st.get("availableIPv6") or 0),
            "usedPercent": round(100.0 * assigned / total, 1) if total else None,
            "statusWritten": bool(st)}


def build(services: Iterable[Mapping], l2_statuses: Iterable[Mapping] = (), bgp_statuses: Iterable[Mapping] = (),
          events: Iterable[Mapping] = (), pools: Iterable[Mapping] = (), config_state: Optional[Mapping] = None,
          leader: Optional[str] = None, lb_class: Optional[str] = None, now: Optional[float] = None) -> dict:
    """The document ``metalxdp status --json`` prints (see the module docstring for the sources)::

        {"time", "leader", "config": {"result", "errorSummary"} | None,
         "pools": [{"name", "addresses", "autoAssign", "assigned/availableIPv4/6", "usedPercent"}],
         "services": [{"service", "ips", "pool", "allocated", "ignored", "controller": {"reason", "message"} | None,
                       "layer2": {"announcers": {node: [interfaces]}, "notAnnounced": [{"node", "reason", "detail"}]},
                       "bgp": {...peers...}, "announced": bool, "why": str}]}

    ``why`` is empty for an announced Service, else the one-line answer to "why not"."""
    l2 = _status_announcers(l2_statuses, "interfaces")
    bgp = _status_announcers(bgp_statuses, "peers")
    # newest decision per (service, node, protocol), and the controller's newest event per service
    decisions: dict[tuple[str, str, str], tuple[str, str]] = {}
    ctl: dict[str, dict] = {}
    for ev in sorted(events, key=_event_order):
        inv = ev.get("involvedObject") or {}
        if inv.get("kind") != "Service":
            continue
        svc = f"{inv.get('namespace')}/{inv.get('name')}"
        comp = (ev.get("source") or {}).get("component") or ev.get("reportingComponent") or ""
        got = reason_from_event(ev.get("reason") or "", ev.get("message") or "")
        if got is not None:
            node, proto, reason, detail = got
            decisions[(svc, node, proto)] = (reason, detail)
        elif comp == CONTROLLER_COMPONENT or ev.get("reason") in ("AllocationFailed", "IPAllocated"):
            ctl[svc] = {"type": ev.get("type"), "reason": ev.get("reason"), "message": ev.get("message")}

    out_svcs = []
    for s in sorted(services, key=_key):
        spec = s.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        key = _key(s)
        cls = spec.get("loadBalancerClass")
        ips = ingress_ips(s)
        doc: dict[str, Any] = {"service": key, "ips": ips, "pool": annotation(s, POOL_ANNOTATION),
                               "allocated": bool(ips), "ignored": None, "controller": None}
        if cls and cls != lb_class:
            doc["ignored"] = f"loadBalancerClass {cls!r} is not this controller's"
        last = ctl.get(key)
        if last and (not ips or last.get("type") == "Warning"):
            doc["controller"] = {k: last[k] for k in ("reason", "message")}
        for proto, who in (("layer2", l2), ("bgp", bgp)):
            announcers = who.get(key, {})
            reasons = [{"node": n, "reason": r, "detail": d}
                       for (sk, n, p), (r, d) in sorted(decisions.items())
                       if sk == key and p == proto and r != ANNOUNCED and n not in announcers]
            doc[proto] = {"announcers": dict(sorted(announcers.items())), "notAnnounced": reasons}
        doc["announced"] = bool(doc["layer2"]["announcers"] or doc["bgp"]["announcers"])
        doc["why"] = _why(doc)
        out_svcs.append(doc)
    return {"time": time.time() if now is None else now, "leader": leader,
            "config": ({"result": (config_state.get("status") or {}).get("result"),
                        "errorSummary": (config_state.get("status") or {}).get("errorSummary")}
                       if config_state else None),
            "pools": sorted((_pool_doc(p) for p in pools), key=lambda p: p["name"] or ""),
            "services": out_svcs}


def _why(doc: Mapping) -> str:
    """"" when announced; else the first thing to look at."""
    if doc["announced"]:
        return ""
    if doc["ignored"]:
        return doc["ignored"]
    if not doc["allocated"]:
        c = doc.get("controller")
        return f"no IP: {c['reason']}: {c['message']}" if c else "no IP yet (is the controller running and leading?)"
    reasons = doc["layer2"]["notAnnounced"] + doc["bgp"]["notAnnounced"]
    if not reasons:
        return NO_RECENT_EVENT
    distinct = sorted({(r["reason"], r["detail"]) for r in reasons})
    return "; ".join(f"{r}: {d}" if d else r for r, d in distinct)


def _announcers_cell(who: Mapping[str, list[str]]) -> str:
    return ", ".join(f"{n} ({', '.join(v)})" if v else n for n, v in who.items()) or "-"


def format_status(doc: Mapping[str, Any]) -> str:
    """The document as text: configuration, pools, Services, then the reasons of each Service
    announced nowhere (and of nodes that do not announce a BGP Service others announce)."""
    out = []
    cfg = doc.get("config")
    if cfg is None:
        out.append("Configuration: no ConfigurationState (has the controller run yet?)")
    else:
        out.append(f"Configuration: {cfg.get('result') or 'unknown'}"
                   + (f" ({cfg['errorSummary']}; the last valid configuration stays in force)"
                      if cfg.get("errorSummary") else ""))
    out.append(f"Controller leader: {doc.get('leader') or 'none'}")

    out += ["", "Pools:"]
    pools = doc.get("pools") or []
    if pools:
        out += ["  " + line for line in text_table(
            ["Pool", "Addresses", "IPv4 used/total", "IPv6 used/total", "Used", "AutoAssign"],
            [[p["name"], ",".join(p["addresses"]),
              f"{p['assignedIPv4']}/{p['assignedIPv4'] + p['availableIPv4']}",
              f"{p['assignedIPv6']}/{p['assignedIPv6'] + p['availableIPv6']}",
              "-" if p["usedPercent"] is None else f"{p['usedPercent']:g}%",
              "yes" if p["autoAssign"] else "no"] for p in pools])]
    else:
        out.append("  no IPAddressPool")

    out += ["", "Services:"]
    svcs = doc.get("services") or []
    if svcs:
        out += ["  " + line for line in text_table(
            ["Service", "IPs", "Pool", "Layer2", "BGP"],
            [[s["service"], ",".join(s["ips"]) or "<pending>", s["pool"] or "-",
              _announcers_cell(s["layer2"]["announcers"]), _announcers_cell(s["bgp"]["announcers"])]
             for s in svcs])]
    else:
        out.append("  no Service of type LoadBalancer")

    unannounced = [s for s in svcs if not s["announced"]]
    if unannounced:
        out += ["", "Not announced anywhere:"]
        for s in unannounced:
            out.append(f"  {s['service']}: {s['why']}")
            for proto in PROTOCOLS:
                for r in s[proto]["notAnnounced"]:
                    out.append(f"    {r['node']} ({proto}): {r['reason']}: {r['detail']}")
    partial = [(s, r) for s in svcs if s["announced"] for r in s["bgp"]["notAnnounced"]]
    if partial:
        out += ["", "Nodes not advertising a BGP Service:"]
        out += [f"  {s['service']}: {r['node']}: {r['reason']}: {r['detail']}" for s, r in partial]
    return "\n".join(out) + "\n"
