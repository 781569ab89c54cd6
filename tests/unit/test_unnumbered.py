"""BGP unnumbered, the pure parts: resolving interface peers, our RA/RS, RFC 4861 §6.1.2's RA
validity rules, and what ExaBGP is told for an interface peer."""
import ipaddress
import struct

import pytest

from agent.bgp.advertise import Route
from agent.bgp.config_render import NodeAddresses, announce_command, render_exabgp_conf
from agent.bgp.unnumbered import LinkInfo, resolve_peers, router_advertisement, router_solicitation, valid_ra
from metalxdp.config.types import BGPPeer

LL_R, LL_N = ipaddress.IPv6Address("fe80::1"), ipaddress.IPv6Address("fe80::2")
MAC = bytes.fromhex("020000000001")
UN = BGPPeer("tor", 64513, 64512, None, interface="eth0")
NUM = BGPPeer("num", 64513, 64512, ipaddress.ip_address("192.0.2.1"))


@pytest.mark.parametrize("link,ready,why", [
    (LinkInfo("eth0", LL_N, LL_R), True, ""),
    (None, False, "looking up interface eth0"),
    (LinkInfo("eth0", known=False), False, "looking up"),
    (LinkInfo("eth0", exists=False), False, "does not exist"),
    (LinkInfo("eth0", None, LL_R), False, "no IPv6 link-local"),
    (LinkInfo("eth0", LL_N, None), False, "no router advertisement heard"),
])
def test_resolve_peers(link, ready, why):
    links = {"eth0": link} if link else {}
    out, waiting = resolve_peers({"tor": UN, "num": NUM}, links)
    assert out["num"] is NUM
    if ready:
        assert out["tor"].peer_address == LL_R and out["tor"].source_address == LL_N and not waiting
    else:
        assert "tor" not in out and why in waiting["tor"]


def test_families():
    assert UN.families() == {4, 6} and NUM.families() == {4}
    assert UN.identity == "interface:eth0" and NUM.identity == "192.0.2.1"


def test_our_ra_and_rs():
    ra = router_advertisement(MAC)
    assert ra[0] == 134 and struct.unpack_from("!H", ra, 6)[0] == 0       # router lifetime 0
    assert ra[16:18] == b"\x01\x01" and ra[18:] == MAC
    assert valid_ra(ra, "fe80::2", 255) is None
    rs = router_solicitation(MAC)
    assert rs[0] == 133 and rs[8:10] == b"\x01\x01"


RA = router_advertisement(MAC)


@pytest.mark.parametrize("data,src,hop,why", [
    (RA, "fe80::1", 254, "hop limit"),
    (RA, "2001:db8::1", 255, "not link-local"),
    (RA, "nonsense", 255, "not an IPv6 address"),
    (RA[:15], "fe80::1", 255, "shorter than 16"),
    (bytes([133]) + RA[1:], "fe80::1", 255, "type 133"),
    (RA[:1] + b"\x01" + RA[2:], "fe80::1", 255, "code 1"),
    (RA[:16] + b"\x01\x00" + MAC, "fe80::1", 255, "length 0"),
    (RA[:16] + b"\x01\x02" + MAC, "fe80::1", 255, "past the end"),
    (RA[:16], "fe80::1", 255, None),                                     # no options: valid
])
def test_ra_validity(data, src, hop, why):
    got = valid_ra(data, src, hop)
    assert (got is None) if why is None else (why in got), got


def test_exabgp_config_and_announce_for_an_interface_peer():
    from dataclasses import replace
    p = replace(UN, peer_address=LL_R, source_address=LL_N)
    conf = render_exabgp_conf([p], NodeAddresses("node1", None, None), ["relay"])
    assert "neighbor fe80::1 {" in conf and "local-address fe80::2;" in conf
    assert "source-interface eth0;" in conf
    assert "ipv4 unicast;" in conf and "ipv6 unicast;" in conf
    assert "nexthop {\n\t\tipv4 unicast ipv6;\n\t}" in conf
    r4 = Route(ipaddress.ip_network("198.51.100.10/32"))
    assert announce_command(p, r4).startswith("neighbor fe80::1 announce route 198.51.100.10/32 next-hop fe80::2 ")
    numbered = render_exabgp_conf([NUM], NodeAddresses("n", ipaddress.ip_address("192.0.2.11"), None), ["r"])
    assert "source-interface" not in numbered and "nexthop {" not in numbered
    assert "next-hop self" in announce_command(NUM, r4)


@pytest.mark.parametrize("peer,route,node,want", [
    (NUM, "198.51.100.10/32", None, "self"),
    (BGPPeer("d", 64513, 64512, ipaddress.ip_address("192.0.2.1"), dual_stack=True), "2001:db8:5::10/128",
     NodeAddresses("n", ipaddress.ip_address("192.0.2.11"), ipaddress.ip_address("2001:db8::11")), "2001:db8::11"),
    (BGPPeer("d", 64513, 64512, ipaddress.ip_address("2001:db8::1"), dual_stack=True), "198.51.100.10/32",
     NodeAddresses("n", ipaddress.ip_address("192.0.2.11"), ipaddress.ip_address("2001:db8::11")), "192.0.2.11"),
    (BGPPeer("d", 64513, 64512, ipaddress.ip_address("2001:db8::1"), dual_stack=True), "2001:db8:5::10/128",
     NodeAddresses("n", None, ipaddress.ip_address("2001:db8::11")), "self"),
])
def test_next_hop(peer, route, node, want):
    from agent.bgp.config_render import next_hop
    assert next_hop(peer, Route(ipaddress.ip_network(route)), node) == want


def test_dual_stack_without_an_address_of_the_other_family_is_an_error():
    from agent.bgp.config_render import RenderError, next_hop
    p = BGPPeer("d", 64513, 64512, ipaddress.ip_address("192.0.2.1"), dual_stack=True)
    assert p.families() == {4, 6}
    with pytest.raises(RenderError, match="no IPv6 address"):
        next_hop(p, Route(ipaddress.ip_network("2001:db8:5::10/128")),
                 NodeAddresses("n", ipaddress.ip_address("192.0.2.11"), None))
    conf = render_exabgp_conf([p], NodeAddresses("n", ipaddress.ip_address("192.0.2.11"), None), ["r"])
    assert "ipv4 unicast;" in conf and "ipv6 unicast;" in conf and "nexthop {" not in conf


def test_announcer_resolves_interface_peers_and_logs_why_one_waits(tmp_path, caplog):
    """The agent's seam: interface peers go to the speaker resolved, or not at all."""
    import logging

    from agent.bgp.announcer import BGPAnnouncer

    class FakeUnnumbered:
        def __init__(self):
            self.asked = []
            self.info = {"eth0": LinkInfo("eth0", LL_N, LL_R), "eth1": LinkInfo("eth1", LL_N, None)}

        def links(self, names):
            self.asked.append(list(names))
            return {n: self.info[n] for n in names}

    a = BGPAnnouncer("node1", tmp_path)
    assert a._resolve({"num": NUM}) == {"num": NUM} and a.unnumbered is None   # none started
    a.unnumbered = FakeUnnumbered()
    from dataclasses import replace
    other = replace(UN, name="tor1", interface="eth1")
    with caplog.at_level(logging.INFO, logger="metalxdp.agent"):
        out = a._resolve({"tor": UN, "tor1": other, "num": NUM})
    assert set(out) == {"tor", "num"} and out["tor"].peer_address == LL_R
    assert a.unnumbered.asked == [["eth0", "eth1"]]
    assert "no router advertisement heard on eth1" in a._waiting["tor1"]
    assert any("tor1 waits" in r.getMessage() for r in caplog.records)
