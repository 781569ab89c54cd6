"""metalxdp.status: the cluster-wide view built from listed objects (pure), in tables."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from agent.reasons import EVENT_MESSAGE
from metalxdp.cli import main
from metalxdp.status import NO_RECENT_EVENT, build, format_status


def svc(name, ips=(), pool=None, type_="LoadBalancer", ns="default", cls=None):
    return {"metadata": {"name": name, "namespace": ns,
                         "annotations": {"metallb.io/ip-allocated-from-pool": pool} if pool else {}},
            "spec": {"type": type_, **({"loadBalancerClass": cls} if cls else {})},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def l2st(node, name, ifs, ns="default"):
    return {"status": {"node": node, "serviceName": name, "serviceNamespace": ns,
                       "interfaces": [{"name": i} for i in ifs]}}


def bgpst(node, name, peers, ns="default"):
    return {"status": {"node": node, "serviceName": name, "serviceNamespace": ns, "peers": list(peers)}}


_rv = iter(range(1, 10_000))


def ev(name, reason, message, ts="2026-12-03T10:00:00Z", comp="metallb-speaker", type_="Normal", ns="default"):
    return {"metadata": {"resourceVersion": str(next(_rv))}, "involvedObject": {"kind": "Service", "name": name, "namespace": ns},
            "reason": reason, "message": message, "type": type_, "lastTimestamp": ts, "source": {"component": comp}}


def not_announcing(name, node, proto, reason, detail, **kw):
    return ev(name, reason, EVENT_MESSAGE.format(node=node, protocol=proto, detail=detail), **kw)


def assigned(name, node, proto, **kw):
    return ev(name, "nodeAssigned", f'announcing from node "{node}" with protocol "{proto}"', **kw)


POOL = {"metadata": {"name": "pool-a"}, "spec": {"addresses": ["192.0.2.200-192.0.2.203"]},
        "status": {"assignedIPv4": 3, "availableIPv4": 1, "assignedIPv6": 0, "availableIPv6": 0}}


# (case, services, l2, bgp, events, want: service -> (announced, why-substring, l2 announcers, bgp announcers, reasons))
CASES = [
    ("announced in layer2",
     [svc("web", ["192.0.2.200"], "pool-a")], [l2st("node1", "web", ["eth1"])], [], [],
     {"default/web": (True, "", {"node1": ["eth1"]}, {}, [])}),
    ("announced over BGP by two nodes, one excluded",
     [svc("web", ["192.0.2.200"], "pool-a")], [], [bgpst("node1", "web", ["router"]), bgpst("node2", "web", ["router"])],
     [not_announcing("web", "node3", "bgp", "nodeExcluded", "this node is excluded")],
     {"default/web": (True, "", {}, {"node1": ["router"], "node2": ["router"]}, [("bgp", "node3", "nodeExcluded")])}),
    ("announced nowhere: every agent's reason",
     [svc("web", ["192.0.2.200"], "pool-a")], [], [],
     [not_announcing("web", "node1", "layer2", "noMatchingAdvertisement", "no L2Advertisement selects it"),
      not_announcing("web", "node2", "layer2", "noMatchingAdvertisement", "no L2Advertisement selects it")],
     {"default/web": (False, "noMatchingAdvertisement: no L2Advertisement selects it", {}, {},
                      [("layer2", "node1", "noMatchingAdvertisement"), ("layer2", "node2", "noMatchingAdvertisement")])}),
    ("the newest event per node wins (same second: resourceVersion orders)",
     [svc("web", ["192.0.2.200"], "pool-a")], [], [],
     [not_announcing("web", "node1", "layer2", "noLocalEndpoints", "no endpoint here"),
      assigned("web", "node1", "layer2"),
      not_announcing("web", "node1", "layer2", "announceFailed", "no usable interface")],
     {"default/web": (False, "announceFailed: no usable interface", {}, {}, [("layer2", "node1", "announceFailed")])}),
    ("a node announcing per its status object: its older not-announcing event is dropped",
     [svc("web", ["192.0.2.200"], "pool-a")], [l2st("node2", "web", ["eth1"])], [],
     [not_announcing("web", "node2", "layer2", "notOwner", "node1 announces it", ts="2026-12-03T09:00:00Z")],
     {"default/web": (True, "", {"node2": ["eth1"]}, {}, [])}),
    ("events expired: the view says so",
     [svc("web", ["192.0.2.200"], "pool-a")], [], [], [],
     {"default/web": (False, NO_RECENT_EVENT, {}, {}, [])}),
    ("no IP: the controller's event",
     [svc("web")], [], [],
     [ev("web", "AllocationFailed", "Failed to allocate IP for default/web: no available IPs", comp="metallb-controller",
         type_="Warning")],
     {"default/web": (False, "no IP: AllocationFailed: Failed to allocate IP", {}, {}, [])}),
    ("no IP and no event",
     [svc("web")], [], [], [],
     {"default/web": (False, "no IP yet", {}, {}, [])}),
    ("not a LoadBalancer: not listed; another class: said so",
     [svc("db", type_="ClusterIP"), svc("other", cls="example.com/lb")], [], [], [],
     {"default/other": (False, "loadBalancerClass 'example.com/lb'", {}, {}, [])}),
    ("events of other kinds and other services are ignored",
     [svc("web", ["192.0.2.200"], "pool-a")], [l2st("node1", "web", ["eth1"])], [],
     [not_announcing("api", "node1", "layer2", "notOwner", "x"),
      {**not_announcing("web", "node2", "layer2", "notOwner", "x"), "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}}],
     {"default/web": (True, "", {"node1": ["eth1"]}, {}, [])}),
]


@pytest.mark.parametrize("case,services,l2,bgp,events,want", CASES, ids=[c[0] for c in CASES])
def test_build(case, services, l2, bgp, events, want):
    doc = build(services, l2, bgp, events, [POOL], now=0)
    got = {s["service"]: s for s in doc["services"]}
    assert set(got) == set(want)
    for key, (announced, why, l2a, bgpa, reasons) in want.items():
        s = got[key]
        assert s["announced"] is announced
        assert (why in s["why"]) if why else s["why"] == ""
        assert s["layer2"]["announcers"] == l2a and s["bgp"]["announcers"] == bgpa
        assert [(p, r["node"], r["reason"]) for p in ("layer2", "bgp") for r in s[p]["notAnnounced"]] == reasons
    json.dumps(doc)   # the --json document is JSON


def test_pools_usage_and_config_state():
    doc = build([], pools=[POOL, {"metadata": {"name": "empty"}, "spec": {"addresses": ["198.51.100.0/30"],
                                                                           "autoAssign": False}}],
                config_state={"status": {"result": "Invalid", "errorSummary": "pool overlaps"}}, leader="ctl-1")
    a, e = {p["name"]: p for p in doc["pools"]}["pool-a"], {p["name"]: p for p in doc["pools"]}["empty"]
    assert (a["assignedIPv4"], a["availableIPv4"], a["usedPercent"], a["autoAssign"]) == (3, 1, 75.0, True)
    assert (e["usedPercent"], e["autoAssign"], e["statusWritten"]) == (None, False, False)
    text = format_status(doc)
    assert "Configuration: Invalid (pool overlaps; the last valid configuration stays in force)" in text
    assert "Controller leader: ctl-1" in text
    assert "pool-a  192.0.2.200-192.0.2.203  3/4" in text and "75%" in text


def test_text_names_the_reason_of_each_node():
    doc = build([svc("web", ["192.0.2.200"], "pool-a"), svc("ok", ["192.0.2.201"], "pool-a")],
                [l2st("node1", "ok", ["eth1"])], [],
                [not_announcing("web", "node1", "layer2", "noLocalEndpoints", "externalTrafficPolicy is Local"),
                 not_announcing("web", "node2", "layer2", "noLocalEndpoints", "externalTrafficPolicy is Local")],
                [POOL])
    text = format_status(doc)
    assert "default/ok   192.0.2.201  pool-a  node1 (eth1)  -" in text
    assert "Not announced anywhere:\n  default/web: noLocalEndpoints: externalTrafficPolicy is Local\n" in text
    assert "    node1 (layer2): noLocalEndpoints: externalTrafficPolicy is Local" in text
    assert "    node2 (layer2): noLocalEndpoints" in text


def test_cli_is_registered_with_help_and_fails_clearly_without_a_cluster(tmp_path):
    r = CliRunner().invoke(main, ["status", "--help"])
    assert r.exit_code == 0 and "announced nowhere" in r.output and "--json" in r.output
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                  "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                  "current-context: x\n")
    r = CliRunner().invoke(main, ["status", "--kubeconfig", str(kc)], env={"KUBECONFIG": ""})
    assert r.exit_code == 1 and "Error: cannot read the cluster" in r.output
