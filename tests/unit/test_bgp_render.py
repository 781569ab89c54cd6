"""Golden files for what ExaBGP reads: exabgp.conf per node and the API commands.

Refresh after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_bgp_render.py``
and review the diff. Every rendered exabgp.conf is also checked by ExaBGP's own parser
(``exabgp validate``), so a golden file can't hold a configuration ExaBGP would refuse.
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bgp.advertise import Route
from agent.bgp.config_render import (NodeAddresses, RenderError, announce_command, exabgp_env,
                                     render_exabgp_conf, router_id, withdraw_command)
from agent.bgp.exabgp import default_exabgp
from metalxdp.config.types import BGPPeer, Community

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "bgp"
ip = ipaddress.ip_address
net = ipaddress.ip_network
RELAY = ["/usr/bin/python3", "/opt/metalxdp/agent/bgp/api_relay.py", "/run/metalxdp/bgp/api.sock"]
NODE = NodeAddresses("node1", ip("192.0.2.11"), ip("2001:db8:0:1::11"))

CONFS = {
    "lab_ebgp": [BGPPeer("router-v4", 64513, 64512, ip("192.0.2.1"), hold_time=9, keepalive_time=3),
                 BGPPeer("router-v6", 64513, 64512, ip("2001:db8:0:1::1"), hold_time=9, keepalive_time=3)],
    "ibgp_all_options": [BGPPeer("ibgp", 64513, 64513, ip("192.0.2.1"), source_address=ip("192.0.2.50"),
                                 peer_port=1179, hold_time=30, keepalive_time=10,
                                 router_id=ip("198.51.100.1"), password='s3cret "with" spaces;{}',
                                 enable_graceful_restart=True)],
    "ebgp_multihop": [BGPPeer("far", 64513, 65000, ip("198.51.100.1"), source_address=ip("192.0.2.11"),
                              ebgp_multihop=True)],
    # localASN: the router sees 64600, never myASN; dynamicASN internal/external
    "local_and_dynamic_asn": [
        BGPPeer("local-asn", 64513, 64512, ip("192.0.2.1"), local_asn=64600),
        BGPPeer("dyn-internal", 64513, 0, ip("192.0.2.2"), dynamic_asn="internal"),
        BGPPeer("dyn-external", 64513, 0, ip("192.0.2.3"), dynamic_asn="external")],
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; refresh with UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("name", sorted(CONFS))
def test_exabgp_conf_golden_and_valid(name, tmp_path):
    conf = render_exabgp_conf(CONFS[name], NODE, RELAY)
    check_golden(f"{name}.conf.golden", conf)
    f = tmp_path / "exabgp.conf"
    f.write_text(conf.replace(RELAY[0], sys.executable))
    r = subprocess.run([*default_exabgp(), "validate", str(f)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, **exabgp_env([ip("192.0.2.11")])})
    assert r.returncode == 0, r.stdout + r.stderr


def test_commands_golden():
    peer4, peer6 = CONFS["lab_ebgp"]
    ib = CONFS["ibgp_all_options"][0]
    routes = [
        (peer4, Route(net("203.0.113.5/32"))),
        (peer4, Route(net("203.0.113.0/24"), (Community("64512:7"), Community("65000:100"),
                                               Community("large:64513:1:2", large=True)))),
        (peer6, Route(net("2001:db8:0:2::5/128"), (Community("large:1:2:3", large=True),))),
        (ib, Route(net("203.0.113.6/32"), (Community("64512:7"),), 200)),
    ]
    lines = [announce_command(p, r) for p, r in routes] + [withdraw_command(p, r) for p, r in routes]
    check_golden("commands.golden", "\n".join(lines) + "\n")


def test_local_and_dynamic_asn_sessions():
    """What the session is, seen from the wire: the AS we present and whether it is iBGP."""
    lab = {p.name: p for p in CONFS["local_and_dynamic_asn"]}
    assert (lab["local-asn"].local_as, lab["local-asn"].ibgp) == (64600, False)
    assert BGPPeer("x", 64513, 64600, ip("192.0.2.1"), local_asn=64600).ibgp      # localASN == peerASN
    assert (lab["dyn-internal"].local_as, lab["dyn-internal"].ibgp) == (64513, True)
    assert lab["dyn-external"].ibgp is False
    conf = render_exabgp_conf(CONFS["local_and_dynamic_asn"], NODE, RELAY)
    blocks = {b.split("\n")[0]: b for b in conf.split("neighbor ")[1:]}
    assert "local-as 64600;" in blocks["192.0.2.1 {"] and "local-as 64513" not in blocks["192.0.2.1 {"]
    assert "peer-as 64513;" in blocks["192.0.2.2 {"]
    assert "peer-as auto;" in blocks["192.0.2.3 {"] and "open;" in blocks["192.0.2.3 {"]
    assert "open;" not in blocks["192.0.2.2 {"]


def test_router_id_defaults():
    p = BGPPeer("x", 1, 2, ip("2001:db8::1"))
    assert router_id(p, NODE) == ip("192.0.2.11")
    v6only = NodeAddresses("node7", None, ip("2001:db8::7"))
    rid = router_id(p, v6only)
    assert rid.version == 4 and rid == router_id(p, v6only)  # stable from the node name


def test_peer_without_local_address_of_its_family_is_refused():
    with pytest.raises(RenderError, match="sourceAddress"):
        render_exabgp_conf([BGPPeer("x", 1, 2, ip("2001:db8::1"))],
                           NodeAddresses("n", ip("192.0.2.11"), None), RELAY)


def test_env_binds_node_addresses_and_runs_as_root():
    env = exabgp_env([ip("2001:db8:0:1::11"), ip("192.0.2.11"), ip("192.0.2.11")])
    assert env["exabgp_tcp_bind"] == "192.0.2.11 2001:db8:0:1::11"
    assert env["exabgp_daemon_user"] == "root"


@pytest.mark.parametrize("open_msg, asn", [
    ({"asn": 64512}, 64512),
    ({"asn": 23456, "capabilities": {"65": {"name": "asn4", "asn4": 4200000001}}}, 4200000001),
    ({"asn": 23456, "capabilities": {}}, 23456),        # AS_TRANS without the capability: as sent
    ({}, None),
    ({"asn": "64512"}, None),                            # not a number: never matched
])
def test_open_asn(open_msg, asn):
    from agent.bgp.exabgp import open_asn
    assert open_asn(open_msg) == asn


def test_render_timers():
    import json as _json
    from agent.bgp.config_render import render_timers
    peers = [BGPPeer("a", 1, 2, ip("192.0.2.1"), hold_time=90, keepalive_time=10, connect_time=5),
             BGPPeer("b", 1, 2, ip("192.0.2.2"), hold_time=0, keepalive_time=0),     # no keepalives
             BGPPeer("c", 1, 2, ip("2001:db8::1"), hold_time=9, keepalive_time=3)]
    assert _json.loads(render_timers(peers)) == {
        "192.0.2.1": {"keepalive": 10, "connect": 5}, "2001:db8::1": {"keepalive": 3}}


@pytest.mark.parametrize("negotiated, configured, want", [
    (30, 10, 10),     # keepaliveTime shorter than hold/3: ours
    (3, 10, 3),       # the router negotiated a shorter hold: never beyond hold/3
    (0, 10, 0),       # hold time 0: no keepalives at all
    (30, None, 30),   # not configured: ExaBGP's own
    (30, 0.4, 1),     # at most one per second
])
def test_keepalive_interval(negotiated, configured, want):
    from agent.bgp.exabgp_timers import keepalive_interval
    assert keepalive_interval(negotiated, configured) == want
