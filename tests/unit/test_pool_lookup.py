"""The one "which pool holds this IP" lookup (``Config.pool_for_ip`` / ``pool_for_ips``), with
MetalLB's avoidBuggyIPs rule, and the three users that must agree on it: the allocator, the L2
election and the BGP decision."""
from __future__ import annotations

import ipaddress

import pytest

from agent import election
from agent.bgp import advertise as bgpadv
from agent.nodeview import NodeView
from controller.allocator import Allocator
from metalxdp.config.types import BGPAdvertisement, Config, L2Advertisement, Pool

ip = ipaddress.ip_address
net = ipaddress.ip_network

PLAIN = Pool("plain", (net("192.0.2.0/24"), net("2001:db8:0:2::/120")))
BUGGY = Pool("buggy", (net("198.19.0.0/23"),), avoid_buggy_ips=True)
OTHER = Pool("other", (net("203.0.113.0/24"),))
CONFIG = Config(pools={p.name: p for p in (PLAIN, BUGGY, OTHER)},
                l2_advertisements=(L2Advertisement("all", frozenset({"plain", "buggy", "other"})),),
                bgp_advertisements=(BGPAdvertisement("all", frozenset({"plain", "buggy", "other"})),))

ONE = [  # (address, the pool holding it or None)
    ("192.0.2.0", "plain"),              # .0 is an address like any other without avoidBuggyIPs
    ("192.0.2.255", "plain"),
    ("2001:db8:0:2::ff", "plain"),
    ("198.19.0.1", "buggy"),
    ("198.19.0.0", None),              # avoidBuggyIPs: .0 and .255 are not the pool's
    ("198.19.0.255", None),
    ("198.19.1.0", None),              # ... in every /24 of the CIDR
    ("198.19.1.254", "buggy"),
    ("203.0.113.7", "other"),
    ("198.18.0.1", None),                # in no pool
]


@pytest.mark.parametrize("addr,want", ONE, ids=[a for a, _ in ONE])
def test_pool_for_ip_and_its_users_agree(addr, want):
    p = CONFIG.pool_for_ip(ip(addr))
    assert (p.name if p else None) == want
    # the allocator (controller) ...
    assert Allocator(CONFIG.pools).pool_for_ip(ip(addr)) == want
    # ... the L2 election ...
    svc = election.ServiceView("ns/s", (ip(addr),), has_serving_endpoint=True)
    d = election.announcing_node_for(svc, [NodeView("node1")], CONFIG, None)
    assert (d.pool, d.reason) == ((want, election.ANNOUNCE) if want else (None, election.IP_NOT_ALLOWED))
    # ... and the BGP decision
    bsvc = bgpadv.ServiceView("ns/s", (ip(addr),), has_any_ready_endpoint=True)
    assert bgpadv.should_announce(CONFIG, NodeView("node1"), bsvc) == (None if want else bgpadv.NO_POOL)


MANY = [  # (addresses, hint, the one pool holding them all or None)
    (("192.0.2.5", "2001:db8:0:2::5"), None, "plain"),
    (("192.0.2.5", "203.0.113.5"), None, None),            # two pools: not one Service's
    (("192.0.2.5", "198.18.0.1"), None, None),
    (("198.19.0.5",), "buggy", "buggy"),
    (("198.19.0.0",), "buggy", None),                     # the hint does not make .0 usable
    (("192.0.2.5",), "other", "plain"),                     # a hint that does not hold them is ignored
    (("192.0.2.5",), "gone", "plain"),                      # ... as is one that does not exist
    ((), None, None),
]


@pytest.mark.parametrize("addrs,hint,want", MANY, ids=[f"{','.join(a) or 'none'} hint={h}" for a, h, _ in MANY])
def test_pool_for_ips(addrs, hint, want):
    p = CONFIG.pool_for_ips(tuple(ip(a) for a in addrs), hint=hint)
    assert (p.name if p else None) == want
