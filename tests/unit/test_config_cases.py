"""The validation table (tests/data/config/cases.py) through the pure parser.

Every invalid case must be rejected naming the field and the rule; every valid one must parse.
The same table is run by the integration tests through a real API server with the webhook.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metalxdp.config.parse import parse, validate
from metalxdp.config.types import Config, ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "config"))
from cases import CASES, Case, secrets_of  # noqa: E402


def _parse(case: Case, **kw) -> Config:
    return parse(case.resources, secrets=secrets_of(case.resources), nodes=case.nodes, **kw)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_every_rule_has_a_valid_and_an_invalid_case():
    families = {}
    for c in CASES:
        families.setdefault(c.rule.split(" ")[0], set()).add(c.invalid)
    lonely = {rule: kinds for rule, kinds in families.items() if kinds != {True, False}}
    # a few rule families are covered by a sibling family's valid case; list them explicitly
    allowed_invalid_only = {"legacy"}
    assert not {r for r in lonely if r not in allowed_invalid_only}, lonely


@pytest.mark.parametrize("case", [c for c in CASES if not c.invalid], ids=lambda c: c.id)
def test_valid_case_parses(case: Case):
    config = _parse(case)
    assert isinstance(config, Config)
    assert validate(case.resources, secrets=secrets_of(case.resources), nodes=case.nodes) == []
    if case.warning:
        assert any(case.warning in w for w in config.warnings), config.warnings
    else:
        assert config.warnings == ()


@pytest.mark.parametrize("case", [c for c in CASES if c.invalid], ids=lambda c: c.id)
def test_invalid_case_is_rejected_naming_field_and_rule(case: Case):
    with pytest.raises(ConfigError) as info:
        _parse(case)
    err = info.value
    assert case.error_field in err.field, f"field {err.field!r} should name {case.error_field!r}: {err}"
    assert case.error_substring in err.rule, f"{err}"
    # the one-line message names the object too
    assert str(err).startswith(err.obj) and "/" in err.obj
    assert err.transient == (case.level == "transient")
    # validate() reports the same problem
    errors = validate(case.resources, secrets=secrets_of(case.resources), nodes=case.nodes)
    assert any(case.error_substring in e.rule for e in errors)


@pytest.mark.parametrize("case", [c for c in CASES if c.level == "transient"], ids=lambda c: c.id)
def test_transient_case_is_accepted_when_not_strict(case: Case):
    """The webhook's view: a Secret or BFDProfile may be created after the peer."""
    assert isinstance(_parse(case, strict_transient=False), Config)
