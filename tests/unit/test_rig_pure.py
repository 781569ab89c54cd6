"""Pure helpers of the rig and the Kubernetes boundary: FRR config split, route parsing, events."""
import pytest

from metalxdp.kube import service_event
from metalxdp.rig.frr import BFDTimers, Neighbor, RouterSpec, render_frr_conf, route_gateways, split_bfd_block


@pytest.mark.parametrize("ip_json, want", [
    ("", set()),
    ("[]", set()),
    ('[{"dst": "203.0.113.0", "gateway": "192.0.2.11"}]', {"192.0.2.11"}),
    ('[{"dst": "203.0.113.0", "nexthops": [{"gateway": "192.0.2.11"}, {"gateway": "192.0.2.13"}]}]',
     {"192.0.2.11", "192.0.2.13"}),
    ('[{"dst": "203.0.113.0", "dev": "eth0"}]', set()),      # connected route: no gateway
])
def test_route_gateways(ip_json, want):
    assert route_gateways(ip_json) == want


def test_bfd_block_goes_to_bfdd_alone():
    conf = render_frr_conf(RouterSpec(64512, "192.0.2.1", (Neighbor("192.0.2.11", 64513, bfd_profile="p"),),
                                      bfd_profiles=(BFDTimers("p", 100, 200, 4, passive=True),)))
    main, bfd = split_bfd_block(conf)
    assert bfd.splitlines() == ["bfd", " profile p", "  receive-interval 100", "  transmit-interval 200",
                                "  detect-multiplier 4", "  passive-mode", " exit", "exit"]
    assert "router bgp 64512" in main and "receive-interval" not in main
    assert " neighbor 192.0.2.11 bfd profile p" in main
    assert split_bfd_block("router bgp 1\nexit\n") == ("router bgp 1\nexit\n", "")


def test_service_event_names_the_service_and_component():
    svc = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7"}}
    ev = service_event(svc, "Warning", "AllocationFailed", "no IP", "metallb-controller")
    assert ev["involvedObject"] == {"kind": "Service", "apiVersion": "v1", "name": "web", "namespace": "shop",
                                    "uid": "u1", "resourceVersion": "7"}
    assert ev["metadata"] == {"generateName": "web.", "namespace": "shop"}
    assert (ev["type"], ev["reason"], ev["message"]) == ("Warning", "AllocationFailed", "no IP")
    assert ev["source"] == {"component": "metallb-controller"}
    assert service_event(svc, "Normal", "nodeAssigned", "x", "metallb-speaker", host="node1")["source"] == \
        {"component": "metallb-speaker", "host": "node1"}
