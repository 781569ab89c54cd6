"""Behaviour of the parser beyond the rule table: address forms, timers, secrets, selectors,
legacy pools, node-aware rules, multi-error reporting and garbage input."""
from __future__ import annotations

import base64
import ipaddress
import sys
from pathlib import Path

import pytest

from metalxdp.config.bgppeer_conversion import ConversionError, conversion_review, convert_bgppeer
from metalxdp.config.parse import parse, validate
from metalxdp.config.types import Community, ConfigError, LabelSelector, Requirement
from metalxdp.config.values import format_duration, parse_duration, parse_pool_address

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "config"))
from cases import bfd, bgpadv, community, l2, legacy_pool, obj, peer, pool, secret  # noqa: E402

N = ipaddress.ip_network


@pytest.mark.parametrize("text,cidrs", [
    ("198.18.0.0/24", ["198.18.0.0/24"]),
    ("198.18.0.7/24", ["198.18.0.0/24"]),                   # host bits masked, as Go's ParseCIDR
    ("198.18.1.5 - 198.18.1.9", ["198.18.1.5/32", "198.18.1.6/31", "198.18.1.8/31"]),
    ("198.18.0.1-198.18.0.1", ["198.18.0.1/32"]),
    ("203.0.113.100-203.0.113.255", ["203.0.113.100/30", "203.0.113.104/29", "203.0.113.112/28",
                                     "203.0.113.128/25"]),
    ("2001:db8::/120", ["2001:db8::/120"]),
    ("2001:db8::1-2001:db8::2", ["2001:db8::1/128", "2001:db8::2/128"]),
])
def test_pool_address_forms(text, cidrs):
    assert parse_pool_address(text) == [N(c) for c in cidrs]


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("1m30s", 90), ("3s", 3), ("0", 0), ("1h", 3600),
                                          ("1.5s", 1.5), ("300ms", 0.3), ("2m0s", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "s", "1x", "1m 30s", "--1s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds,text", [(90, "1m30s"), (3, "3s"), (0.5, "500ms"), (3600, "1h0m0s")])
def test_format_duration_round_trips(seconds, text):
    assert format_duration(seconds) == text and parse_duration(text) == seconds


def test_dual_stack_pool_keeps_spec_order():
    cfg = parse([pool("ds", "2001:db8::/126", "198.18.0.0/30")])
    assert cfg.pools["ds"].cidrs == (N("2001:db8::/126"), N("198.18.0.0/30"))
    assert cfg.pools["ds"].families == {4, 6}


@pytest.mark.parametrize("spec,hold,keepalive", [
    ({}, 90, 30),
    ({"holdTime": "90s"}, 90, 30),
    ({"holdTime": "1m30s", "keepaliveTime": "10s"}, 90, 10),
    ({"keepaliveTime": "10s"}, 30, 10),
    ({"holdTime": "0s"}, 0, 0),
    ({"holdTime": "3s"}, 3, 1),
])
def test_timers_derived_as_metallb(spec, hold, keepalive):
    p = parse([peer("p", **spec)]).peers["p"]
    assert (p.hold_time, p.keepalive_time) == (pytest.approx(hold), pytest.approx(keepalive))


def test_peer_fields():
    cfg = parse([bfd("fast"), secret("pw", "tcp-md5"),
                 peer("p", "2001:db8::1", sourceAddress="2001:db8::2", routerID="198.18.0.9", peerPort=1179, bfdProfile="fast",
                      passwordSecret={"name": "pw"}, ebgpMultiHop=True, enableGracefulRestart=True,
                      connectTime="5s", nodeSelectors=[{"matchLabels": {"zone": "a"}}])],
                secrets={"metallb-system/pw": secret("pw", "tcp-md5")})
    p = cfg.peers["p"]
    assert p.peer_address == ipaddress.ip_address("2001:db8::1") and p.source_address == ipaddress.ip_address("2001:db8::2")
    assert str(p.router_id) == "198.18.0.9" and p.peer_port == 1179 and p.bfd_profile == "fast"
    assert p.password == "tcp-md5" and p.password_secret == "metallb-system/pw"
    assert p.ebgp_multihop and p.enable_graceful_restart and p.connect_time == 5
    assert p.node_selectors == (LabelSelector(match_labels=(("zone", "a"),)),)
    assert cfg.bfd_profiles["fast"].detect_multiplier == 3 and cfg.bfd_profiles["fast"].receive_interval_ms == 300


def test_secret_with_bad_base64_is_an_error():
    bad = secret("pw")
    bad["data"]["password"] = "***"
    with pytest.raises(ConfigError, match="base64"):
        parse([peer("p", passwordSecret={"name": "pw"})], secrets={"metallb-system/pw": bad})


def test_v1beta1_peer_parses_like_v1beta2():
    v1 = obj("BGPPeer", "p", {"myASN": 64500, "peerASN": 64501, "peerAddress": "198.18.0.1", "holdTime": "9s",
                              "nodeSelectors": [{"matchLabels": {"a": "b"},
                                                 "matchExpressions": [{"key": "k", "operator": "In",
                                                                       "values": ["y", "x"]}]}]})
    v2 = convert_bgppeer(v1, "v1beta2")
    assert v2["apiVersion"] == "metallb.io/v1beta2"
    assert parse([v1]).peers == parse([v2]).peers
    assert parse([v1]).peers["p"].node_selectors[0].match_expressions == (Requirement("k", "In", ("x", "y")),)


def test_bgppeer_conversion_is_faithful():
    v2 = peer("p", password="x", passwordSecret={"name": "s"}, vrf="red", nodeSelectors=[{}, {"matchLabels": {"a": "b"}}])
    v1 = convert_bgppeer(v2, "v1beta1")
    # v1beta1 has no passwordSecret/vrf: dropped, as MetalLB's ConvertFrom drops them
    assert "passwordSecret" not in v1["spec"] and "vrf" not in v1["spec"]
    assert v1["spec"]["nodeSelectors"] == [{"matchLabels": {}, "matchExpressions": []},
                                           {"matchLabels": {"a": "b"}, "matchExpressions": []}]
    back = convert_bgppeer(v1, "v1beta2")
    assert back["spec"]["nodeSelectors"] == [{}, {"matchLabels": {"a": "b"}}]
    assert back["metadata"] == v2["metadata"]
    with pytest.raises(ConversionError):
        convert_bgppeer(pool("x", "198.18.0.0/24"), "v1beta1")


def test_conversion_review():
    v1 = convert_bgppeer(peer("p"), "v1beta1")
    out = conversion_review({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                             "request": {"uid": "u1", "desiredAPIVersion": "metallb.io/v1beta2", "objects": [v1]}})
    assert out["response"]["uid"] == "u1" and out["response"]["result"] == {"status": "Success"}
    assert out["response"]["convertedObjects"][0]["apiVersion"] == "metallb.io/v1beta2"
    bad = conversion_review({"request": {"uid": "u2", "desiredAPIVersion": "metallb.io/v9", "objects": [v1]}})
    assert bad["response"]["result"]["status"] == "Failure"


def test_legacy_addresspool_becomes_pool_and_advertisements():
    cfg = parse([legacy_pool("l2", "layer2", "198.18.0.0/28", autoAssign=False),
                 legacy_pool("bgp1", "bgp", "198.18.1.0/28"),
                 legacy_pool("bgp2", "bgp", "198.18.2.0/28", avoidBuggyIPs=True, bgpAdvertisements=[
                     {"aggregationLength": 28, "localPref": 100, "communities": ["65535:65282"]},
                     {"aggregationLength": 32, "communities": ["large:1:2:3"]}])])
    assert not cfg.pools["l2"].auto_assign and cfg.pools["bgp2"].avoid_buggy_ips
    assert [(a.name, a.pools) for a in cfg.l2_advertisements] == [("l2", frozenset({"l2"}))]
    ads = {a.name: a for a in cfg.bgp_advertisements}
    assert set(ads) == {"bgp1", "bgp2-1", "bgp2-2"}
    assert ads["bgp1"].aggregation_length == 32 and ads["bgp1"].pools == frozenset({"bgp1"})
    assert ads["bgp2-1"].communities == (Community("65535:65282"),) and ads["bgp2-1"].local_pref == 100
    assert ads["bgp2-2"].communities == (Community("large:1:2:3", large=True),)


def test_advertisement_pool_resolution():
    cfg = parse([pool("a", "198.18.0.0/28", labels={"tier": "web"}), pool("b", "198.18.1.0/28"),
                 pool("c", "198.18.2.0/28", labels={"tier": "db"}),
                 l2("by-name", ipAddressPools=["b", "missing"]),
                 l2("by-label", ipAddressPoolSelectors=[{"matchLabels": {"tier": "web"}}]),
                 l2("both", ipAddressPools=["a"], ipAddressPoolSelectors=[{"matchLabels": {"tier": "web"}}]),
                 l2("all")])
    ads = {a.name: a.pools for a in cfg.l2_advertisements}
    assert ads == {"by-name": {"b"}, "by-label": {"a"}, "both": {"a"}, "all": {"a", "b", "c"}}


def test_communities_resolved_sorted_and_large():
    cfg = parse([community("c", ("no-export", "65535:65281"), ("big", "large:1:2:3")),
                 bgpadv("a", communities=["big", "1:1", "no-export", "65535:65281"])])
    # MetalLB's order: a:b sorts as the large community (a<<16|b):0:0; duplicates after
    # alias resolution collapse
    assert cfg.bgp_advertisements[0].communities == (Community("large:1:2:3", large=True), Community("1:1"),
                                                     Community("65535:65281"))
    assert cfg.communities["big"].large


def test_namespace_selectors_resolved_when_namespaces_known():
    p = pool("p", "198.18.0.0/28", serviceAllocation={"namespaces": ["x"],
                                                    "namespaceSelectors": [{"matchLabels": {"team": "red"}}]})
    sa = parse([p], namespaces={"red1": {"team": "red"}, "blue": {"team": "blue"}}).pools["p"].service_allocation
    assert sa.namespaces == {"x", "red1"} and len(sa.namespace_selectors) == 1
    assert parse([p]).pools["p"].service_allocation.namespaces == {"x"}


def test_peers_on_overlapping_nodes_conflict_only_when_they_share_a_node():
    a = peer("a", "198.18.0.1", routerID="192.0.2.1", nodeSelectors=[{"matchLabels": {"zone": "a"}}])
    b = peer("b", "198.18.0.1", peer_asn=65000, routerID="192.0.2.2", nodeSelectors=[{"matchLabels": {"zone": "b"}}])
    disjoint = {"n1": {"zone": "a"}, "n2": {"zone": "b"}}
    assert set(parse([a, b], nodes=disjoint).peers) == {"a", "b"}
    with pytest.raises(ConfigError, match="routerID"):
        parse([a, b])  # nodes unknown: assume they share one
    b_everywhere = peer("b", "198.18.0.2", peer_asn=65000, routerID="192.0.2.2")
    with pytest.raises(ConfigError, match="routerID"):
        parse([a, b_everywhere], nodes=disjoint)
    # myASN too binds only peers that share a node (MetalLB v0.16's checkFRRPeersCompatible)
    c = peer("c", "198.18.0.3", my_asn=1, routerID="192.0.2.1", nodeSelectors=[{"matchLabels": {"zone": "b"}}])
    assert set(parse([a, c], nodes=disjoint).peers) == {"a", "c"}
    c_on_a = peer("c", "198.18.0.3", my_asn=1, routerID="192.0.2.1", nodeSelectors=[{"matchLabels": {"zone": "a"}}])
    with pytest.raises(ConfigError, match="same myASN"):
        parse([a, c_on_a], nodes=disjoint)
    with pytest.raises(ConfigError, match="same myASN"):
        parse([a, c], nodes={})    # a cluster without nodes: assume they share one, as MetalLB does


def test_validate_reports_every_problem():
    errors = validate([pool("a", "198.18.0.0/24"), pool("b", "198.18.0.0/25"), pool("c", "nonsense"),
                       peer("p", holdTime="1s"), bfd("f", detectMultiplier=1), "garbage"])
    fields = sorted((e.obj, e.field) for e in errors)
    assert fields == sorted([("IPAddressPool/b", "spec.addresses[0]"), ("IPAddressPool/c", "spec.addresses[0]"),
                             ("BGPPeer/p", "spec.holdTime"), ("BFDProfile/f", "spec.detectMultiplier"),
                             ("resources[5]", "")])


def test_parse_raises_a_permanent_error_before_a_transient_one():
    with pytest.raises(ConfigError) as info:
        parse([peer("p", bfdProfile="later"), pool("x", "bad")])
    assert not info.value.transient and info.value.obj == "IPAddressPool/x"


def test_unknown_fields_are_ignored_and_status_kinds_skipped():
    p = pool("p", "198.18.0.0/28", futureField={"x": 1})
    p["status"] = {"assignedIPv4": 3}
    status = {"apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status", "metadata": {"name": "l2-x"},
              "status": {"node": "n1"}}
    other = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    assert list(parse([p, status, other]).pools) == ["p"]


@pytest.mark.parametrize("resources,where", [
    ("not a list", "resources"),
    ([1], "resources[0]"),
    ([{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool"}], "metadata"),
    ([{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": ""}}], "metadata.name"),
    ([{"apiVersion": "metallb.io/v1beta2", "kind": "IPAddressPool", "metadata": {"name": "x"}}], "apiVersion"),
    ([{"apiVersion": "metallb.io/v1beta1", "kind": "Frobnicator", "metadata": {"name": "x"}}], "kind"),
    ([pool("p", "198.18.0.0/24") | {"spec": ["x"]}], "spec"),
    ([pool("p", 10)], "spec.addresses"),
    ([pool("p", "198.18.0.0/24", autoAssign="yes")], "spec.autoAssign"),
    ([peer("p", my_asn=True)], "spec.myASN"),
    ([peer("p", my_asn=1.5)], "spec.myASN"),
    ([peer("p", nodeSelectors="zone=a")], "spec.nodeSelectors"),
    ([peer("p", nodeSelectors=[{"matchLabels": {"a": None}}])], "spec.nodeSelectors[0].matchLabels"),
    ([l2("x", preferredNodeSelectors=[{"weight": 10}])], "preference"),
    ([obj("BGPPeer", "old", {"myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1", "nodeSelectors": "x"})], "spec"),
    ([obj("BGPPeer", "old", {"myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1", "nodeSelectors": ["x"]})], "spec"),
])
def test_garbage_is_a_config_error(resources, where):
    with pytest.raises(ConfigError) as info:
        parse(resources)
    assert where in (info.value.field or info.value.obj)


def test_preferred_selector_missing_preference_is_rejected_by_field():
    errors = validate([l2("x", preferredNodeSelectors=[{"weight": 10}])])
    assert errors and "preference" in errors[0].field


def test_disable_mp_warning_and_metallb_backend_warning():
    cfg = parse([peer("p", disableMP=True), obj("MetalLB", "m", {"bgpBackend": "frr-k8s"})])
    assert any("disableMP has no effect" in w for w in cfg.warnings)
    assert any("bgpBackend" in w for w in cfg.warnings)
    legacy = parse([obj("MetalLB", "m", {"bgpType": "frr"})])      # the deprecated name: same warning
    assert any("spec.bgpType 'frr' is ignored" in w for w in legacy.warnings)
    with pytest.raises(ConfigError, match="spec.bgpType"):
        parse([obj("MetalLB", "m", {"bgpType": "bird"})])


def test_secret_namespace_defaults_to_the_peers():
    s = secret("pw", "x")
    s["metadata"]["namespace"] = "other"
    p = peer("p", passwordSecret={"name": "pw", "namespace": "other"})
    assert parse([p], secrets={"other/pw": s}).peers["p"].password == "x"
    assert base64.b64decode(s["data"]["password"]) == b"x"
