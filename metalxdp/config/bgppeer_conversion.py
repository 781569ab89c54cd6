"""BGPPeer conversion between metallb.io/v1beta1 and v1beta2, as MetalLB's conversion webhook.

Faithful to ``api/v1beta1/bgppeer_conversion.go``: v1beta2 is the hub. v1beta1 -> v1beta2 copies
the fields v1beta1 has (myASN, peerASN, peerAddress, sourceAddress, peerPort, holdTime,
keepaliveTime, routerID, password, bfdProfile, ebgpMultiHop) and turns v1beta1's own
``NodeSelector`` shape into a metav1.LabelSelector. v1beta2 -> v1beta1 copies the same fields
back - fields v1beta1 does not have (passwordSecret, vrf, connectTime, ...) are dropped, exactly
as MetalLB drops them - and writes every selector with ``matchLabels``/``matchExpressions``
present (possibly empty), as ``labelsToLegacySelector`` does.

``conversion_review(review)`` wraps it in the apiextensions.k8s.io/v1 ConversionReview protocol
for the HTTPS server that serves ``/convert``.
"""
from __future__ import annotations

import copy
from typing import Any

GROUP = "metallb.io"
# the fields both versions share, copied one to one
_COMMON_FIELDS = ("myASN", "peerASN", "peerAddress", "sourceAddress", "peerPort", "holdTime",
                  "keepaliveTime", "routerID", "password", "bfdProfile", "ebgpMultiHop")


class ConversionError(ValueError):
    """The object cannot be converted (not a BGPPeer, unknown version, malformed selectors)."""


def _copied(value: Any) -> Any:
    """A copy; lists stay lists. Ill-typed values pass through for the parser to report."""
    return list(value) if isinstance(value, list) else copy.deepcopy(value)


def _expressions(expressions: Any) -> Any:
    if not isinstance(expressions, list):
        return copy.deepcopy(expressions)
    return [{"key": e.get("key"), "operator": e.get("operator"), "values": _copied(e.get("values") or [])}
            if isinstance(e, dict) else copy.deepcopy(e) for e in expressions]


def _v1beta1_selector_to_label_selector(sel: Any) -> Any:
    """parseNodeSelector: an empty selector stays {}; otherwise matchLabels is always present."""
    if not isinstance(sel, dict):
        return copy.deepcopy(sel)
    labels = sel.get("matchLabels") or {}
    expressions = sel.get("matchExpressions") or []
    if not labels and not expressions:
        return {}
    out: dict = {"matchLabels": _copied(labels) if not isinstance(labels, dict) else dict(labels)}
    if expressions:
        out["matchExpressions"] = _expressions(expressions)
    return out


def _label_selector_to_v1beta1_selector(sel: Any) -> Any:
    """labelsToLegacySelector: both keys always present; values copied."""
    if not isinstance(sel, dict):
        return copy.deepcopy(sel)
    labels = sel.get("matchLabels") or {}
    return {"matchLabels": dict(labels) if isinstance(labels, dict) else copy.deepcopy(labels),
            "matchExpressions": _expressions(sel.get("matchExpressions") or [])}


def convert_bgppeer(obj: dict, to_version: str) -> dict:
    """A BGPPeer dict in v1beta1 or v1beta2 -> the same peer as ``to_version`` ("v1beta1"/"v1beta2"
    or "metallb.io/<v>"). Returns a new dict; the input is not modified. Status is kept."""
    to_version = to_version.rpartition("/")[2]
    if not isinstance(obj, dict) or obj.get("kind") != "BGPPeer":
        raise ConversionError("only BGPPeer objects can be converted")
    api_version = obj.get("apiVersion", "")
    group, _, from_version = str(api_version).rpartition("/")
    if group != GROUP or from_version not in ("v1beta1", "v1beta2") or to_version not in ("v1beta1", "v1beta2"):
        raise ConversionError(f"cannot convert BGPPeer from {api_version!r} to {to_version!r}")
    out = copy.deepcopy(obj)
    out["apiVersion"] = f"{GROUP}/{to_version}"
    if from_version == to_version:
        return out
    spec = obj.get("spec")
    if spec is None:
        return out
    if not isinstance(spec, dict):
        raise ConversionError("spec must be a mapping")
    new_spec = {k: copy.deepcopy(spec[k]) for k in _COMMON_FIELDS if k in spec}
    selectors = spec.get("nodeSelectors")
    if selectors is not None:
        if not isinstance(selectors, list):
            raise ConversionError("spec.nodeSelectors must be a list")
        convert = (_v1beta1_selector_to_label_selector if to_version == "v1beta2"
                   else _label_selector_to_v1beta1_selector)
        new_spec["nodeSelectors"] = [convert(s) for s in selectors]
    out["spec"] = new_spec
    return out


def conversion_review(review: dict) -> dict:
    """apiextensions.k8s.io/v1 ConversionReview request -> ConversionReview with the response."""
    request = review.get("request") or {} if isinstance(review, dict) else {}
    uid = request.get("uid", "")
    desired = request.get("desiredAPIVersion", "")
    converted = []
    try:
        for o in request.get("objects") or []:
            converted.append(convert_bgppeer(o, desired))
        result = {"status": "Success"}
    except ConversionError as e:
        converted = []
        result = {"status": "Failure", "message": str(e)}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "response": {"uid": uid, "convertedObjects": converted, "result": result}}
