"""Typed access to the loosely-typed dicts of a Kubernetes object, for the config parser.

Raw resources come from YAML or JSON and can hold anything: a list where a mapping belongs,
``True`` where a number belongs, a missing ``metadata``. Every accessor here either returns a
value of the documented Python type or raises ``ConfigError`` naming the object, the dotted
field path and what the field must be - so the parser never leaks a ``KeyError`` or
``TypeError`` to a user.
"""
from __future__ import annotations

from typing import Any, Optional

from .types import ConfigError

_MISSING = object()


def type_name(value: Any) -> str:
    """How a JSON value's type is called in messages ("a list", "a string", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Fields:
    """A mapping inside object ``obj`` ("Kind/name") found at dotted path ``path``.

    ``Fields(obj, "spec", raw_spec).int("peerPort", 1, 16384, default=179)``
    """

    def __init__(self, obj: str, path: str, raw: Any, *, required: bool = False):
        if raw is None and not required:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(obj, path, f"must be a mapping, got {type_name(raw)}")
        self.obj, self.path, self.raw = obj, path, raw

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """True when the key is present with a non-null value (YAML ``key:`` alone is null)."""
        return self.raw.get(key) is not None

    def error(self, key: str, rule: str, transient: bool = False) -> ConfigError:
        return ConfigError(self.obj, self.at(key), rule, transient=transient)

    def get(self, key: str) -> Any:
        return self.raw.get(key)

    def str(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return default
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {type_name(value)}")
        return value

    def bool(self, key: str, *, default: bool = False) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {type_name(value)}")
        return value

    def int(self, key: str, lo: Optional[int] = None, hi: Optional[int] = None, *,
            default: Any = None, required: bool = False) -> Any:
        """An integer within [lo, hi]; ``default`` when absent (may be None)."""
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return default
        # bool is a subclass of int in Python but not a JSON integer
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be an integer, got {type_name(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                raise self.error(key, f"must be an integer, got {value!r}")
            value = int(value)
        if lo is not None and value < lo or hi is not None and value > hi:
            raise self.error(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def list(self, key: str, *, required: bool = False) -> list:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return []
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {type_name(value)}")
        return value

    def str_list(self, key: str, *, required: bool = False) -> list[str]:
        items = self.list(key, required=required)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(self.obj, f"{self.at(key)}[{i}]", f"must be a string, got {type_name(item)}")
        return items

    def sub(self, key: str, *, required: bool = False) -> "Fields":
        value = self.raw.get(key)
        if value is None and required:
            raise self.error(key, "is required")
        return Fields(self.obj, self.at(key), value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping of strings, got {type_name(value)}")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.error(f"{key}.{k}", f"must be a string, got {type_name(v)}")
        return value


def reject_duplicates(obj: str, path: str, items: list, what: str) -> None:
    """MetalLB's validateDuplicate: the same entry twice in a list is an error."""
    seen: dict = {}
    for i, item in enumerate(items):
        if item in seen:
            raise ConfigError(obj, f"{path}[{i}]",
                              f"duplicate {what} {item!r} (same as {path}[{seen[item]}]); list each one once")
        seen[item] = i
