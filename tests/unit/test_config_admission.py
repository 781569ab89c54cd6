"""The admission decision (metalxdp.config.admission.review), MetalLB's webhook semantics."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from metalxdp.config.admission import review

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "config"))
from cases import CASES, bfd, bgpadv, community, l2, peer, pool  # noqa: E402


def test_create_in_the_wrong_namespace_is_denied():
    p = pool("a", "198.18.0.0/24")
    p["metadata"]["namespace"] = "default"
    allowed, message, _ = review("IPAddressPool", "CREATE", p, None, [])
    assert not allowed and "metallb-system namespace" in message
    assert review("IPAddressPool", "CREATE", p, None, [], namespace="default")[0]


def test_overlapping_pool_is_denied_naming_both():
    allowed, message, _ = review("IPAddressPool", "CREATE", pool("b", "198.18.0.128/25"), None,
                                 [pool("a", "198.18.0.0/24")])
    assert not allowed
    assert message.startswith("IPAddressPool/b: spec.addresses[0]") and "pool 'a'" in message


def test_update_replaces_the_stored_object():
    old = pool("a", "198.18.0.0/24")
    new = pool("a", "198.18.0.0/25")
    assert review("IPAddressPool", "UPDATE", new, old, [old, pool("b", "198.18.1.0/24")]) == (True, "", [])


def test_only_the_kinds_that_rule_are_considered():
    broken_peer = peer("x", holdTime="1s")  # stored before the webhook existed
    assert review("IPAddressPool", "CREATE", pool("a", "198.18.0.0/24"), None, [broken_peer])[0]
    allowed, message, _ = review("BGPPeer", "CREATE", peer("y", "198.18.9.9"), None, [broken_peer])
    assert not allowed and "BGPPeer/x" in message


def test_objects_in_other_namespaces_are_ignored():
    elsewhere = pool("a", "198.18.0.0/24")
    elsewhere["metadata"]["namespace"] = "other"
    assert review("IPAddressPool", "CREATE", pool("b", "198.18.0.0/24"), None, [elsewhere])[0]


def test_references_are_not_checked_at_admission():
    """Secrets, BFD profiles and community aliases may be created after the object."""
    assert review("BGPPeer", "CREATE", peer("p", bfdProfile="later", passwordSecret={"name": "s"}), None, [])[0]
    assert review("BGPAdvertisement", "CREATE", bgpadv("a", communities=["an-alias"]), None, [])[0]
    # but a malformed community value is refused
    assert not review("BGPAdvertisement", "CREATE", bgpadv("a", communities=["70000:1"]), None, [])[0]


def test_bfdprofile_delete_denied_while_referenced():
    profile = bfd("fast")
    existing = [profile, peer("p1", bfdProfile="fast"), peer("p2", "198.19.0.2", bfdProfile="other")]
    allowed, message, _ = review("BFDProfile", "DELETE", None, profile, existing)
    assert not allowed and "BGPPeer p1" in message and "p2" not in message
    assert review("BFDProfile", "DELETE", None, profile, [profile, peer("p1")])[0]
    assert review("IPAddressPool", "DELETE", None, pool("a", "198.18.0.0/24"), existing)[0]


def test_graceful_restart_is_immutable():
    old = peer("p", enableGracefulRestart=True)
    new = copy.deepcopy(old)
    new["spec"]["enableGracefulRestart"] = False
    allowed, message, _ = review("BGPPeer", "UPDATE", new, old, [old])
    assert not allowed and "enableGracefulRestart" in message
    same = copy.deepcopy(old)
    same["spec"]["holdTime"] = "30s"
    assert review("BGPPeer", "UPDATE", same, old, [old])[0]


def test_disable_mp_is_allowed_with_a_warning():
    allowed, _, warnings = review("BGPPeer", "CREATE", peer("p", disableMP=True), None, [])
    assert allowed and len(warnings) == 1 and "has no effect" in warnings[0]


def test_echo_mode_is_admitted_and_the_ipv6_rule_is_the_controllers():
    """As MetalLB: each kind's webhook validates its own scope, so a BFDProfile with echo mode is
    admitted even when an IPv6 pool is advertised to its peer; the controller's parse rejects
    the whole configuration (case bfd-echo-v6-pool-*)."""
    from metalxdp.config.parse import validate
    existing = [peer("r1", bfdProfile="b"), pool("p6", "2001:db8:5::/120"),
                bgpadv("a", ipAddressPools=["p6"])]
    assert review("BFDProfile", "CREATE", bfd("b", echoMode=True), None, existing)[0]
    errors = validate(existing + [bfd("b", echoMode=True)])
    assert any("has bfd echo enabled, which is not possible" in str(e) for e in errors), errors
    assert not validate(existing + [bfd("b", echoMode=False)])


def test_community_duplicate_alias_across_objects():
    allowed, message, _ = review("Community", "CREATE", community("c2", ("x", "1:2")), None,
                                 [community("c1", ("x", "1:1"))])
    assert not allowed and "alias 'x'" in message


def test_l2_advertisement_checked_with_pools():
    assert review("L2Advertisement", "CREATE", l2("l2", ipAddressPools=["a"]), None, [pool("a", "198.18.0.0/24")])[0]
    assert not review("L2Advertisement", "CREATE", l2("l2", ipAddressPools=["a", "a"]), None, [])[0]


def test_status_kinds_are_allowed_and_unknown_operations_refused():
    assert review("ServiceL2Status", "CREATE", {"metadata": {"name": "x"}}, None, []) == (True, "", [])
    for operation in ("CONNECT", "", "PATCH"):
        allowed, message, _ = review("IPAddressPool", operation, pool("a", "x"), None, [])
        assert not allowed and f"unknown admission operation {operation!r}" in message


@pytest.mark.parametrize("case", [c for c in CASES if c.level != "schema"],
                         ids=lambda c: c.id)
def test_table_through_admission(case):
    """Creating the case's objects one by one: the last one is refused iff the case is a parser-level
    rejection (the webhook accepts references that may appear later and does not read Secrets)."""
    stored: list = []
    for i, o in enumerate(case.resources):
        if o.get("apiVersion") == "v1":
            continue
        allowed, message, _ = review(o["kind"], "CREATE", o, None, stored, nodes=case.nodes)
        if i < len(case.resources) - 1:
            assert allowed, (case.id, message)
        stored.append(o)
    if case.level == "parser":
        assert not allowed and case.error_substring in message, message
    else:
        assert allowed, message
