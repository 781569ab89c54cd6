"""The validating admission webhook's decision, as a pure function (MetalLB's webhook semantics).

``review(kind, operation, obj, old_obj, existing_resources)`` -> ``(allowed, message, warnings)``.
The HTTPS server (elsewhere) turns an AdmissionReview into this call and the answer back.

What is checked, per kind (MetalLB's ``internal/k8s/webhooks``):

* CREATE/UPDATE of a configuration object: it must live in the metalxdp namespace (not checked
  on BGPPeer UPDATE, as MetalLB), then ``validate`` runs over the existing objects of the kinds
  that rule on it, with this object added or replaced - so an object is refused exactly when
  the controller would find the configuration invalid because of it:

  ===================  =============================================================
  BGPPeer              all BGPPeers (+ BFDProfiles so a reference can resolve)
  BFDProfile           all BFDProfiles
  BGPAdvertisement     all BGPAdvertisements + pools + Communities
  Community            all Communities
  IPAddressPool        all IPAddressPools and legacy AddressPools
  AddressPool          the same + Communities (its bgpAdvertisements may use aliases)
  L2Advertisement      all L2Advertisements + pools
  MetalLB              the object alone
  ===================  =============================================================

  References to things that may be created later (a passwordSecret's Secret, a bfdProfile, a
  community alias) never refuse an object: MetalLB blanks them at admission and the
  controller retries until they exist (``strict_transient=False``).
* UPDATE of a BGPPeer: ``spec.enableGracefulRestart`` cannot change (MetalLB's CEL rule,
  enforced here so they hold with the same message offline, in the controller and the agent).
* DELETE of a BFDProfile: refused while a BGPPeer references it, naming that peer.
  Every other DELETE is allowed.
* Any other operation (CONNECT, a typo, none) is refused: it was not checked. Kinds that are not
  configuration (the status kinds) are allowed.

Deviation: MetalLB returns "disableMP has no effect" and then skips all other checks of that
BGPPeer; metalxdp returns the warning and still checks the peer.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from .parse import DEFAULT_NAMESPACE, GROUP, validate_with_config

_POOLS = {"IPAddressPool", "AddressPool"}
SCOPE: dict[str, set[str]] = {
    "BGPPeer": {"BGPPeer", "BFDProfile"},
    "BFDProfile": {"BFDProfile"},
    "BGPAdvertisement": {"BGPAdvertisement", "Community"} | _POOLS,
    "Community": {"Community"},
    "IPAddressPool": set(_POOLS),
    "AddressPool": {"Community"} | _POOLS,
    "L2Advertisement": {"L2Advertisement"} | _POOLS,
    "MetalLB": set(),
}
MAX_ERRORS_IN_MESSAGE = 5


def _meta(o: Any) -> dict:
    m = o.get("metadata") if isinstance(o, dict) else None
    return m if isinstance(m, dict) else {}


def _spec(o: Any) -> dict:
    s = o.get("spec") if isinstance(o, dict) else None
    return s if isinstance(s, dict) else {}


def _is_ours(o: Any, namespace: str) -> bool:
    return (isinstance(o, dict) and str(o.get("apiVersion", "")).startswith(GROUP + "/")
            and (_meta(o).get("namespace") or namespace) == namespace)


def review(kind: str, operation: str, obj: Optional[dict], old_obj: Optional[dict],
           existing_resources: Iterable[Any], *, namespace: str = DEFAULT_NAMESPACE,
           nodes: Optional[Mapping[str, Mapping[str, str]]] = None,
           namespaces: Optional[Mapping[str, Mapping[str, str]]] = None) -> tuple[bool, str, list[str]]:
    """Decide one admission request. ``existing_resources``: the metallb.io objects now stored
    (other namespaces and other groups are ignored); ``nodes``/``namespaces``: name -> labels."""
    existing = [o for o in existing_resources if _is_ours(o, namespace)]
    operation = operation.upper()

    if operation == "DELETE":
        if kind == "BFDProfile":
            name = _meta(old_obj or obj).get("name")
            users = sorted(_meta(o).get("name") for o in existing
                           if o.get("kind") == "BGPPeer" and _spec(o).get("bfdProfile") == name)
            if users:
                return False, (f"Failed to delete BFDProfile {name}: used by BGPPeer {', '.join(users)}; "
                               f"remove spec.bfdProfile from the peer(s) first"), []
        return True, "", []

    if operation not in ("CREATE", "UPDATE"):
        # fail closed: an operation we do not know was not checked (the webhook answers these
        # with code 400 before calling us; this is the same rule for any other caller)
        return False, (f"{kind}: unknown admission operation {operation!r}; "
                       f"expected CREATE, UPDATE or DELETE"), []
    if kind not in SCOPE:  # status kinds and other groups are not configuration
        return True, "", []
    if not isinstance(obj, dict):
        return False, f"{kind}: the request carries no object", []
    name = _meta(obj).get("name")
    label = f"{kind}/{name}"
    obj_namespace = _meta(obj).get("namespace")
    if not (kind == "BGPPeer" and operation == "UPDATE") and obj_namespace != namespace:
        return False, (f"{label}: resource must be created in the {namespace} namespace "
                       f"(got {obj_namespace or 'none'}); metalxdp only reads metallb.io objects there"), []

    if kind == "BGPPeer" and operation == "UPDATE" and isinstance(old_obj, dict):
        before = bool(_spec(old_obj).get("enableGracefulRestart", False))
        after = bool(_spec(obj).get("enableGracefulRestart", False))
        if before != after:
            return False, (f"{label}: spec.enableGracefulRestart: EnableGracefulRestart cannot be changed "
                           f"after creation; delete and re-create the BGPPeer"), []

    scope = SCOPE[kind]
    resources = [o for o in existing if o.get("kind") in scope
                 and not (o.get("kind") == kind and _meta(o).get("name") == name)]
    resources.append(obj)
    config, errors = validate_with_config(resources, nodes=nodes, namespaces=namespaces, strict_transient=False)
    warnings = [w for w in config.warnings if w.startswith(label + ":")]
    if errors:
        # the object under review first: that is what the user just wrote
        errors.sort(key=lambda e: e.obj != label)
        shown = [str(e) for e in errors[:MAX_ERRORS_IN_MESSAGE]]
        more = len(errors) - len(shown)
        return False, "; ".join(shown) + (f" (and {more} more)" if more > 0 else ""), warnings
    return True, "", warnings
