"""Table tests of the pure BGP decision: which routes this node sends to which peer, and why a
service is not announced (MetalLB's ShouldAnnounce)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Optional

import pytest

from agent.bgp.advertise import (CONFLICTING_ADVERTISEMENTS, NO_ENDPOINTS, NO_LOCAL_ENDPOINTS,
                                 NO_MATCHING_ADVERTISEMENT, NODE_EXCLUDED, NOT_OWNER, Route,
                                 ServiceView, active_peers, advertisements_for_node, plan_for_node)
from agent.bgp.status import service_bgp_statuses
from agent.nodeview import EXCLUDE_LB_LABEL, NodeView
from metalxdp.config.parse import parse
from metalxdp.config.types import (BGPAdvertisement, BGPPeer, Community, Config, LabelSelector,
                                   Pool)
from metalxdp.lab.spec import LabSpec

ip = ipaddress.ip_address
net = ipaddress.ip_network
C = Community
L = lambda c: Community(c, large=True)  # noqa: E731
sel = lambda **kv: LabelSelector(match_labels=tuple(sorted(kv.items())))  # noqa: E731

POOL = Pool("p", (net("203.0.113.0/26"), net("2001:db8:0:2::/120")))
R4 = BGPPeer("r4", 64513, 64512, ip("192.0.2.1"))
R6 = BGPPeer("r6", 64513, 64512, ip("2001:db8:0:1::1"))
IB = BGPPeer("ib", 64513, 64513, ip("192.0.2.2"))        # iBGP: gets localPref
RACK = BGPPeer("rack", 64513, 64512, ip("192.0.2.3"), node_selectors=(sel(rack="a"),))


def cfg(*ads: BGPAdvertisement, peers=(R4, R6)) -> Config:
    return Config(pools={"p": POOL}, bgp_advertisements=ads, peers={p.name: p for p in peers})


def ad(**kw) -> BGPAdvertisement:
    return BGPAdvertisement(name=kw.pop("name", "a"), pools=frozenset({"p"}), **kw)


SVC = ServiceView("ns/web", (ip("203.0.113.5"),), pool="p", labels={"app": "web"},
                  has_any_ready_endpoint=True, has_ready_local_endpoint=True)
SVC6 = replace(SVC, key="ns/web6", ips=(ip("2001:db8:0:2::5"),))
NODE = NodeView("node1", {"kubernetes.io/hostname": "node1", "rack": "a"})


@dataclass
class Case:
    id: str
    config: Config
    services: list = field(default_factory=lambda: [SVC])
    node: NodeView = NODE
    want: dict = field(default_factory=dict)          # peer -> set of Route
    reason: Optional[str] = None                      # for the first service


CASES = [
    Case("v4 service to the v4 peer only", cfg(ad()),
         want={"r4": {Route(net("203.0.113.5/32"))}, "r6": set()}),
    Case("v6 service to the v6 peer only", cfg(ad()), services=[SVC6],
         want={"r4": set(), "r6": {Route(net("2001:db8:0:2::5/128"))}}),
    Case("aggregationLength 24 announces the /24", cfg(ad(aggregation_length=24)),
         want={"r4": {Route(net("203.0.113.0/24"))}, "r6": set()}),
    Case("aggregationLengthV6 64", cfg(ad(aggregation_length_v6=64)), services=[SVC6],
         want={"r4": set(), "r6": {Route(net("2001:db8:0:2::/64"))}}),
    Case("two services aggregate into one prefix",
         cfg(ad(aggregation_length=24)), services=[SVC, replace(SVC, key="ns/b", ips=(ip("203.0.113.9"),))],
         want={"r4": {Route(net("203.0.113.0/24"))}, "r6": set()}),
    Case("communities sorted: legacy as (a<<16|b):0:0 among large",
         cfg(ad(communities=(L("large:1:2:3"), C("65000:100"), C("64512:7")))),
         want={"r4": {Route(net("203.0.113.5/32"), (L("large:1:2:3"), C("64512:7"), C("65000:100")))},
               "r6": set()}),
    Case("localPref only to iBGP peers", cfg(ad(local_pref=200), peers=(R4, IB)),
         want={"r4": {Route(net("203.0.113.5/32"))}, "ib": {Route(net("203.0.113.5/32"), (), 200)}}),
    Case("localPref 0 means not set", cfg(ad(local_pref=0), peers=(IB,)),
         want={"ib": {Route(net("203.0.113.5/32"))}}),
    Case("peers list restricts the peers", cfg(ad(peers=frozenset({"ib"})), peers=(R4, IB)),
         want={"r4": set(), "ib": {Route(net("203.0.113.5/32"))}}),
    Case("peer nodeSelectors: rack peer active on rack a", cfg(ad(), peers=(R4, RACK)),
         want={"r4": {Route(net("203.0.113.5/32"))}, "rack": {Route(net("203.0.113.5/32"))}}),
    Case("peer nodeSelectors: rack peer not active on rack b", cfg(ad(), peers=(R4, RACK)),
         node=NodeView("node2", {"rack": "b"}), want={"r4": {Route(net("203.0.113.5/32"))}}),
    Case("ad nodeSelectors not matching: notOwner", cfg(ad(node_selectors=(sel(rack="b"),))),
         want={"r4": set(), "r6": set()}, reason=NOT_OWNER),
    Case("ad nodeSelectors matching", cfg(ad(node_selectors=(sel(rack="a"),))),
         want={"r4": {Route(net("203.0.113.5/32"))}, "r6": set()}),
    Case("serviceSelectors not matching", cfg(ad(service_selectors=(sel(app="db"),))),
         want={"r4": set(), "r6": set()}, reason=NO_MATCHING_ADVERTISEMENT),
    Case("serviceSelectors matching", cfg(ad(service_selectors=(sel(app="web"),))),
         want={"r4": {Route(net("203.0.113.5/32"))}, "r6": set()}),
    Case("ETP Local without a local endpoint", cfg(ad()),
         services=[replace(SVC, etp_local=True, has_ready_local_endpoint=False)],
         want={"r4": set(), "r6": set()}, reason=NO_LOCAL_ENDPOINTS),
    Case("ETP Local with a local endpoint", cfg(ad()), services=[replace(SVC, etp_local=True)],
         want={"r4": {Route(net("203.0.113.5/32"))}, "r6": set()}),
    Case("ETP Cluster with an endpoint elsewhere", cfg(ad()),
         services=[replace(SVC, has_ready_local_endpoint=False)],
         want={"r4": {Route(net("203.0.113.5/32"))}, "r6": set()}),
    Case("ETP Cluster without any endpoint", cfg(ad()),
         services=[replace(SVC, has_any_ready_endpoint=False, has_ready_local_endpoint=False)],
         want={"r4": set(), "r6": set()}, reason=NO_ENDPOINTS),
    Case("exclude label: nothing", cfg(ad()), node=NodeView("node1", {EXCLUDE_LB_LABEL: ""}),
         want={"r4": set(), "r6": set()}, reason=NODE_EXCLUDED),
    Case("exclude label with --ignore-exclude-lb: announced", cfg(ad()),
         node=NodeView("node1", {EXCLUDE_LB_LABEL: ""}, ignore_exclude_lb=True),
         want={"r4": {Route(net("203.0.113.5/32"))}, "r6": set()}),
    Case("NetworkUnavailable: nothing", cfg(ad()), node=NodeView("node1", {}, network_unavailable=True),
         want={"r4": set(), "r6": set()}, reason=NODE_EXCLUDED),
    Case("NetworkUnavailable with --ignore-exclude-lb: still nothing", cfg(ad()),
         node=NodeView("node1", {}, network_unavailable=True, ignore_exclude_lb=True),
         want={"r4": set(), "r6": set()}, reason=NODE_EXCLUDED),
    Case("two ads merge communities for one prefix",
         cfg(ad(name="a", communities=(C("64512:1"),)), ad(name="b", communities=(C("64512:2"),)),
             peers=(R4,)),
         want={"r4": {Route(net("203.0.113.5/32"), (C("64512:1"), C("64512:2")))}}),
    Case("two ads, different lengths: both prefixes",
         cfg(ad(name="a"), ad(name="b", aggregation_length=24), peers=(R4,)),
         want={"r4": {Route(net("203.0.113.5/32")), Route(net("203.0.113.0/24"))}}),
    Case("serviceSelector ads with conflicting localPref",
         cfg(ad(name="a", local_pref=100, service_selectors=(sel(app="web"),)),
             ad(name="b", local_pref=200, service_selectors=(sel(app="web"),)), peers=(IB,)),
         want={"ib": set()}, reason=CONFLICTING_ADVERTISEMENTS),
    Case("pool without BGPAdvertisement: notOwner", cfg(), want={"r4": set(), "r6": set()},
         reason=NOT_OWNER),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_advertisements(case: Case):
    plan = plan_for_node(case.config, case.node, case.services)
    assert {p: set(r) for p, r in plan.advertisements.items()} == case.want
    assert plan.reasons.get(case.services[0].key) == case.reason


def test_pool_looked_up_from_ip_when_not_given():
    got = advertisements_for_node(cfg(ad()), NODE, [replace(SVC, pool=None)])
    assert got["r4"] == {Route(net("203.0.113.5/32"))}


def test_dual_stack_service_reaches_both_peers_and_status_lists_them():
    svc = replace(SVC, ips=(ip("203.0.113.5"), ip("2001:db8:0:2::5")))
    plan = plan_for_node(cfg(ad()), NODE, [svc])
    assert plan.service_peers == {"ns/web": frozenset({"r4", "r6"})}
    assert plan.prefix_owners[net("203.0.113.5/32")] == ("ns/web",)
    statuses = service_bgp_statuses("node1", plan.service_peers)
    assert statuses == {("node1", "ns", "web"): {
        "apiVersion": "metallb.io/v1beta1", "kind": "ServiceBGPStatus",
        "metadata": {"generateName": "bgp-", "namespace": "metallb-system",
                     "labels": {"metallb.io/node": "node1", "metallb.io/service-name": "web",
                                "metallb.io/service-namespace": "ns"}},
        "status": {"node": "node1", "serviceName": "web", "serviceNamespace": "ns",
                   "peers": ["r4", "r6"]}}}


def test_status_skips_services_reaching_no_peer():
    plan = plan_for_node(cfg(ad(peers=frozenset({"nobody"}))), NODE, [SVC])
    assert plan.service_peers == {"ns/web": frozenset()}
    assert service_bgp_statuses("node1", plan.service_peers) == {}


def test_active_peers_follow_node_selectors():
    c = cfg(peers=(R4, RACK))
    assert set(active_peers(c, NODE)) == {"r4", "rack"}
    assert set(active_peers(c, NodeView("n", {"rack": "b"}))) == {"r4"}


def test_lab_resources_through_the_parser():
    """The seed-002 lab (router AS 64512, nodes AS 64513) as the real parser sees it."""
    config = parse(LabSpec().metallb_resources())
    svc = ServiceView("default/nginx", (ip("203.0.113.1"), ip("2001:db8:0:2::1")),
                      has_any_ready_endpoint=True)
    got = advertisements_for_node(config, NodeView("node1"), [svc])
    assert got == {"router-v4": frozenset({Route(net("203.0.113.1/32"))}),
                   "router-v6": frozenset({Route(net("2001:db8:0:2::1/128"))})}
