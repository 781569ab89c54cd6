"""Old MetalLB configuration -> current metallb.io resources (pure; the CLI does the I/O).

Two old forms exist:

* the ConfigMap (``metallb-system/config``, key ``config``) with ``peers``, ``address-pools``,
  ``bgp-communities`` and ``bfd-profiles`` - converted as MetalLB's ``configmaptocrs`` tool
  does: BGPPeers ``peer1..N`` (v1beta2), one IPAddressPool per pool, ``l2advertisement<N>``
  for each layer2 pool, ``bgpadvertisement<N>`` for each bgp-advertisement (or one per bgp pool
  without any), BFDProfiles by name, all aliases in one Community named ``communities``;
* the ``AddressPool`` resource (v1alpha1/v1beta1) - converted to an IPAddressPool of the same
  name plus an L2Advertisement or BGPAdvertisement(s) named as the parser names the
  advertisements it derives from an AddressPool (``legacy_bgp_advertisement_names``), so
  ``parse(old) == parse(convert(old))``.

v1beta1 BGPPeers are rewritten as v1beta2. Every other object passes through unchanged, so
the output replaces the input as a whole.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Optional

import yaml

from . import yamlio

from .bgppeer_conversion import ConversionError, convert_bgppeer
from .parse import DEFAULT_NAMESPACE, GROUP, legacy_bgp_advertisement_names


class ConvertError(ValueError):
    """The old configuration cannot be converted; the message says where and why."""


_PEER_KEYS = {
    "my-asn": "myASN", "peer-asn": "peerASN", "peer-address": "peerAddress", "source-address": "sourceAddress",
    "peer-port": "peerPort", "hold-time": "holdTime", "keepalive-time": "keepaliveTime", "router-id": "routerID",
    "password": "password", "bfd-profile": "bfdProfile", "ebgp-multihop": "ebgpMultiHop",
}
_POOL_KEYS = {"name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements"}
_ADV_KEYS = {"aggregation-length": "aggregationLength", "aggregation-length-v6": "aggregationLengthV6",
             "localpref": "localPref", "communities": "communities"}
_BFD_KEYS = {"receive-interval": "receiveInterval", "transmit-interval": "transmitInterval",
             "detect-multiplier": "detectMultiplier", "echo-interval": "echoInterval", "echo-mode": "echoMode",
             "passive-mode": "passiveMode", "minimum-ttl": "minimumTtl"}
_SECTIONS = {"peers", "address-pools", "bgp-communities", "bfd-profiles"}


def _obj(kind: str, name: str, namespace: str, spec: dict, version: str = "v1beta1") -> dict:
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConvertError(f"{where}: must be a mapping")
    return value


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConvertError(f"{where}: must be a list")
    return value


def _no_unknown_keys(d: dict, known: Iterable[str], where: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConvertError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: "
                           f"{', '.join(sorted(known))}")


def _node_selector(sel: Any, where: str) -> dict:
    sel = _mapping(sel, where)
    _no_unknown_keys(sel, {"match-labels", "match-expressions"}, where)
    out: dict = {}
    if sel.get("match-labels"):
        out["matchLabels"] = dict(_mapping(sel["match-labels"], f"{where}.match-labels"))
    expressions = []
    for i, e in enumerate(_list(sel.get("match-expressions"), f"{where}.match-expressions")):
        e = _mapping(e, f"{where}.match-expressions[{i}]")
        _no_unknown_keys(e, {"key", "operator", "values"}, f"{where}.match-expressions[{i}]")
        expr = {"key": e.get("key"), "operator": e.get("operator")}
        if e.get("values"):
            expr["values"] = list(_list(e["values"], f"{where}.match-expressions[{i}].values"))
        expressions.append(expr)
    if expressions:
        out["matchExpressions"] = expressions
    return out


def config_from_configmap(cm: Any) -> dict:
    """The parsed ``data.config`` of a MetalLB ConfigMap (or the config mapping itself)."""
    if isinstance(cm, dict) and cm.get("kind") == "ConfigMap":
        data = _mapping(cm.get("data"), "ConfigMap data")
        text = data.get("config")
        if not isinstance(text, str):
            raise ConvertError("ConfigMap has no data.config: not a MetalLB configuration")
        try:
            cm = yamlio.load(text)
        except yaml.YAMLError as e:
            raise ConvertError(f"data.config is not valid YAML: {e}") from None
        if cm is None:
            return {}    # `config: ""` (or only comments): MetalLB reads an empty configuration
    config = _mapping(cm, "data.config")
    _no_unknown_keys(config, _SECTIONS, "data.config")
    return config


def k8s_name(name: str) -> str:
    """A legacy pool or BFD profile name as an object name the API server accepts, the way
    MetalLB's converter makes it: lower case, ``_`` -> ``-``; then any other character outside
    ``[a-z0-9.-]`` -> ``-``, no leading or trailing ``-``/``.``, at most 63 characters."""
    out = re.sub(r"[^a-z0-9.-]", "-", name.lower().replace("_", "-"))
    out = out.strip("-.")[:63].strip("-.")
    if not out:
        raise ConvertError(f"name {name!r} has nothing left that Kubernetes accepts in a name")
    return out


def _names(kind: str, names: list[str]) -> dict[str, str]:
    """Legacy name -> object name; two legacy names that would become one are an error."""
    out: dict[str, str] = {}
    for n in names:
        new = k8s_name(n)
        clash = [old for old, v in out.items() if v == new and old != n]
        if clash:
            raise ConvertError(f"{kind} names {clash[0]!r} and {n!r} both become {new!r}; rename one")
        out[n] = new
    return out


def convert_configmap(cm: Any, namespace: Optional[str] = None) -> list[dict]:
    """A legacy MetalLB ConfigMap (or its data.config mapping) -> current resources."""
    if namespace is None:
        meta = cm.get("metadata") if isinstance(cm, dict) else None
        namespace = (meta or {}).get("namespace") or DEFAULT_NAMESPACE
    config = config_from_configmap(cm)
    peers, pools, l2ads, bgpads, bfds, communities = [], [], [], [], [], []
    pool_names = _names("address pool", [ap["name"] for ap in _list(config.get("address-pools"), "address-pools")
                                         if isinstance(ap, dict) and isinstance(ap.get("name"), str) and ap["name"]])
    bfd_names = _names("BFD profile", [b["name"] for b in _list(config.get("bfd-profiles"), "bfd-profiles")
                                       if isinstance(b, dict) and isinstance(b.get("name"), str) and b["name"]])

    for i, p in enumerate(_list(config.get("peers"), "peers")):
        where = f"peers[{i}]"
        p = _mapping(p, where)
        _no_unknown_keys(p, set(_PEER_KEYS) | {"node-selectors"}, where)
        spec = {_PEER_KEYS[k]: v for k, v in p.items() if k in _PEER_KEYS and v not in (None, "")}
        selectors = [_node_selector(s, f"{where}.node-selectors[{j}]")
                     for j, s in enumerate(_list(p.get("node-selectors"), f"{where}.node-selectors"))]
        if selectors:
            spec["nodeSelectors"] = selectors
        if isinstance(spec.get("bfdProfile"), str) and spec["bfdProfile"] in bfd_names:
            spec["bfdProfile"] = bfd_names[spec["bfdProfile"]]
        peers.append(_obj("BGPPeer", f"peer{i + 1}", namespace, spec, "v1beta2"))

    l2_index = bgp_index = 1
    for i, ap in enumerate(_list(config.get("address-pools"), "address-pools")):
        where = f"address-pools[{i}]"
        ap = _mapping(ap, where)
        _no_unknown_keys(ap, _POOL_KEYS, where)
        name = ap.get("name")
        if not isinstance(name, str) or not name:
            raise ConvertError(f"{where}: every address pool needs a name")
        name = pool_names[name]
        protocol = ap.get("protocol")
        if protocol not in ("layer2", "bgp"):
            raise ConvertError(f"{where} ({name}): protocol must be layer2 or bgp, got {protocol!r}")
        spec: dict = {"addresses": list(_list(ap.get("addresses"), f"{where}.addresses"))}
        if ap.get("auto-assign") is not None:
            spec["autoAssign"] = ap["auto-assign"]
        if ap.get("avoid-buggy-ips") is not None:
            spec["avoidBuggyIPs"] = ap["avoid-buggy-ips"]
        pools.append(_obj("IPAddressPool", name, namespace, spec))
        advertisements = _list(ap.get("bgp-advertisements"), f"{where}.bgp-advertisements")
        if protocol == "layer2":
            if advertisements:
                raise ConvertError(f"{where} ({name}): bgp-advertisements is only allowed with protocol: bgp")
            l2ads.append(_obj("L2Advertisement", f"l2advertisement{l2_index}", namespace, {"ipAddressPools": [name]}))
            l2_index += 1
            continue
        for j, adv in enumerate(advertisements or [{}]):
            adv = _mapping(adv, f"{where}.bgp-advertisements[{j}]")
            _no_unknown_keys(adv, _ADV_KEYS, f"{where}.bgp-advertisements[{j}]")
            adv_spec = {_ADV_KEYS[k]: copy.deepcopy(v) for k, v in adv.items() if v is not None}
            adv_spec["ipAddressPools"] = [name]
            bgpads.append(_obj("BGPAdvertisement", f"bgpadvertisement{bgp_index}", namespace, adv_spec))
            bgp_index += 1

    for i, b in enumerate(_list(config.get("bfd-profiles"), "bfd-profiles")):
        where = f"bfd-profiles[{i}]"
        b = _mapping(b, where)
        _no_unknown_keys(b, set(_BFD_KEYS) | {"name"}, where)
        if not isinstance(b.get("name"), str) or not b.get("name"):
            raise ConvertError(f"{where}: every BFD profile needs a name")
        bfds.append(_obj("BFDProfile", bfd_names[b["name"]], namespace,
                         {_BFD_KEYS[k]: v for k, v in b.items() if k in _BFD_KEYS and v is not None}))

    aliases = _mapping(config.get("bgp-communities"), "bgp-communities")
    if aliases:
        communities.append(_obj("Community", "communities", namespace, {
            "communities": [{"name": str(k), "value": str(v)}
                            for k, v in sorted(aliases.items(), key=lambda kv: str(kv[0]))]}))
    return peers + pools + l2ads + bgpads + bfds + communities


def convert_addresspool(ap: dict, namespace: Optional[str] = None) -> list[dict]:
    """A legacy AddressPool resource -> IPAddressPool + L2Advertisement or BGPAdvertisement(s)."""
    meta = _mapping(ap.get("metadata"), "AddressPool metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ConvertError("AddressPool without metadata.name")
    where = f"AddressPool/{name}"
    namespace = namespace or meta.get("namespace") or DEFAULT_NAMESPACE
    spec = _mapping(ap.get("spec"), f"{where} spec")
    protocol = spec.get("protocol")
    if protocol not in ("layer2", "bgp"):
        raise ConvertError(f"{where}: spec.protocol must be layer2 or bgp, got {protocol!r}")
    pool_spec = {k: copy.deepcopy(spec[k]) for k in ("addresses", "autoAssign", "avoidBuggyIPs") if k in spec}
    pool = _obj("IPAddressPool", name, namespace, pool_spec)
    if meta.get("labels"):
        pool["metadata"]["labels"] = dict(meta["labels"])
    advertisements = _list(spec.get("bgpAdvertisements"), f"{where} spec.bgpAdvertisements")
    if protocol == "layer2":
        if advertisements:
            raise ConvertError(f"{where}: spec.bgpAdvertisements is only allowed with protocol: bgp")
        return [pool, _obj("L2Advertisement", name, namespace, {"ipAddressPools": [name]})]
    entries = advertisements or [{}]
    out = [pool]
    for adv_name, adv in zip(legacy_bgp_advertisement_names(name, len(entries)), entries):
        adv_spec = copy.deepcopy(_mapping(adv, f"{where} spec.bgpAdvertisements"))
        adv_spec["ipAddressPools"] = [name]
        out.append(_obj("BGPAdvertisement", adv_name, namespace, adv_spec))
    return out


def is_legacy_configmap(doc: Any) -> bool:
    return (isinstance(doc, dict) and doc.get("apiVersion") == "v1" and doc.get("kind") == "ConfigMap"
            and isinstance(doc.get("data"), dict) and "config" in doc["data"])


def convert_resources(docs: Iterable[Any], namespace: Optional[str] = None) -> list[dict]:
    """Every legacy object in ``docs`` converted; everything else passed through unchanged."""
    out: list[dict] = []
    for doc in docs:
        if doc is None:
            continue
        if is_legacy_configmap(doc):
            out += convert_configmap(doc, namespace)
        elif isinstance(doc, dict) and doc.get("kind") == "AddressPool" \
                and str(doc.get("apiVersion", "")).startswith(GROUP + "/"):
            out += convert_addresspool(doc, namespace)
        elif isinstance(doc, dict) and doc.get("kind") == "BGPPeer" and doc.get("apiVersion") == f"{GROUP}/v1beta1":
            try:
                out.append(convert_bgppeer(doc, "v1beta2"))
            except ConversionError as e:
                meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
                raise ConvertError(f"BGPPeer/{meta.get('name')}: {e}") from None
        else:
            out.append(doc)
    return out


def to_yaml(objects: list[dict]) -> str:
    """Multi-document YAML with a header saying where it came from."""
    header = "# Generated by `metalxdp config convert` from a legacy MetalLB configuration.\n"
    return header + "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)
