"""LabSpec.metallb_resources for a MetalLB lab (lb="metallb"): what MetalLB's native BGP mode
admits (spec.native_mode), the L2 objects unchanged, and the result still a valid metalxdp
configuration (both labs apply the same objects but for those reductions)."""
from __future__ import annotations

import pytest

from metalxdp.config.parse import parse
from metalxdp.lab.spec import LabSpec, native_mode


def by(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_metalxdp_lab_keeps_both_families_and_both_peers():
    objs = LabSpec().metallb_resources()
    assert sorted(by(objs, "BGPPeer")) == ["router-v4", "router-v6"]
    assert any(":" in a for a in by(objs, "IPAddressPool")["lab-bgp"]["spec"]["addresses"])


@pytest.mark.parametrize("kind,name,check", [
    ("IPAddressPool", "lab-bgp", lambda o: o["spec"]["addresses"] == ["203.0.113.0/26"]),
    ("IPAddressPool", "lab-l2", lambda o: o["spec"]["addresses"] == ["192.0.2.200-192.0.2.219", "2001:db8:0:1::200/124"]),
    ("BGPPeer", "router-v4", lambda o: "keepaliveTime" not in o["spec"] and o["spec"]["holdTime"] == "9s"),
    ("BGPPeer", "router-v6", lambda o: o is None),
    ("L2Advertisement", "lab-l2", lambda o: o["spec"] == {"ipAddressPools": ["lab-l2"]}),
    ("BGPAdvertisement", "lab-bgp", lambda o: o["spec"] == {"ipAddressPools": ["lab-bgp"]}),
])
def test_metallb_lab_objects_as_native_mode_admits_them(kind, name, check):
    assert check(by(LabSpec(lb="metallb").metallb_resources(), kind).get(name))


def test_native_mode_does_not_touch_its_input_and_the_result_parses():
    objs = LabSpec().metallb_resources()
    before = repr(objs)
    out = native_mode(objs)
    assert repr(objs) == before
    parse(out)    # raises on an invalid configuration
