"""Kubernetes LabelSelectors as MetalLB parses them: validation, duplicates, canonical form.

Follows ``metav1.LabelSelectorAsSelector`` (operators In/NotIn/Exists/DoesNotExist; In/NotIn
need values, Exists/DoesNotExist must have none; keys are qualified names, values are label
values) and MetalLB's ``validateLabelSelectorDuplicate`` (two equal selectors in one list, two
equal expressions in one selector, or the same value twice in one expression are errors).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from .fields import Fields, type_name
from .types import ConfigError, LabelSelector, Requirement

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# k8s.io/apimachinery/pkg/util/validation: qualified names and label values
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str:
    """Why ``key`` is not a valid label key, or "" if it is."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "prefix before '/' must not be empty"
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} must be a lowercase DNS subdomain (at most 253 characters)"
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        return ("name part must be 1-63 characters of letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return ""


def label_value_problem(value: str) -> str:
    """Why ``value`` is not a valid label value, or "" if it is (empty is valid)."""
    if value == "":
        return ""
    if len(value) > 63 or not _NAME_PART.match(value):
        return ("must be at most 63 characters of letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return ""


def parse_selector(obj: str, path: str, raw: Any) -> LabelSelector:
    """One LabelSelector dict -> LabelSelector, or ConfigError naming the bad part."""
    f = Fields(obj, path, raw, required=True)
    match_labels = f.str_map("matchLabels")
    for k, v in match_labels.items():
        problem = label_key_problem(k)
        if problem:
            raise ConfigError(obj, f"{path}.matchLabels", f"invalid label key {k!r}: {problem}")
        problem = label_value_problem(v)
        if problem:
            raise ConfigError(obj, f"{path}.matchLabels.{k}", f"invalid label value {v!r}: {problem}")
    requirements: list[Requirement] = []
    seen_expressions: dict[tuple, int] = {}
    for i, raw_expr in enumerate(f.list("matchExpressions")):
        epath = f"{path}.matchExpressions[{i}]"
        e = Fields(obj, epath, raw_expr, required=True)
        key = e.str("key", required=True)
        problem = label_key_problem(key)
        if problem:
            raise e.error("key", f"invalid label key {key!r}: {problem}")
        operator = e.str("operator", required=True)
        if operator not in OPERATORS:
            raise e.error("operator", f"{operator!r} is not a valid label selector operator; "
                                      f"use one of {', '.join(OPERATORS)}")
        values = e.str_list("values")
        if operator in ("In", "NotIn") and not values:
            raise e.error("values", f"must have at least one value for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise e.error("values", f"must be empty for operator {operator}")
        for j, v in enumerate(values):
            problem = label_value_problem(v)
            if problem:
                raise ConfigError(obj, f"{epath}.values[{j}]", f"invalid label value {v!r}: {problem}")
        sorted_values = tuple(sorted(values))
        for j in range(1, len(sorted_values)):
            if sorted_values[j] == sorted_values[j - 1]:
                raise e.error("values", f"duplicate match expression value {sorted_values[j]!r}; list each value once")
        canonical = (key, operator, sorted_values)
        if canonical in seen_expressions:
            raise ConfigError(obj, epath, f"duplicate match expression (same as matchExpressions"
                                          f"[{seen_expressions[canonical]}]); remove one")
        seen_expressions[canonical] = i
        requirements.append(Requirement(key, operator, sorted_values))
    return LabelSelector(match_labels=tuple(sorted(match_labels.items())),
                         match_expressions=tuple(requirements))


def parse_selector_list(obj: str, f: Fields, key: str) -> tuple[LabelSelector, ...]:
    """A list of selectors at ``f.key``; duplicates rejected as MetalLB does."""
    raw = f.list(key)
    out: list[LabelSelector] = []
    for i, item in enumerate(raw):
        sel = parse_selector(obj, f"{f.at(key)}[{i}]", item)
        for j, prev in enumerate(out):
            if prev == sel:
                raise ConfigError(obj, f"{f.at(key)}[{i}]",
                                  f"duplicate definition of {key} (same as {key}[{j}]); remove one")
        out.append(sel)
    return tuple(out)


def selector_to_dict(sel: LabelSelector) -> dict:
    """Back to the Kubernetes shape (used by conversion and tests)."""
    d: dict = {}
    if sel.match_labels:
        d["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        d["matchExpressions"] = [
            {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
            for r in sel.match_expressions]
    return d


def matching_names(selectors: Iterable[LabelSelector], labelled: dict[str, dict[str, str]]) -> frozenset[str]:
    """Names of objects (name -> labels) matched by any of ``selectors``."""
    sels = tuple(selectors)
    return frozenset(name for name, labels in labelled.items() if any(s.matches(labels or {}) for s in sels))


__all__ = ["parse_selector", "parse_selector_list", "selector_to_dict", "matching_names",
           "label_key_problem", "label_value_problem", "OPERATORS", "type_name"]
