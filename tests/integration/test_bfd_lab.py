"""BFD end to end in the network-namespace lab (issue 8): the lab's FRR router runs bfdd with a
300 ms x 3 profile on every neighbour, the lab applies a BFDProfile of the same name and binds
it to both BGPPeers, and the real agents run their own BFD sessions next to ExaBGP.

Checked in FRR's ``show bfd peers json``, the router's kernel (``ip route``), the agents'
metrics endpoints, and the API server (the controller's validating webhook).
"""
from __future__ import annotations

import json
import time

import pytest

from metalxdp.lab import tools as lt
from metalxdp.lab.cluster import kubectl
from metalxdp.lab.spec import NAMESPACE, LabSpec

from .test_bgp_lab import (NODE4, NODE6, NODES, established_lab, metallb, metrics, router, sample,
                           wait_equal, wait_hops)
from .test_bgp_lab import made  # noqa: F401 - the per-test Cleanup fixture, over this module's lab

pytestmark = pytest.mark.integration

PROFILE = "lab-bfd"
TIMERS = (300, 300, 3)
DETECT_LIMIT_S = 1.5          # issue 8: the router drops a cut node's next hop within this


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with established_lab(tmp_path_factory, "bfd", LabSpec(bfd_profile=PROFILE, bfd_timers=TIMERS),
                         timeout=90) as lab:
        wait_equal("6 BFD sessions up", lambda: bfd_up(lab), set(NODE4.values()) | set(NODE6.values()), 60)
        yield lab


def bfd_peers(lab) -> dict[str, dict]:
    return {p["peer"]: p for p in router(lab).json("show bfd peers")}


def bfd_up(lab) -> set[str]:
    return {a for a, p in bfd_peers(lab).items() if p["status"] == "up"}


def test_bfd_sessions_up_with_the_profile_timers(lab):
    rx, tx, mult = TIMERS
    peers = bfd_peers(lab)
    assert set(peers) == set(NODE4.values()) | set(NODE6.values())
    for addr, p in peers.items():
        assert p["status"] == "up", addr
        assert not p["multihop"]
        # the router's side (its profile) and what our agent advertised (the BFDProfile)
        assert (p["receive-interval"], p["transmit-interval"], p["detect-multiplier"]) == (rx, tx, mult)
        assert (p["remote-receive-interval"], p["remote-transmit-interval"],
                p["remote-detect-multiplier"]) == (rx, tx, mult), addr
    for node in NODES:
        def up():
            m = metrics(lab, node)
            return (sample(m, "metallb_bfd_session_up", peer="192.0.2.1"),
                    sample(m, "metallb_bfd_session_up", peer="2001:db8:0:1::1"))
        wait_equal(f"metallb_bfd_session_up on {node}'s agent", up, (1.0, 1.0))
        assert (sample(metrics(lab, node), "metallb_bfd_control_packet_input", peer="192.0.2.1") or 0) > 0


def test_link_cut_router_drops_the_next_hop_within_1_5_s_and_restore(lab, made):
    made.backend("web-b", "node2", {"app": "web-b"})
    v4, v6 = made.dual_stack_service("bfd-svc", pool="lab-bgp", selector={"app": "web-b"})
    all4 = set(NODE4.values())
    wait_hops(lab, v4, all4)
    wait_hops(lab, v6, set(NODE6.values()))
    detections = []
    for node in ("node1", "node3", "node1"):       # BGP hold time is 9 s: only BFD makes this fast
        others = all4 - {NODE4[node]}
        lab.set_link(node, up=False)
        cut = time.monotonic()
        try:
            while NODE4[node] in lt.router_nexthops(lab, v4) and time.monotonic() - cut < 15:
                time.sleep(0.01)
            took = time.monotonic() - cut
            detections.append(took)
            assert lt.router_nexthops(lab, v4) == others      # the route keeps the other next hops
            wait_hops(lab, v6, set(NODE6.values()) - {NODE6[node]}, timeout=5)
            assert lt.curl(lab, v4, timeout=2) == "web-b on node2"
            # the cut node's agent sees the session Down too (its metrics are on loopback)
            wait_equal(f"{node}'s agent sees BFD Down",
                       lambda: sample(metrics(lab, node), "metallb_bfd_session_up", peer="192.0.2.1"), 0.0, 10)
        finally:
            lab.set_link(node, up=True)
        wait_hops(lab, v4, all4, timeout=60)
        wait_hops(lab, v6, set(NODE6.values()), timeout=60)
        wait_equal("BFD up again on every session", lambda: bfd_up(lab),
                   set(NODE4.values()) | set(NODE6.values()), 30)
    print(f"next hop removed after link cut: {[round(d, 3) for d in detections]} s")
    assert max(detections) <= DETECT_LIMIT_S, detections


def test_bfd_profile_in_use_cannot_be_deleted(lab, made):
    """The controller's validating webhook is registered in the lab, so this goes through the
    API server as a user's `kubectl delete` would."""
    vwc = json.loads(kubectl(lab.kubeconfig(), "get", "validatingwebhookconfigurations", "-o", "json").stdout)
    assert vwc["items"], "the lab should register the controller's validating webhook"
    r = kubectl(lab.kubeconfig(), "delete", "bfdprofile", PROFILE, "-n", NAMESPACE, check=False)
    assert r.returncode != 0
    assert "router-v4" in r.stderr and "router-v6" in r.stderr, r.stderr
    kubectl(lab.kubeconfig(), "get", "bfdprofile", PROFILE, "-n", NAMESPACE)     # still there
    # a profile no peer uses can go
    made.obj(metallb("BFDProfile", "unused", {"receiveInterval": 500}))
    kubectl(lab.kubeconfig(), "delete", "bfdprofile", "unused", "-n", NAMESPACE)
