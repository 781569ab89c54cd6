"""Table tests for agent.election: every MetalLB L2 rule, stability of the hash order, the
EndpointSlice helper, interface filtering and the traffic-aware handoff."""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace

import pytest

from agent.election import (
    IP_NOT_ALLOWED, NO_IP_ALLOCATED, NO_MATCHING_ADVERTISEMENT, NOT_OWNER,
    SHARED_IP_WITH_SERVICE_SELECTOR, HandoffTracker, ServiceView, announcing_node_for,
    election_key, endpoint_can_serve, endpoint_summary, filter_interfaces, nodes_with_ready_endpoints)
from agent.nodeview import EXCLUDE_LB_LABEL, NodeView, node_internal_ips, node_view_from_k8s
from metalxdp.config.types import Config, L2Advertisement, LabelSelector, Pool

ip = ipaddress.ip_address
VIP = "192.0.2.200"


def sel(**labels) -> LabelSelector:
    return LabelSelector(match_labels=tuple(sorted(labels.items())))


def config(*ads: L2Advertisement, pools=None) -> Config:
    pools = pools or [Pool("p1", (ipaddress.ip_network("192.0.2.192/26"),
                                  ipaddress.ip_network("2001:db8:1::/120"))),
                      Pool("p2", (ipaddress.ip_network("198.51.100.0/24"),))]
    return Config(pools={p.name: p for p in pools}, l2_advertisements=tuple(ads))


ALL = L2Advertisement("all", frozenset({"p1"}))
NODES = {n: NodeView(n, {"zone": z}) for n, z in
         (("node1", "a"), ("node2", "a"), ("node3", "b"), ("node4", "b"))}


def svc(**kw) -> ServiceView:
    d = dict(key="ns/s", ips=(ip(VIP),), has_serving_endpoint=True,
             nodes_with_ready_endpoints=frozenset(NODES))
    d.update(kw)
    return ServiceView(**d)


def hash_order(names, first_ip=VIP):
    return sorted(names, key=lambda n: hashlib.sha256(f"{n}#{first_ip}".encode()).digest())


def elect(service=None, nodes=NODES, cfg=None, members=tuple(NODES), **kw):
    return announcing_node_for(service or svc(), nodes, cfg or config(ALL), members, **kw)


def test_hash_is_metallbs_sha256_of_node_hash_ip():
    assert election_key("node1", VIP) == hashlib.sha256(b"node1#192.0.2.200").digest()
    # IPv6 uses the canonical (compressed) text form, as Go's net.IP.String()
    assert election_key("n", "2001:db8:1:0::5") == hashlib.sha256(b"n#2001:db8:1::5").digest()


# (description, service overrides, nodes overrides, config, members, kwargs, expected winner or
#  None, expected reason)
def _cases():
    order = hash_order(NODES)
    first, second = order[0], order[1]
    z_b = [n for n in order if NODES[n].labels["zone"] == "b"]
    return [
        ("all members eligible: lowest hash wins", {}, {}, config(ALL), tuple(NODES), {},
         first, ""),
        ("no IP allocated", {"ips": ()}, {}, config(ALL), tuple(NODES), {}, None, NO_IP_ALLOCATED),
        ("IP in no pool", {"ips": (ip("203.0.113.5"),)}, {}, config(ALL), tuple(NODES), {},
         None, IP_NOT_ALLOWED),
        ("no serving endpoint anywhere", {"has_serving_endpoint": False,
                                          "nodes_with_ready_endpoints": frozenset()},
         {}, config(ALL), tuple(NODES), {}, None, NOT_OWNER),
        ("no L2Advertisement for the pool", {}, {},
         config(L2Advertisement("other", frozenset({"p2"}))), tuple(NODES), {}, None,
         NO_MATCHING_ADVERTISEMENT),
        ("serviceSelector does not match", {"labels": {"app": "web"}}, {},
         config(L2Advertisement("a", frozenset({"p1"}), service_selectors=(sel(app="db"),))),
         tuple(NODES), {}, None, NO_MATCHING_ADVERTISEMENT),
        ("serviceSelector matches", {"labels": {"app": "web"}}, {},
         config(L2Advertisement("a", frozenset({"p1"}), service_selectors=(sel(app="db"),
                                                                           sel(app="web")))),
         tuple(NODES), {}, first, ""),
        ("shared IP + serviceSelectors refused", {"labels": {"app": "web"}, "sharing_key": "k"}, {},
         config(L2Advertisement("a", frozenset({"p1"}), service_selectors=(sel(app="web"),))),
         tuple(NODES), {}, None, SHARED_IP_WITH_SERVICE_SELECTOR),
        ("shared IP without serviceSelectors is fine", {"sharing_key": "k"}, {}, config(ALL),
         tuple(NODES), {}, first, ""),
        ("winner not a member -> next", {}, {}, config(ALL),
         tuple(n for n in NODES if n != first), {}, second, ""),
        ("no members at all", {}, {}, config(ALL), (), {}, None, NOT_OWNER),
        ("members=None (membership disabled): all nodes", {}, {}, config(ALL), None, {}, first, ""),
        ("member without a Node object is not a candidate", {}, {}, config(ALL),
         ("ghost",), {}, None, NOT_OWNER),
        ("NetworkUnavailable winner skipped", {},
         {first: NodeView(first, NODES[first].labels, network_unavailable=True)},
         config(ALL), tuple(NODES), {}, second, ""),
        ("exclude-lb label skips winner", {},
         {first: NodeView(first, {**NODES[first].labels, EXCLUDE_LB_LABEL: ""})},
         config(ALL), tuple(NODES), {}, second, ""),
        ("exclude-lb label ignored with ignore_exclude_lb", {},
         {first: NodeView(first, {**NODES[first].labels, EXCLUDE_LB_LABEL: ""}, ignore_exclude_lb=True)},
         config(ALL), tuple(NODES), {}, first, ""),
        ("ignore_exclude_lb does not ignore NetworkUnavailable", {},
         {first: NodeView(first, NODES[first].labels, network_unavailable=True, ignore_exclude_lb=True)},
         config(ALL), tuple(NODES), {}, second, ""),
        ("nodeSelectors restrict candidates", {}, {},
         config(L2Advertisement("b", frozenset({"p1"}), node_selectors=(sel(zone="b"),))),
         tuple(NODES), {}, z_b[0], ""),
        ("ETP Local: only nodes with a serving endpoint",
         {"etp_local": True, "nodes_with_ready_endpoints": frozenset({order[3], order[2]})},
         {}, config(ALL), tuple(NODES), {}, order[2], ""),
        ("ETP Local: endpoints only on non-members", {"etp_local": True,
                                                      "nodes_with_ready_endpoints":
                                                          frozenset({"elsewhere"})},
         {}, config(ALL), tuple(NODES), {}, None, NOT_OWNER),
        ("ETP Cluster ignores endpoint placement", {"nodes_with_ready_endpoints": frozenset()},
         {}, config(ALL), tuple(NODES), {}, first, ""),
        ("preferredNodeSelectors beat the hash", {}, {},
         config(L2Advertisement("p", frozenset({"p1"}),
                                preferred_node_selectors=((10, sel(zone="b")),))),
         tuple(NODES), {}, z_b[0], ""),
        ("pool hint that does not contain the IP is ignored", {"pool": "p2"}, {}, config(ALL),
         tuple(NODES), {}, first, ""),
    ]


@pytest.mark.parametrize("desc,svc_kw,node_kw,cfg,members,kw,winner,reason", _cases(),
                         ids=[c[0] for c in _cases()])
def test_election_rules(desc, svc_kw, node_kw, cfg, members, kw, winner, reason):
    d = elect(svc(**svc_kw), {**NODES, **node_kw}, cfg, members, **kw)
    assert (d.node, d.reason) == (winner, reason)
    if winner:
        assert d.candidates[0] == winner


def test_dual_stack_uses_the_first_ip():
    v6 = ip("2001:db8:1::10")
    d = elect(svc(ips=(v6, ip(VIP))))
    assert d.node == hash_order(NODES, str(v6))[0]
    assert d.node == elect(svc(ips=(v6,))).node


def test_ips_in_different_pools_are_not_allowed():
    d = elect(svc(ips=(ip(VIP), ip("198.51.100.7"))))
    assert d.reason == IP_NOT_ALLOWED


def test_reason_for_each_node():
    cfg = config(L2Advertisement("a", frozenset({"p1"}), node_selectors=(sel(zone="a"),)))
    d = elect(cfg=cfg)
    assert d.reason_for(d.node) == ""
    loser = next(n for n in ("node1", "node2") if n != d.node)
    assert d.reason_for(loser) == NOT_OWNER
    assert d.reason_for("node3") == NO_MATCHING_ADVERTISEMENT   # zone b: no ad for it
    nobody = elect(svc(has_serving_endpoint=False), cfg=cfg)
    assert nobody.reason_for("node1") == NOT_OWNER
    assert nobody.reason_for("node3") == NO_MATCHING_ADVERTISEMENT


def test_stability_story():
    """Rows build on each other: the IP only moves when the leader changes."""
    vips = [f"192.0.2.{i}" for i in range(192, 255)]
    members = {"node1", "node2", "node3"}
    nodes = {n: NodeView(n) for n in ("node1", "node2", "node3", "node4", "node5")}
    moves_on_add = 0
    for v in vips:
        s = svc(ips=(ip(v),))
        before = announcing_node_for(s, nodes, config(ALL), members).node
        # adding node4 moves the IP only if node4 sorts first for this IP
        after = announcing_node_for(s, nodes, config(ALL), members | {"node4"}).node
        assert after == before or after == "node4"
        assert (after == "node4") == (hash_order(members | {"node4"}, v)[0] == "node4")
        moves_on_add += after != before
        # removing any non-leader never moves it
        for gone in members - {before}:
            assert announcing_node_for(s, nodes, config(ALL), members - {gone}).node == before
        # removing the leader moves it to the runner-up
        runner_up = hash_order(members, v)[1]
        assert announcing_node_for(s, nodes, config(ALL), members - {before}).node == runner_up
    assert 0 < moves_on_add < len(vips)      # roughly a quarter move, never all


def test_interfaces_union_and_all():
    a_eth0 = L2Advertisement("a", frozenset({"p1"}), interfaces=("eth0",))
    b_eth1 = L2Advertisement("b", frozenset({"p1"}), interfaces=("eth1",))
    z_b = L2Advertisement("c", frozenset({"p1"}), node_selectors=(sel(zone="nope"),),
                          interfaces=("eth9",))
    d = elect(cfg=config(a_eth0, b_eth1, z_b))
    assert d.interfaces == frozenset({"eth0", "eth1"})   # eth9's ad does not select the winner
    assert elect(cfg=config(a_eth0, ALL)).interfaces == frozenset()   # one ad says "all"


@pytest.mark.parametrize("name,kept", [
    ("eth0", True), ("ens3", True), ("bond0", True), ("docker0", False), ("cbr0", False),
    ("dummy0", False), ("virbr0", False), ("lxcbr0", False), ("veth12ab", False), ("lo", False),
    ("lo0", True), ("cali123", False), ("tunl0", False), ("flannel.1", False),
    ("kube-ipvs0", False), ("cni0", False), ("nodelocaldns", False), ("lxc_health", False)])
def test_default_interface_excludes(name, kept):
    assert (filter_interfaces([name]) == [name]) is kept


def test_filter_interfaces_selected_and_custom():
    names = ["eth0", "eth1", "veth0", "bond0"]
    assert filter_interfaces(names, frozenset({"eth1", "veth0"})) == ["eth1"]
    assert filter_interfaces(names, excludes=(r"^eth1$",)) == ["eth0", "veth0", "bond0"]
    assert filter_interfaces(names, excludes=()) == names


@pytest.mark.parametrize("conditions,ok", [
    (None, True), ({}, True), ({"ready": True}, True), ({"ready": False}, False),
    ({"ready": False, "serving": True}, True), ({"ready": False, "serving": False}, False),
    ({"ready": False, "serving": True, "terminating": True}, True)])
def test_endpoint_can_serve(conditions, ok):
    assert endpoint_can_serve(conditions) is ok


def test_endpoint_summary_v1():
    v1 = {"apiVersion": "discovery.k8s.io/v1", "endpoints": [
        {"addresses": ["198.18.0.1"], "conditions": {"ready": True}, "nodeName": "node1"},
        {"addresses": ["198.18.0.2"], "conditions": {"ready": False}, "nodeName": "node2"},
        {"addresses": ["198.18.0.3"], "conditions": {"ready": False, "serving": True},
         "nodeName": "node3"},
        {"addresses": ["198.18.0.4"], "conditions": {}},            # serving, no node
    ]}
    assert endpoint_summary([v1]) == (True, frozenset({"node1", "node3"}))
    # a terminating endpoint that still serves keeps its node (ETP Local), as in MetalLB
    terminating = {"apiVersion": "discovery.k8s.io/v1", "endpoints": [
        {"addresses": ["198.18.0.5"], "nodeName": "node4",
         "conditions": {"ready": False, "serving": True, "terminating": True}},
        {"addresses": ["198.18.0.6"], "nodeName": "node5",
         "conditions": {"ready": False, "serving": False, "terminating": True}},
    ]}
    assert nodes_with_ready_endpoints([terminating]) == frozenset({"node4"})
    assert endpoint_summary([{"endpoints": None}]) == (False, frozenset())
    only_nodeless = {"endpoints": [{"conditions": {"ready": True}}]}
    assert endpoint_summary([only_nodeless]) == (True, frozenset())


def test_node_views_from_k8s():
    node = {"metadata": {"name": "node1", "labels": {EXCLUDE_LB_LABEL: "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "NetworkUnavailable", "status": "True"}],
                       "addresses": [{"type": "Hostname", "address": "node1"},
                                     {"type": "InternalIP", "address": "192.0.2.11"},
                                     {"type": "InternalIP", "address": "2001:db8::11"}]}}
    v = node_view_from_k8s(node)
    assert v == NodeView("node1", {EXCLUDE_LB_LABEL: "true"}, True)
    assert node_internal_ips(node) == ["192.0.2.11", "2001:db8::11"]
    plain = node_view_from_k8s({"metadata": {"name": "n"}})
    assert plain == NodeView("n", {}, False)
    # the agent's --ignore-exclude-lb travels in the view: the label then excludes nothing
    labelled = {"metadata": {"name": "n", "labels": {EXCLUDE_LB_LABEL: ""}}}
    assert node_view_from_k8s(labelled).excluded
    assert not node_view_from_k8s(labelled, ignore_exclude_lb=True).excluded
    assert node_view_from_k8s(node, ignore_exclude_lb=True).excluded     # NetworkUnavailable still counts


# ---- HandoffTracker: rows run in order on one tracker ----------------------------------------

def test_handoff_story():
    t = HandoffTracker(quiet_s=2.0, max_s=30.0)
    assert t.observe("v", 0.0, 5) is False               # never started
    t.start("v", 0.0, 100)
    rows = [  # (now, counter, keep)
        (0.5, 100, True),     # quiet for 0.5 s < 2 s
        (1.9, 100, True),
        (2.5, 140, True),     # stale ARP caches still send here: keep
        (4.0, 150, True),
        (5.9, 150, True),     # quiet 1.9 s
        (6.0, 150, False),    # quiet 2 s: stop
        (7.0, 900, False),    # over; stays over
    ]
    for now, counter, keep in rows:
        assert t.observe("v", now, counter) is keep, (now, counter)
    assert t.active() == frozenset()


def test_handoff_max_and_reset_and_cancel():
    t = HandoffTracker(quiet_s=2.0, max_s=5.0)
    t.start("v", 0.0, 0)
    for i in range(1, 10):
        keep = t.observe("v", i * 1.0, i * 10)            # always busy
        assert keep is (i < 5), i                          # ...but max_s ends it at 5 s
    t.start("w", 0.0, 1000)
    assert t.observe("w", 1.0, 3) is True                 # counter reset: new baseline...
    assert t.observe("w", 3.0, 3) is False                # ...that is not traffic
    t.start("x", 0.0, 0)
    t.start("x", 4.0, 0)                                   # restart keeps original start
    assert t.observe("x", 1.0, 1) and t.observe("x", 2.0, 2)
    t.cancel("x")
    assert t.observe("x", 2.1, 3) is False
    with pytest.raises(ValueError):
        HandoffTracker(quiet_s=0)
