"""YAML loading that reads Kubernetes manifests the way kubectl does.

PyYAML implements YAML 1.1 sexagesimal numbers, so an unquoted BGP community like
``64512:1`` loads as the integer 3870721 (and ``1:30`` as 90). kubectl (go-yaml) keeps both as
strings. This loader drops the sexagesimal int/float forms and otherwise behaves like
``yaml.safe_load``.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import yaml


class KubeLoader(yaml.SafeLoader):
    """SafeLoader without base-60 numbers."""


KubeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
KubeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X),
    list("-+0123456789"))
KubeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load(text: str) -> Any:
    return yaml.load(text, Loader=KubeLoader)  # noqa: S506 - KubeLoader is a SafeLoader


def load_all(text: str) -> Iterator[Any]:
    return yaml.load_all(text, Loader=KubeLoader)  # noqa: S506
