"""Legacy configuration conversion (round trips through the parser) and the `metalxdp config` CLI."""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from metalxdp.config.cli import config as config_cli
from metalxdp.config.convert import ConvertError, convert_configmap, convert_resources, to_yaml
from metalxdp.config.crds import object_problems
from metalxdp.config.parse import parse
from metalxdp.config.types import Community
from metalxdp.config.yamlio import load, load_all

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
sys.path.insert(0, str(DATA / "config"))
from cases import CASES, legacy_pool, obj, pool  # noqa: E402


def load_file(name: str) -> list:
    return list(load_all((DATA / name).read_text()))


def test_seed_002_configmap_converts_to_the_expected_resources():
    out = convert_resources(load_file("config/legacy-configmap-002.yaml"))
    assert [(o["kind"], o["metadata"]["name"]) for o in out] == [
        ("BGPPeer", "peer1"), ("IPAddressPool", "default"), ("BGPAdvertisement", "bgpadvertisement1")]
    assert all(object_problems(o) == [] for o in out)
    cfg = parse(out)
    assert cfg.pools["default"].cidrs == (ipaddress.ip_network("172.16.192.0/20"),)
    p = cfg.peers["peer1"]
    assert (str(p.peer_address), p.peer_asn, p.my_asn, p.hold_time) == ("10.227.0.1", 64512, 64513, 90)
    assert [a.pools for a in cfg.bgp_advertisements] == [frozenset({"default"})]


def test_full_configmap_converts_and_parses():
    out = convert_resources(load_file("config/legacy-configmap-full.yaml"), "metallb-system")
    assert all(object_problems(o) == [] for o in out), [object_problems(o) for o in out]
    cfg = parse(out)
    assert set(cfg.pools) == {"my-ip-space", "my-l2-space", "my-v6-space"}
    assert not cfg.pools["my-l2-space"].auto_assign and cfg.pools["my-ip-space"].avoid_buggy_ips
    assert [a.pools for a in cfg.l2_advertisements] == [frozenset({"my-l2-space"})]
    ads = {a.name: a for a in cfg.bgp_advertisements}
    assert ads["bgpadvertisement1"].communities == (Community("64512:1"), Community("65535:65281"))
    assert ads["bgpadvertisement1"].aggregation_length_v6 == 64 and ads["bgpadvertisement2"].local_pref == 200
    assert ads["bgpadvertisement3"].pools == {"my-v6-space"}
    peer1 = cfg.peers["peer1"]
    assert (peer1.hold_time, peer1.keepalive_time, peer1.password, peer1.bfd_profile) == (120, 30, "yourPassword",
                                                                                         "bfdprofile1")
    assert peer1.node_selectors[0].match_labels == (("kubernetes.io/hostname", "prod-01"),)
    assert cfg.peers["peer2"].ebgp_multihop
    assert cfg.bfd_profiles["bfdprofile1"].detect_multiplier == 200
    assert cfg.communities == {"no-export": Community("65535:65281")}


def _legacy_equivalent_of_full_configmap() -> list:
    """The same configuration written as legacy CRs (AddressPool, v1beta1 BGPPeer)."""
    return [
        obj("BGPPeer", "peer1", {"myASN": 64512, "peerASN": 64512, "peerAddress": "198.18.0.1", "peerPort": 179,
                                 "sourceAddress": "198.18.0.2", "holdTime": "2m", "keepaliveTime": "30s",
                                 "routerID": "192.0.2.4", "password": "yourPassword", "bfdProfile": "bfdprofile1",
                                 "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "prod-01"},
                                                    "matchExpressions": [{"key": "kubernetes.io/arch",
                                                                          "operator": "In",
                                                                          "values": ["amd64", "arm"]}]}]}),
        obj("BGPPeer", "peer2", {"myASN": 64512, "peerASN": 64600, "peerAddress": "198.18.0.3", "routerID": "192.0.2.4",
                                 "ebgpMultiHop": True}),
        legacy_pool("my-ip-space", "bgp", "198.19.10.0/24", "198.19.0.150-198.19.0.200", avoidBuggyIPs=True,
                    autoAssign=True, bgpAdvertisements=[
                        {"aggregationLength": 32, "aggregationLengthV6": 64, "localPref": 100,
                         "communities": ["64512:1", "no-export"]},
                        {"aggregationLength": 28, "localPref": 200}]),
        legacy_pool("my-l2-space", "layer2", "198.19.11.0/24", "198.19.1.150-198.19.1.200", autoAssign=False),
        legacy_pool("my-v6-space", "bgp", "2001:db8:ccd:e799::/124"),
        obj("BFDProfile", "bfdprofile1", {"receiveInterval": 280, "transmitInterval": 270, "echoInterval": 62,
                                          "echoMode": False, "passiveMode": False, "minimumTtl": 254,
                                          "detectMultiplier": 200}),
        obj("Community", "communities", {"communities": [{"name": "no-export", "value": "65535:65281"}]}),
    ]


def test_configmap_round_trip_gives_the_same_pools_and_peers():
    legacy = parse(_legacy_equivalent_of_full_configmap())
    converted = parse(convert_resources(load_file("config/legacy-configmap-full.yaml")))
    assert legacy.pools == converted.pools
    assert legacy.peers == converted.peers
    assert legacy.bfd_profiles == converted.bfd_profiles


def test_addresspool_round_trip_is_exact():
    legacy = _legacy_equivalent_of_full_configmap() + load_file("seeds/000-addresspool-no-advertise.yaml")[:0]
    converted = convert_resources(legacy)
    assert not any(o["kind"] == "AddressPool" or o["apiVersion"] == "metallb.io/v1beta1" and o["kind"] == "BGPPeer"
                   for o in converted)
    assert parse(legacy) == parse(converted)  # pools, peers, advertisements (same names), everything
    assert convert_resources(converted) == converted  # idempotent


def test_seed_000_addresspool_round_trip():
    legacy = load_file("seeds/000-addresspool-no-advertise.yaml")
    assert parse(legacy) == parse(convert_resources(legacy))


@pytest.mark.parametrize("bad,message", [
    ({"address-pools": [{"name": "x", "protocol": "l2", "addresses": ["198.18.0.0/24"]}]}, "protocol"),
    ({"address-pools": [{"protocol": "bgp"}]}, "needs a name"),
    ({"peers": [{"peer-adress": "198.18.0.1"}]}, "unknown key"),
    ({"pools": []}, "unknown key"),
    ({"address-pools": [{"name": "x", "protocol": "layer2", "addresses": ["198.18.0.0/24"],
                         "bgp-advertisements": [{}]}]}, "only allowed with protocol: bgp"),
    ({"peers": [{"peer-address": "198.18.0.1", "peer-asn": 64512, "my-asn": 64512, "node-selectors": [
        {"match-expressions": [{"key": "k", "operator": "In", "values": True}]}]}]}, "values: must be a list"),
])
def test_convert_errors_are_actionable(bad, message):
    with pytest.raises(ConvertError, match=message):
        convert_configmap(bad)


@pytest.mark.parametrize("bad,message", [
    ({"address-pools": [{"name": "Blue_Pool", "protocol": "layer2", "addresses": ["198.18.0.0/24"]},
                        {"name": "blue-pool", "protocol": "layer2", "addresses": ["198.18.1.0/24"]}]},
     "both become 'blue-pool'"),
    ({"address-pools": [{"name": "___", "protocol": "layer2", "addresses": ["198.18.0.0/24"]}]}, "nothing left"),
])
def test_convert_errors_are_actionable_names(bad, message):
    with pytest.raises(ConvertError, match=message):
        convert_configmap(bad)


@pytest.mark.parametrize("text", ["", "   \n", "# nothing configured yet\n"])
def test_empty_legacy_configmap_is_an_empty_valid_config(text):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": "metallb-system"},
          "data": {"config": text}}
    assert convert_resources([cm]) == []
    assert parse(convert_resources([cm])).pools == {}


@pytest.mark.parametrize("legacy, name", [
    ("Production_Pool", "production-pool"),
    ("pool.v4", "pool.v4"),
    ("x" * 70, "x" * 63),
    ("-Edge pool-", "edge-pool"),
    ("a" * 62 + "_b", "a" * 62),       # cut at 63, then no trailing '-'
])
def test_converter_makes_names_kubernetes_accepts(legacy, name):
    from metalxdp.config.convert import k8s_name
    from metalxdp.config.parse import is_object_name
    assert k8s_name(legacy) == name and is_object_name(name)


def test_converter_renames_pools_and_bfd_profiles_with_their_references():
    objs = convert_configmap({
        "peers": [{"peer-address": "198.18.0.1", "peer-asn": 64512, "my-asn": 64513, "bfd-profile": "Fast_BFD"}],
        "bfd-profiles": [{"name": "Fast_BFD", "receive-interval": 100}],
        "address-pools": [{"name": "Web_VIPs", "protocol": "bgp", "addresses": ["198.18.0.0/24"]}]})
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("IPAddressPool", "web-vips"), ("BFDProfile", "fast-bfd")} <= names
    config = parse(objs)
    assert config.peers["peer1"].bfd_profile == "fast-bfd" and "web-vips" in config.pools


def test_validate_reports_names_kubernetes_rejects(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(to_yaml([pool("Bad_Name", "198.18.0.0/24")]))
    result = run("validate", "-f", str(tmp_path))
    assert result.exit_code == 1
    assert "IPAddressPool/Bad_Name: metadata.name" in result.stdout and "lower-case" in result.stdout


def test_converted_yaml_keeps_communities_as_strings():
    text = to_yaml(convert_resources(load_file("config/legacy-configmap-full.yaml")))
    docs = list(load_all(text))
    assert docs == convert_resources(load_file("config/legacy-configmap-full.yaml"))
    assert "'64512:1'" in text  # quoted, or YAML 1.1 readers would see a base-60 number


# --- CLI -------------------------------------------------------------------------------------

def run(*args: str):
    try:  # click < 8.2 mixes stderr into output unless told not to; 8.2 always separates them
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(config_cli, list(args))


def test_cli_help_texts():
    for cmd in ([], ["validate"], ["convert"], ["crds"]):
        result = run(*cmd, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_cli_validate_ok(tmp_path):
    result = run("validate", "-f", str(DATA / "seeds" / "000-addresspool-no-advertise.yaml"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("valid: 1 pools, 0 peers")


def test_cli_validate_prints_one_line_per_error(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(to_yaml([pool("a", "198.18.0.0/24"), pool("b", "198.18.0.0/25"), pool("c", "198.18.0.300/32"),
                          obj("BFDProfile", "x", {"detectMultiplier": 1})]))
    result = run("validate", "-f", str(tmp_path))
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(str(f) in line for line in lines)
    assert any("IPAddressPool/b: spec.addresses[0]" in line and "overlaps" in line for line in lines)
    assert any("BFDProfile/x: spec.detectMultiplier" in line for line in lines)


def test_cli_validate_namespace_and_references(tmp_path):
    f = tmp_path / "x.yaml"
    other = pool("a", "198.18.0.0/24")
    other["metadata"]["namespace"] = "default"
    peer = obj("BGPPeer", "p", {"myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1", "bfdProfile": "later"},
               "v1beta2")
    del peer["metadata"]["namespace"]  # no namespace: taken to be --namespace
    f.write_text(to_yaml([other, peer]))
    result = run("validate", "-f", str(f))
    assert result.exit_code == 1 and "metadata.namespace" in result.stdout and "'default'" in result.stdout
    assert "warning:" in result.stderr and "bfdProfile" in result.stderr
    assert run("validate", "-f", str(f), "--namespace", "default").exit_code == 0
    strict = run("validate", "-f", str(f), "--namespace", "default", "--strict-references")
    assert strict.exit_code == 1 and "bfdProfile" in strict.stdout


def test_cli_validate_bad_yaml(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: [")
    result = run("validate", "-f", str(f))
    assert result.exit_code == 1 and "cannot read YAML" in result.stderr


def test_cli_validate_all_cases(tmp_path):
    """The CLI agrees with the table: valid cases exit 0, invalid ones exit 1 naming the field."""
    for case in CASES:
        if case.level == "transient" or case.nodes:
            continue
        f = tmp_path / f"{case.id}.yaml"
        f.write_text(to_yaml(case.resources))
        result = run("validate", "-f", str(f))
        assert result.exit_code == (1 if case.invalid else 0), (case.id, result.output)
        if case.invalid:
            assert case.error_field in result.stdout and case.error_substring in result.stdout, case.id


def test_cli_convert_stdout_and_file(tmp_path):
    result = run("convert", "-f", str(DATA / "config" / "legacy-configmap-002.yaml"))
    assert result.exit_code == 0, result.stderr
    docs = list(load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["BGPPeer", "IPAddressPool", "BGPAdvertisement"]
    out = tmp_path / "new.yaml"
    result = run("convert", "-f", str(DATA / "config" / "legacy-configmap-full.yaml"), "-o", str(out),
                 "--namespace", "lb")
    assert result.exit_code == 0 and "wrote 11 resources" in result.stderr
    assert {d["metadata"]["namespace"] for d in load_all(out.read_text())} == {"lb"}
    assert run("validate", "-f", str(out), "--namespace", "lb").exit_code == 0


def test_cli_convert_refuses_invalid_input(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text(to_yaml([legacy_pool("a", "layer2", "198.18.0.0/24"), legacy_pool("b", "layer2", "198.18.0.0/25")]))
    result = run("convert", "-f", str(f))
    assert result.exit_code == 1 and "overlaps" in result.stderr


def test_cli_crds():
    result = run("crds", "--conversion", "none")
    assert result.exit_code == 0
    docs = [d for d in load_all(result.stdout) if d]
    assert len(docs) == 11
    peers = next(d for d in docs if d["metadata"]["name"] == "bgppeers.metallb.io")
    assert peers["spec"]["conversion"] == {"strategy": "None"}
    assert load("a: 1") == {"a": 1}
