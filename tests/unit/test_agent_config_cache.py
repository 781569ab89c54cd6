"""The agent parses the metallb.io configuration only when one of its objects changed (by
resourceVersion); a pass woken by a Service or an EndpointSlice reuses the last Config."""
import copy

import pytest

import agent.node as node_mod
from agent.node import Agent, AgentSettings, config_inputs
from metalxdp.watch import obj_key

POOL = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "p1", "namespace": "metallb-system", "resourceVersion": "10"},
        "spec": {"addresses": ["192.0.2.10-192.0.2.20"]}}
L2ADV = {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
         "metadata": {"name": "l2", "namespace": "metallb-system", "resourceVersion": "11"},
         "spec": {"ipAddressPools": ["p1"]}}
SECRET = {"apiVersion": "v1", "kind": "Secret",
          "metadata": {"name": "memberlist", "namespace": "metallb-system", "resourceVersion": "12"},
          "data": {"secretkey": "c2VjcmV0"}}


def fill(inf, items):
    inf.cache = {obj_key(o): o for o in items}


@pytest.fixture
def agent_with(monkeypatch):
    calls = []
    real = node_mod.parse

    def counting_parse(resources, **kw):
        calls.append(len(resources))
        return real(resources, **kw)
    monkeypatch.setattr(node_mod, "parse", counting_parse)
    a = Agent(None, AgentSettings(node_name="node1", enable_bgp=False), None, None, None)
    pools = next(i for i in a.config_informers if i.path.endswith("/ipaddresspools"))
    l2 = next(i for i in a.config_informers if i.path.endswith("/l2advertisements"))
    fill(pools, [POOL])
    fill(l2, [L2ADV])
    fill(a.secrets, [SECRET])
    return a, pools, calls


def test_the_same_objects_are_parsed_once(agent_with):
    a, _pools, calls = agent_with
    first = a._load_config()
    a.config = first
    assert a._load_config() is first
    assert a._load_config() is first
    assert len(calls) == 1


def test_a_changed_resource_version_is_parsed_again(agent_with):
    a, pools, calls = agent_with
    a.config = a._load_config()
    changed = copy.deepcopy(POOL)
    changed["metadata"]["resourceVersion"] = "20"
    changed["spec"]["addresses"] = ["192.0.2.30-192.0.2.40"]
    fill(pools, [changed])
    cfg = a._load_config()
    assert len(calls) == 2
    assert cfg != a.config and "p1" in cfg.pools


def test_a_secret_change_is_parsed_again(agent_with):
    a, _pools, calls = agent_with
    a.config = a._load_config()
    s = copy.deepcopy(SECRET)
    s["metadata"]["resourceVersion"] = "13"
    fill(a.secrets, [s])
    a._load_config()
    assert len(calls) == 2


def test_an_invalid_change_keeps_the_last_good_config_and_is_reported_once(agent_with, caplog):
    a, pools, calls = agent_with
    good = a.config = a._load_config()
    bad = copy.deepcopy(POOL)
    bad["metadata"]["resourceVersion"] = "21"
    bad["spec"]["addresses"] = ["not-an-address"]
    fill(pools, [bad])
    caplog.clear()
    assert a._load_config() is good and a._config_stale
    assert a._load_config() is good and a._config_stale
    assert len(calls) == 2
    assert [r.getMessage() for r in caplog.records].count(
        "failed to parse the configuration; keeping the last good one") == 1
    fill(pools, [POOL | {"metadata": {**POOL["metadata"], "resourceVersion": "22"}}])
    assert a._load_config() == good and not a._config_stale
    assert len(calls) == 3


def test_objects_without_a_resource_version_are_parsed_every_time(agent_with):
    a, pools, calls = agent_with
    fill(pools, [{**POOL, "metadata": {"name": "p1", "namespace": "metallb-system"}}])
    a.config = a._load_config()
    a._load_config()
    assert len(calls) == 2


@pytest.mark.parametrize("objs,expect_none", [
    ([POOL, L2ADV], False),
    ([POOL, {"kind": "L2Advertisement", "metadata": {"name": "x", "namespace": "n"}}], True),
    ([], False),
])
def test_config_inputs(objs, expect_none):
    got = config_inputs(objs, {})
    assert (got is None) is expect_none
    if got is not None:
        assert got == config_inputs(list(reversed(objs)), {})   # order does not matter
