"""Table tests for controller.allocator.

Each table is a story: its rows run in order against ONE allocator, so a row sees the state the
rows before it left ("s1 gets .0" -> "s2 can't take s1's IP" -> "s1 releases" -> "s2 can").
Every row asserts the exact addresses (or the exact error code), so a wrong choice fails.
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import pytest

from controller.allocator import MAX_INT64, AllocationError, Allocator, PoolCounters, PoolStatus
from metalxdp.config.types import LabelSelector, Pool, ServiceAllocation
from metalxdp.service import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK, ServiceSpec

ip = ipaddress.ip_address


def net(*cidrs: str):
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def pool(name: str, *cidrs: str, **kw) -> Pool:
    return Pool(name=name, cidrs=net(*cidrs), **kw)


def pools(*ps: Pool) -> dict[str, Pool]:
    return {p.name: p for p in ps}


def sel(**labels) -> LabelSelector:
    return LabelSelector(match_labels=tuple(sorted(labels.items())))


def svc(key: str, *, ips: tuple[str, ...] = (), ports=(("TCP", 80),), fams=(4,), policy=SINGLE_STACK,
        **kw) -> ServiceSpec:
    if "/" not in key:
        key = "default/" + key
    return ServiceSpec(key=key, requested_ips=tuple(ip(i) for i in ips), ports=frozenset(ports),
                       ip_families=fams, ip_family_policy=policy, **kw)


@dataclass
class Err:
    """Expect an AllocationError with this code (and optionally event reason)."""
    code: str
    reason: Optional[str] = None


# Row operations
ALLOC, ASSIGN, RELEASE, SET_POOLS = "allocate", "assign", "release", "set_pools"


def run(a: Allocator, rows: list[tuple]) -> None:
    """rows: (description, op, argument, expected).

    allocate: argument ServiceSpec, expected tuple of IP strings or Err.
    assign:   argument (ServiceSpec, ips), expected tuple of IP strings or Err.
    release:  argument key, expected bool.
    set_pools: argument pools dict, expected list of unassigned keys.
    """
    for desc, op, arg, want in rows:
        if op == RELEASE:
            assert a.release(arg) is want, desc
            continue
        if op == SET_POOLS:
            assert a.set_pools(arg) == want, desc
            continue
        try:
            got: Any = a.allocate(arg) if op == ALLOC else a.assign(arg[0], [ip(i) for i in arg[1]])
        except AllocationError as e:
            assert isinstance(want, Err), f"{desc}: unexpected {e}"
            assert e.code == want.code, f"{desc}: {e}"
            if want.reason:
                assert e.reason == want.reason, desc
            continue
        assert not isinstance(want, Err), f"{desc}: expected {want}, got {got}"
        assert tuple(str(i) for i in got.ips) == want, f"{desc}: got {got.ips}"
        key = arg.key if op == ALLOC else arg[0].key
        assert a.ips_of(key) == got.ips, desc


# --------------------------------------------------------------------------------------------
# Requested IPs, the pool annotation, release


def test_requested_ips_and_pool_annotation():
    a = Allocator(pools(pool("main", "198.18.0.0/24"),
                        pool("other", "198.19.0.0/24", auto_assign=False)))
    run(a, [
        ("s1 requests .1", ALLOC, svc("s1", ips=("198.18.0.1",)), ("198.18.0.1",)),
        ("s2 can't take s1's IP", ALLOC, svc("s2", ips=("198.18.0.1",)), Err("sharingNotAllowed")),
        ("s2 failed: it holds nothing", RELEASE, "default/s2", False),
        ("s1 releases", RELEASE, "default/s1", True),
        ("s2 can now", ALLOC, svc("s2", ips=("198.18.0.1",)), ("198.18.0.1",)),
        ("a dynamic service gets the lowest free address, .0", ALLOC, svc("s3"), ("198.18.0.0",)),
        ("next dynamic skips s2's .1", ALLOC, svc("s4"), ("198.18.0.2",)),
        ("an IP in no pool", ALLOC, svc("s5", ips=("203.0.113.1",)), Err("notAllowedByConfig")),
        ("requested IP outside the annotated pool", ALLOC,
         svc("s6", ips=("198.18.0.9",), pool_name="other"), Err("poolMismatch")),
        ("requested IP inside the annotated pool", ALLOC,
         svc("s6", ips=("198.19.0.9",), pool_name="other"), ("198.19.0.9",)),
        ("annotation picks a non-autoAssign pool", ALLOC, svc("s7", pool_name="other"),
         ("198.19.0.0",)),
        ("autoAssign=false pool is never picked by itself", ALLOC, svc("s8"), ("198.18.0.3",)),
        ("unknown pool", ALLOC, svc("s9", pool_name="nope"), Err("unknownPool", "AllocationFailed")),
        ("a requested IP may be a non-autoAssign pool's", ALLOC, svc("s10", ips=("198.19.0.200",)),
         ("198.19.0.200",)),
        ("two requested IPs of one family", ALLOC,
         svc("s11", ips=("198.18.0.50", "198.18.0.51")), Err("sameFamily")),
        ("requested v6 for a v4 service", ALLOC, svc("s12", ips=("2001:db8::1",)), Err("familyMismatch")),
    ])


def test_allocate_again_keeps_or_clears():
    a = Allocator(pools(pool("a", "198.18.0.0/29"), pool("b", "198.18.1.0/29", auto_assign=False)))
    s1 = svc("s1")
    first = a.allocate(s1)
    assert first.ips == (ip("198.18.0.0"),) and first.new and first.cleared is None
    again = a.allocate(s1)
    assert again.ips == first.ips and not again.new and again.cleared is None

    moved = a.allocate(replace(s1, requested_ips=(ip("198.18.0.5"),)))
    assert moved.ips == (ip("198.18.0.5"),)
    assert moved.cleared == "differentIPRequested" and moved.previous_ips == (ip("198.18.0.0"),)

    repooled = a.allocate(replace(s1, pool_name="b"))
    assert repooled.ips == (ip("198.18.1.0"),) and repooled.cleared == "differentPoolRequested"

    # Port change that now clashes with a co-holder: dropped and re-allocated elsewhere.
    a2 = Allocator(pools(pool("p", "198.18.0.0/30")))
    x = svc("x", sharing_key="k", ports=(("TCP", 80),))
    y = svc("y", sharing_key="k", ports=(("TCP", 443),))
    assert a2.allocate(x).ips == a2.allocate(y).ips == (ip("198.18.0.0"),)
    y2 = a2.allocate(replace(y, ports=frozenset({("TCP", 80)})))
    assert y2.ips == (ip("198.18.0.1"),) and y2.cleared == "notAllowedByConfig"

    # Failure after clearing tells the controller both things.
    a3 = Allocator(pools(pool("p", "198.18.0.0/32")))
    a3.allocate(svc("z"))
    with pytest.raises(AllocationError) as e:
        a3.allocate(svc("z", ips=("198.19.9.9",)))
    assert e.value.code == "notAllowedByConfig" and e.value.cleared == "differentIPRequested"
    assert e.value.previous_ips == (ip("198.18.0.0"),) and a3.ips_of("default/z") == ()


# --------------------------------------------------------------------------------------------
# Sharing


def test_sharing_rules():
    a = Allocator(pools(pool("p", "198.18.0.0/30")))
    k80 = dict(sharing_key="k", ports=(("TCP", 80),))
    run(a, [
        ("a: key k, TCP/80 -> .0", ALLOC, svc("a", **k80), ("198.18.0.0",)),
        ("b: key k, TCP/443 co-locates on .0", ALLOC,
         svc("b", sharing_key="k", ports=(("TCP", 443),)), ("198.18.0.0",)),
        ("c: key k but TCP/80 clashes on .0 -> .1", ALLOC, svc("c", **k80), ("198.18.0.1",)),
        ("d: other key skips .0 and .1", ALLOC,
         svc("d", sharing_key="other", ports=(("TCP", 22),)), ("198.18.0.2",)),
        ("e: no key -> .3", ALLOC, svc("e", ports=(("TCP", 9),)), ("198.18.0.3",)),
        ("pool full for a keyless service", ALLOC, svc("f"), Err("noAvailableIPs")),
        ("request .0 with a clashing port", ALLOC, svc("g", ips=("198.18.0.0",), **k80),
         Err("portConflict")),
        ("request .0 with another key", ALLOC,
         svc("g", ips=("198.18.0.0",), sharing_key="k2", ports=(("TCP", 8080),)),
         Err("sharingKeyMismatch")),
        ("request .0 with same key, other backend (ETP Local)", ALLOC,
         svc("g", ips=("198.18.0.0",), sharing_key="k", backend_key="app=x", ports=(("TCP", 8080),)),
         Err("backendKeyMismatch")),
        ("request .3 held by a keyless service", ALLOC,
         svc("g", ips=("198.18.0.3",), sharing_key="k", ports=(("TCP", 8080),)),
         Err("sharingNotAllowed")),
        ("keyless request on a shared address", ALLOC,
         svc("g", ips=("198.18.0.0",), ports=(("TCP", 8080),)), Err("sharingNotAllowed")),
        ("UDP/80 does not clash with TCP/80", ALLOC,
         svc("h", sharing_key="k", ports=(("UDP", 80),)), ("198.18.0.0",)),
        ("a releases TCP/80 on .0", RELEASE, "default/a", True),
        ("now TCP/80 on .0 is free for g", ALLOC, svc("g", ips=("198.18.0.0",), **k80), ("198.18.0.0",)),
        ("d releases .2", RELEASE, "default/d", True),
        ("keyless service gets .2 back", ALLOC, svc("f"), ("198.18.0.2",)),
    ])
    assert a.services_on(ip("198.18.0.0")) == ("default/b", "default/g", "default/h")
    # The shared address counts once.
    assert a.pool_status("p") == PoolStatus(assigned_ipv4=4, available_ipv4=0)


def test_sole_holder_may_change_its_own_sharing_key():
    a = Allocator(pools(pool("p", "198.18.0.0/31")))
    run(a, [
        ("x without key", ALLOC, svc("x"), ("198.18.0.0",)),
        ("x adds a key in place", ALLOC, svc("x", sharing_key="k"), ("198.18.0.0",)),
        ("y joins under the new key", ALLOC, svc("y", sharing_key="k", ports=(("TCP", 81),)),
         ("198.18.0.0",)),
        ("x drops its key: y is on the address -> x moves", ALLOC, svc("x"), ("198.18.0.1",)),
    ])


# --------------------------------------------------------------------------------------------
# Pool selection: serviceAllocation, priority, fallback


def test_pool_selection_by_namespace_selectors_and_priority():
    prod = {"env": "prod"}
    a = Allocator(pools(
        pool("a-default", "198.18.0.0/29"),
        pool("manual", "198.18.1.0/29", auto_assign=False),
        pool("ns-pool", "198.18.2.0/29",
             service_allocation=ServiceAllocation(namespaces=frozenset({"team-a"}))),
        pool("nssel-pool", "198.18.3.0/29",
             service_allocation=ServiceAllocation(priority=20, namespace_selectors=(sel(env="prod"),))),
        pool("svcsel-pool", "198.18.4.0/29",
             service_allocation=ServiceAllocation(priority=10, service_selectors=(sel(app="web"),))),
        pool("manual-ns", "198.18.5.0/29", auto_assign=False,
             service_allocation=ServiceAllocation(priority=1, namespaces=frozenset({"team-a"}))),
    ))
    run(a, [
        ("plain service -> fallback pool", ALLOC, svc("default/s1"), ("198.18.0.0",)),
        ("team-a namespace -> ns-pool (autoAssign=false manual-ns skipped)", ALLOC,
         svc("team-a/s2"), ("198.18.2.0",)),
        ("namespace labelled env=prod -> nssel-pool", ALLOC,
         svc("shop/s3", namespace_labels=prod), ("198.18.3.0",)),
        ("app=web in team-a: svcsel (10) before ns-pool (0 = last)", ALLOC,
         svc("team-a/s4", labels={"app": "web"}), ("198.18.4.0",)),
        ("app=web in prod ns: svcsel (10) before nssel (20)", ALLOC,
         svc("shop/s5", labels={"app": "web"}, namespace_labels=prod), ("198.18.4.1",)),
        ("app=db in other ns: selectors don't match -> fallback", ALLOC,
         svc("other/s6", labels={"app": "db"}), ("198.18.0.1",)),
        ("annotation ignores autoAssign", ALLOC, svc("default/s7", pool_name="manual"),
         ("198.18.1.0",)),
        ("annotation on a pool restricted to another namespace", ALLOC,
         svc("default/s8", pool_name="ns-pool"), Err("incompatiblePool")),
        ("requested IP in a pool restricted to another namespace", ALLOC,
         svc("default/s8", ips=("198.18.2.5",)), Err("incompatiblePool")),
        ("requested IP in a restricted pool from the right namespace", ALLOC,
         svc("team-a/s8", ips=("198.18.2.5",)), ("198.18.2.5",)),
        ("annotation on a restricted non-autoAssign pool, right namespace", ALLOC,
         svc("team-a/s9", pool_name="manual-ns"), ("198.18.5.0",)),
    ])


def test_priority_order_ties_by_name_then_fallback():
    a = Allocator(pools(
        pool("z", "198.18.0.1/32", service_allocation=ServiceAllocation(priority=1)),
        pool("y", "198.18.0.2/32", service_allocation=ServiceAllocation(priority=1)),
        pool("x", "198.18.0.3/32", service_allocation=ServiceAllocation()),  # priority-only: everyone
        pool("w", "198.18.0.4/32", service_allocation=ServiceAllocation(priority=2)),
        pool("f", "198.18.0.5/32"),
    ))
    run(a, [
        ("priority 1 tie: y before z (by name)", ALLOC, svc("s1"), ("198.18.0.2",)),
        ("then z", ALLOC, svc("s2"), ("198.18.0.1",)),
        ("then priority 2", ALLOC, svc("s3"), ("198.18.0.4",)),
        ("then the unset priority (0 = last)", ALLOC, svc("s4"), ("198.18.0.3",)),
        ("then the fallback pool", ALLOC, svc("s5"), ("198.18.0.5",)),
        ("everything used", ALLOC, svc("s6"), Err("noAvailableIPs")),
        ("z frees its address", RELEASE, "default/s2", True),
        ("next service goes back to z", ALLOC, svc("s6"), ("198.18.0.1",)),
    ])


# --------------------------------------------------------------------------------------------
# Addresses inside a pool: spec order, network/broadcast, avoidBuggyIPs


def test_cidr_order_network_broadcast_and_buggy_ips():
    a = Allocator(pools(
        pool("buggy", "198.18.0.255/32", "198.18.1.0/31", avoid_buggy_ips=True),
        pool("plain", "198.19.0.254/31", "198.19.0.0/31"),
    ))
    run(a, [
        ("buggy: .255/32 and .0 skipped -> 198.18.1.1", ALLOC, svc("b1", pool_name="buggy"),
         ("198.18.1.1",)),
        ("buggy pool has nothing else", ALLOC, svc("b2", pool_name="buggy"), Err("noAvailableIPs")),
        ("a buggy address is not even in the pool", ALLOC, svc("b3", ips=("198.18.1.0",)),
         Err("notAllowedByConfig")),
        ("plain: CIDRs in spec order, .254 first", ALLOC, svc("p1", pool_name="plain"),
         ("198.19.0.254",)),
        ("then the broadcast-looking .255", ALLOC, svc("p2", pool_name="plain"), ("198.19.0.255",)),
        ("then the second CIDR's .0", ALLOC, svc("p3", pool_name="plain"), ("198.19.0.0",)),
    ])
    assert a.counters("buggy") == PoolCounters(1, 1, 0, 1, 1, 0, 1)


def test_whole_slash24_with_and_without_avoid_buggy_ips():
    a = Allocator(pools(pool("all", "198.18.0.0/24"),
                        pool("safe", "198.18.1.0/24", avoid_buggy_ips=True)))
    got = [a.allocate(svc(f"s{i}", pool_name="all")).ips[0] for i in range(256)]
    assert got == list(ipaddress.ip_network("198.18.0.0/24"))        # .0 and .255 included
    got = [a.allocate(svc(f"t{i}", pool_name="safe")).ips[0] for i in range(254)]
    assert got[0] == ip("198.18.1.1") and got[-1] == ip("198.18.1.254")
    with pytest.raises(AllocationError):
        a.allocate(svc("t-extra", pool_name="safe"))
    assert a.pool_status("safe") == PoolStatus(assigned_ipv4=254, available_ipv4=0)


# --------------------------------------------------------------------------------------------
# Dual stack


def test_dual_stack_policies():
    a = Allocator(pools(
        pool("dual", "198.19.0.0/30", "2001:db8::/126"),
        pool("v4", "198.18.0.0/30"),
        pool("v6", "2001:db8:1::/126"),
    ))
    dual46 = dict(fams=(4, 6), cluster_ips=2)
    dual64 = dict(fams=(6, 4), cluster_ips=2)
    run(a, [
        ("single-stack v4: first pool by name serving v4", ALLOC, svc("s4"), ("198.19.0.0",)),
        ("single-stack v6", ALLOC, svc("s6", fams=(6,)), ("2001:db8::",)),
        ("RequireDualStack: both from the dual pool", ALLOC,
         svc("r1", policy=REQUIRE_DUAL_STACK, **dual46), ("198.19.0.1", "2001:db8::1")),
        ("PreferDualStack v6-first: still IPv4 listed first (as MetalLB)", ALLOC,
         svc("p1", policy=PREFER_DUAL_STACK, **dual64), ("198.19.0.2", "2001:db8::2")),
        ("RequireDualStack with a single clusterIP", ALLOC,
         svc("r2", policy=REQUIRE_DUAL_STACK, fams=(4, 6), cluster_ips=1),
         Err("notEnoughClusterIPs")),
        ("PreferDualStack on a single-stack cluster: one clusterIP -> v4 only", ALLOC,
         svc("p2", policy=PREFER_DUAL_STACK, fams=(4, 6), cluster_ips=1), ("198.19.0.3",)),
        ("dual pool has no v4 left: RequireDualStack fails", ALLOC,
         svc("r3", policy=REQUIRE_DUAL_STACK, **dual46), Err("noAvailableIPs")),
        ("PreferDualStack v4-first: first pool with v4", ALLOC,
         svc("p3", policy=PREFER_DUAL_STACK, **dual46), ("198.18.0.0",)),
        ("PreferDualStack v6-first: first pool with v6", ALLOC,
         svc("p4", policy=PREFER_DUAL_STACK, **dual64), ("2001:db8::3",)),
        ("requested pair for a dual service", ALLOC,
         svc("q1", policy=REQUIRE_DUAL_STACK, ips=("198.18.0.3", "2001:db8:1::3"), **dual46),
         Err("notAllowedByConfig")),   # two pools: not allowed
        ("requested pair inside one pool", ALLOC,
         svc("q1", policy=REQUIRE_DUAL_STACK, ips=("198.18.0.3",), **dual46), Err("familyMismatch")),
        ("s4 frees 198.19.0.0", RELEASE, "default/s4", True),
        ("r3 now fits", ALLOC, svc("r3", policy=REQUIRE_DUAL_STACK, **dual46),
         Err("noAvailableIPs")),  # v6 of dual is exhausted too (2001:db8::..3 used)
    ])
    # PreferDualStack holding one family picks up the other from the same pool when it can.
    p4 = svc("p4", policy=PREFER_DUAL_STACK, **dual64)
    got = a.allocate(p4)
    assert got.ips == (ip("2001:db8::3"), ip("198.19.0.0")) and got.added == ip("198.19.0.0")
    p3 = svc("p3", policy=PREFER_DUAL_STACK, **dual46)
    kept = a.allocate(p3)
    assert kept.ips == (ip("198.18.0.0"),) and not kept.new
    assert kept.additional_failed == "no available IPs in pool 'v4' for ipv6 IPFamily"


def test_dual_pool_with_requested_pair_and_pool_annotation():
    a = Allocator(pools(pool("dual", "198.19.0.0/30", "2001:db8::/126"), pool("v4", "198.18.0.0/30")))
    run(a, [
        ("requested pair in one pool", ALLOC,
         svc("q", policy=REQUIRE_DUAL_STACK, fams=(4, 6), cluster_ips=2,
             ips=("2001:db8::2", "198.19.0.2")), ("2001:db8::2", "198.19.0.2")),
        ("RequireDualStack from a v4-only annotated pool", ALLOC,
         svc("r", policy=REQUIRE_DUAL_STACK, fams=(4, 6), cluster_ips=2, pool_name="v4"),
         Err("noAvailableIPs")),
        ("PreferDualStack from a v4-only annotated pool: v4 only", ALLOC,
         svc("p", policy=PREFER_DUAL_STACK, fams=(6, 4), cluster_ips=2, pool_name="v4"),
         ("198.18.0.0",)),
    ])


# --------------------------------------------------------------------------------------------
# Pool changes and restart (assign)


def test_pool_removal_and_changes():
    a = Allocator(pools(pool("A", "198.18.0.0/30"), pool("B", "198.18.1.0/30")))
    b_restricted = pool("B", "198.18.1.0/29",
                        service_allocation=ServiceAllocation(namespaces=frozenset({"elsewhere"})))
    run(a, [
        ("s1 -> pool A", ALLOC, svc("s1"), ("198.18.0.0",)),
        ("s2 requests an address of B", ALLOC, svc("s2", ips=("198.18.1.1",)), ("198.18.1.1",)),
        ("s3, s4 share an address of A", ALLOC, svc("s3", sharing_key="k"), ("198.18.0.1",)),
        ("s4 shares it", ALLOC, svc("s4", sharing_key="k", ports=(("UDP", 53),)), ("198.18.0.1",)),
        ("pool A deleted: its services are unassigned", SET_POOLS, pools(pool("B", "198.18.1.0/30")),
         ["default/s1", "default/s3", "default/s4"]),
        ("s1 reallocates in B, skipping s2's .1", ALLOC, svc("s1"), ("198.18.1.0",)),
        ("B grows and is restricted to another namespace: nobody moves", SET_POOLS,
         pools(b_restricted), []),
        ("s2 keeps its address", ALLOC, svc("s2", ips=("198.18.1.1",)), ("198.18.1.1",)),
        ("s1 keeps its address", ALLOC, svc("s1"), ("198.18.1.0",)),
        ("but a new default/ service can't use B", ALLOC, svc("s5"), Err("noAvailableIPs")),
        ("B renamed C, same addresses: nothing unassigned", SET_POOLS,
         pools(pool("C", "198.18.1.0/29")), []),
        ("B shrinks to exclude .1 and turns avoidBuggyIPs on: s1 on .0 goes too", SET_POOLS,
         pools(pool("C", "198.18.1.2/31", "198.18.1.0/32", avoid_buggy_ips=True)),
         ["default/s1", "default/s2"]),
        ("s5 gets the lowest usable address of C", ALLOC, svc("s5"), ("198.18.1.2",)),
    ])
    assert a.pool_of("default/s5") == "C"
    assert a.counters("A") == PoolCounters()       # deleted pool: zeros, as MetalLB


def test_assign_relearns_and_refuses_conflicts():
    a = Allocator(pools(pool("p", "198.18.0.0/29"),
                        pool("team", "198.18.1.0/29",
                             service_allocation=ServiceAllocation(namespaces=frozenset({"team"})))))
    run(a, [
        ("relearn s1 on .5", ASSIGN, (svc("s1"), ["198.18.0.5"]), ("198.18.0.5",)),
        ("s2 claims the same address without a key", ASSIGN, (svc("s2"), ["198.18.0.5"]),
         Err("sharingNotAllowed", "ClearAssignment")),
        ("an address of no pool", ASSIGN, (svc("s3"), ["203.0.113.4"]),
         Err("notAllowedByConfig", "ClearAssignment")),
        ("a v6 address for a v4 service", ASSIGN, (svc("s3"), ["2001:db8::1"]),
         Err("familyMismatch", "ClearAssignment")),
        ("same family twice", ASSIGN, (svc("s3", fams=(4, 6), cluster_ips=2,
                                           policy=REQUIRE_DUAL_STACK), ["198.18.0.1", "198.18.0.2"]),
         Err("sameFamily", "ClearAssignment")),
        ("wrong family for the service", ASSIGN, (svc("s3", fams=(6,)), ["198.18.0.1"]),
         Err("familyMismatch", "ClearAssignment")),
        ("relearn a restricted pool's address from another namespace (kept, as at runtime)",
         ASSIGN, (svc("default/s4"), ["198.18.1.3"]), ("198.18.1.3",)),
        ("allocation after relearning skips relearned addresses", ALLOC, svc("s5"), ("198.18.0.0",)),
        ("s1 allocate: keeps .5", ALLOC, svc("s1"), ("198.18.0.5",)),
        ("s4 allocate: keeps its address", ALLOC, svc("default/s4"), ("198.18.1.3",)),
    ])
    assert not a.allocate(svc("s1")).new


# --------------------------------------------------------------------------------------------
# Counters, big pools


def test_counters_and_pool_status():
    a = Allocator(pools(pool("mix", "198.18.0.0/24", "2001:db8::/120"),
                        pool("huge", "2001:db8:1::/64"),
                        pool("safe", "198.19.2.0/23", avoid_buggy_ips=True)))
    assert a.counters("mix") == PoolCounters(512, 256, 256, 0, 0, 0)
    assert a.counters("huge") == PoolCounters(MAX_INT64, 0, MAX_INT64, 0, 0, 0)
    assert a.counters("safe").ipv4_addresses_total == 508
    a.allocate(svc("v4", sharing_key="k"))
    a.allocate(svc("v4b", sharing_key="k", ports=(("TCP", 443),)))   # same address
    assert a.allocate(svc("v6", fams=(6,))).ips == (ip("2001:db8:1::"),)   # "huge" sorts before "mix"
    a.allocate(svc("v6b", fams=(6,), pool_name="mix"))
    assert a.counters("mix") == PoolCounters(512, 256, 256, 2, 1, 1, 3)   # v4, v4b share one IP
    assert a.pool_status("mix") == PoolStatus(1, 1, 255, 255)
    assert a.pool_status("huge") == PoolStatus(0, 1, 0, MAX_INT64 - 1)
    assert a.counters("huge") == PoolCounters(MAX_INT64, 0, MAX_INT64, 1, 0, 1, 1)
    a.release("default/v4")
    assert a.pool_status("mix") == PoolStatus(1, 1, 255, 255)   # v4b still on it
    a.release("default/v4b")
    assert a.pool_status("mix") == PoolStatus(0, 1, 256, 255)


# Each row acts on the allocator left by the rows before it, then checks every pool's
# services_allocated_total (MetalLB's gauge: services holding an address of the pool).
SERVICES_ALLOCATED_STEPS = [
    ("s1 takes an address of A", lambda a: a.allocate(svc("s1", sharing_key="k")), {"A": 1, "B": 0}),
    ("s2 asks for B", lambda a: a.allocate(svc("s2", pool_name="B")), {"A": 1, "B": 1}),
    ("s3 shares s1's address", lambda a: a.allocate(svc("s3", ips=("192.0.2.0",), sharing_key="k",
                                                        ports=(("TCP", 81),))), {"A": 2, "B": 1}),
    ("s1 is reallocated unchanged", lambda a: a.allocate(svc("s1", sharing_key="k")), {"A": 2, "B": 1}),
    ("s2 moves to A (asks for an IP there)", lambda a: a.allocate(svc("s2", ips=("192.0.2.5",))),
     {"A": 3, "B": 0}),
    ("s3 releases", lambda a: a.release("default/s3"), {"A": 2, "B": 0}),
    ("A shrinks and loses s2's address", lambda a: a.set_pools(pools(pool("A", "192.0.2.0/30"),
                                                                      pool("B", "198.51.100.0/30"))),
     {"A": 1, "B": 0}),
    ("A is renamed C: its service follows", lambda a: a.set_pools(pools(pool("C", "192.0.2.0/30"),
                                                                         pool("B", "198.51.100.0/30"))),
     {"A": 0, "B": 0, "C": 1}),
    ("s1 releases", lambda a: a.release("default/s1"), {"B": 0, "C": 0}),
]


def test_services_allocated_total_follows_every_change():
    a = Allocator(pools(pool("A", "192.0.2.0/29"), pool("B", "198.51.100.0/30", auto_assign=False)))
    for desc, step, want in SERVICES_ALLOCATED_STEPS:
        step(a)
        got = {name: a.counters(name).services_allocated_total for name in want}
        assert got == want, desc


def test_big_ipv6_pool_is_not_enumerated():
    a = Allocator(pools(pool("v6", "2001:db8::/64")))
    start = time.perf_counter()
    got = [a.allocate(svc(f"s{i}", fams=(6,))).ips[0] for i in range(2000)]
    assert time.perf_counter() - start < 2.0
    assert got[0] == ip("2001:db8::") and got[-1] == ip("2001:db8::7cf")
    run(a, [
        ("s16 frees 2001:db8::10", RELEASE, "default/s16", True),
        ("the lowest free address is reused", ALLOC, svc("n1", fams=(6,)), ("2001:db8::10",)),
        ("then allocation continues after the highest", ALLOC, svc("n2", fams=(6,)), ("2001:db8::7d0",)),
        ("a requested far address", ALLOC, svc("n3", fams=(6,), ips=("2001:db8::ffff:ffff:ffff:ffff",)),
         ("2001:db8::ffff:ffff:ffff:ffff",)),
    ])


def test_exhaustion_and_reuse_in_order():
    a = Allocator(pools(pool("p", "198.18.0.0/29")))
    for i in range(8):
        assert a.allocate(svc(f"s{i}")).ips == (ip(f"198.18.0.{i}"),)
    with pytest.raises(AllocationError) as e:
        a.allocate(svc("extra"))
    assert (e.value.reason, e.value.code, e.value.message) == (
        "AllocationFailed", "noAvailableIPs", "no available IPs")
    for i in (6, 2, 4):
        a.release(f"default/s{i}")
    assert [a.allocate(svc(f"n{i}")).ips[0] for i in range(3)] == [
        ip("198.18.0.2"), ip("198.18.0.4"), ip("198.18.0.6")]


def test_resync_does_not_grow_free_lists():
    a = Allocator(pools(pool("p", "198.18.0.0/24")))
    s = [svc(f"s{i}") for i in range(10)]
    for x in s:
        a.allocate(x)
    for _ in range(100):
        for x in s:
            assert not a.allocate(x).new
    assert all(not r.freed for st in a._pools.values() for r in st.ranges)


# --------------------------------------------------------------------------------------------
# Differential test: the fast paths (hints, free-heaps, sharing skip index) against a brute-force
# model of MetalLB's scan (every address of every CIDR, lowest first).


class _BruteForce:
    def __init__(self, pool_list):
        self.pools = sorted(pool_list, key=lambda p: p.name)  # all fallback pools
        self.holders: dict = {}   # ip -> {svc: (sharing, backend, ports)}
        self.of: dict = {}        # svc -> ip

    def _ok(self, ip_, s: ServiceSpec) -> bool:
        users = self.holders.get(ip_, {})
        for other, (sk, bk, ports) in users.items():
            if not sk or not s.sharing_key or sk != s.sharing_key or bk != s.backend_key:
                return False
            if ports & s.ports:
                return False
        return True

    def allocate(self, s: ServiceSpec):
        for p in self.pools:
            for c in p.cidrs:
                for ip_ in c:
                    if p.avoid_buggy_ips and int(ip_) & 0xFF in (0, 255):
                        continue
                    if self._ok(ip_, s):
                        self.holders.setdefault(ip_, {})[s.key] = (s.sharing_key, s.backend_key, s.ports)
                        self.of[s.key] = ip_
                        return ip_
        return None

    def release(self, key):
        ip_ = self.of.pop(key, None)
        if ip_ is not None:
            del self.holders[ip_][key]
            if not self.holders[ip_]:
                del self.holders[ip_]


@pytest.mark.parametrize("seed", range(12))
def test_fast_paths_match_brute_force(seed):
    import random
    rnd = random.Random(seed)
    plist = [pool("a", "198.18.0.252/30", "198.18.1.0/29"),
             pool("b", "198.18.2.0/26", avoid_buggy_ips=True)]
    a, ref = Allocator(pools(*plist)), _BruteForce(plist)
    live: list[str] = []
    all_ports = [("TCP", 80), ("TCP", 443), ("UDP", 53)]
    for step in range(600):
        if live and rnd.random() < 0.4:
            key = live.pop(rnd.randrange(len(live)))
            a.release(key)
            ref.release(key)
            continue
        key = f"ns/s{step}"
        s = ServiceSpec(key=key,
                        sharing_key=rnd.choice([None, "a", "b"]),
                        backend_key=rnd.choice(["", "", "x"]),
                        ports=frozenset(p for p in all_ports if rnd.random() < 0.5))
        want = ref.allocate(s)
        try:
            got = a.allocate(s).ips[0]
        except AllocationError:
            got = None
        assert got == want, f"seed {seed} step {step}: {s}"
        if got is not None:
            live.append(key)
