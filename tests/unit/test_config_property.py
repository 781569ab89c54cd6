"""Property: whatever the input, ``parse`` returns a Config or raises ConfigError - never another
exception - and ``validate``/``admission.review`` never crash either.

Inputs start from every valid object of the case table and the seed examples, then get mutated:
fields replaced by random JSON values, keys deleted, types changed, lists shuffled."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metalxdp.config.admission import review
from metalxdp.config.bgppeer_conversion import ConversionError, convert_bgppeer
from metalxdp.config.convert import ConvertError, convert_resources
from metalxdp.config.parse import parse, validate
from metalxdp.config.types import Config, ConfigError
from metalxdp.config.yamlio import load_all

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "data" / "config"))
from cases import CASES  # noqa: E402

SEED_OBJECTS = [d for p in sorted((REPO / "tests/data/seeds").glob("*.yaml")) for d in load_all(p.read_text())]
BASE_OBJECTS = [o for c in CASES for o in c.resources if o.get("apiVersion", "").startswith("metallb.io/")]
BASE_OBJECTS += SEED_OBJECTS
# (kind, apiVersion) -> examples: mutations pick a kind first so rare ones (v1beta1 BGPPeer,
# AddressPool v1alpha1, MetalLB) get as much attention as pools
BY_KIND: dict = {}
for _o in BASE_OBJECTS:
    BY_KIND.setdefault((_o["kind"], _o["apiVersion"]), []).append(_o)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                         st.sampled_from(["198.18.0.0/24", "2001:db8::/120", "198.18.0.1-198.18.0.9", "90s", "In",
                                          "Exists", "large:1:2:3", "65535:65281", "", "-", "1:2:3", "bgp"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _paths(value, prefix=()):
    """Every (path, container) position inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _set(root, path, new, delete=False):
    parent = root
    for p in path[:-1]:
        parent = parent[p]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new


@st.composite
def mutated_object(draw):
    examples = BY_KIND[draw(st.sampled_from(sorted(BY_KIND)))]
    obj = copy.deepcopy(draw(st.sampled_from(examples)))
    for _ in range(draw(st.integers(0, 4))):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "wrap", "stringify"]))
        try:
            parent = obj
            for p in path[:-1]:
                parent = parent[p]
            current = parent[path[-1]]
            if action == "replace":
                _set(obj, path, draw(json_values))
            elif action == "delete":
                _set(obj, path, None, delete=True)
            elif action == "wrap":
                _set(obj, path, [current])
            else:
                _set(obj, path, str(current))
        except (KeyError, IndexError, TypeError):
            continue
    return obj


resources = st.lists(st.one_of(mutated_object(), json_values, st.sampled_from(BASE_OBJECTS)), max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources, st.booleans())
def test_parse_returns_config_or_raises_config_error(res, strict):
    try:
        result = parse(res, strict_transient=strict)
    except ConfigError as e:
        assert str(e) and e.obj
    else:
        assert isinstance(result, Config)
    errors = validate(res, strict_transient=strict)
    assert all(isinstance(e, ConfigError) for e in errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_object(), st.lists(st.sampled_from(BASE_OBJECTS), max_size=4),
       st.sampled_from(["CREATE", "UPDATE", "DELETE"]))
def test_admission_never_crashes(obj, existing, operation):
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else "IPAddressPool"
    allowed, message, warnings = review(kind, operation, obj, copy.deepcopy(obj), existing)
    assert isinstance(allowed, bool) and isinstance(message, str) and isinstance(warnings, list)
    assert allowed or message


@settings(max_examples=100, deadline=None)
@given(mutated_object())
def test_conversions_raise_only_their_errors(obj):
    try:
        convert_resources([obj])
    except ConvertError:
        pass
    try:
        convert_bgppeer(obj, "v1beta1")
    except ConversionError:
        pass


LEGACY_CONFIGS = [next(load_all((REPO / "tests/data/config" / n).read_text()))
                  for n in ("legacy-configmap-002.yaml", "legacy-configmap-full.yaml")]


@st.composite
def mutated_legacy_config(draw):
    """A legacy ConfigMap whose data.config mapping (not just its text) is mutated."""
    from metalxdp.config.convert import config_from_configmap
    config = config_from_configmap(draw(st.sampled_from(LEGACY_CONFIGS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(config) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        try:
            if draw(st.booleans()):
                _set(config, path, draw(json_values))
            else:
                _set(config, path, None, delete=True)
        except (KeyError, IndexError, TypeError):
            continue
    return config


@settings(max_examples=200, deadline=None)
@given(mutated_legacy_config())
# found by this test: a non-list match-expressions `values` raised TypeError, not ConvertError
@example({"peers": [{"peer-address": "192.0.2.1", "peer-asn": 64512, "my-asn": 64513, "node-selectors": [
    {"match-expressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": True}]}]}]})
def test_legacy_config_conversion_raises_only_convert_error(config):
    from metalxdp.config.convert import convert_configmap
    try:
        out = convert_configmap(config)
    except ConvertError:
        return
    try:
        parse(out)
    except ConfigError:
        pass
