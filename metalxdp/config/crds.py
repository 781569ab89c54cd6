"""The metallb.io CustomResourceDefinitions, generated from Python so shared parts (label
selectors, conditions) are written once, plus an offline structural-schema checker.

``deploy/crds/*.yaml`` is the output of ``python -m metalxdp.config.crds deploy/crds``; a unit
test fails when the files and this module disagree. Every schema is structural
(apiextensions.k8s.io/v1) without CEL (``x-kubernetes-validations``): the rules MetalLB writes in
CEL (connectTime range and whole seconds, serviceSelectors vs aggregationLength, immutable
fields) are enforced by the webhook (metalxdp.config.parse / admission), so that they hold with
the same message in ``metalxdp config validate``, the controller and the agent too.

The BGPPeer CRD converts v1beta1 <-> v1beta2 through a webhook (service
``metallb-webhook-service`` in ``metallb-system``, path ``/convert``), like MetalLB. Where no
webhook runs, install with ``metalxdp config crds --conversion none | kubectl apply -f -``:
identical CRDs but ``strategy: None`` (v1beta2 works; v1beta1 objects are then stored as sent).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

GROUP = "metallb.io"
WEBHOOK_SERVICE = {"name": "metallb-webhook-service", "namespace": "metallb-system", "path": "/convert"}
UINT32_MAX = 4294967295


# --- schema building blocks ------------------------------------------------------------------

def s_str(description: str = "", **kw: Any) -> dict:
    return {"type": "string", **({"description": description} if description else {}), **kw}


def s_int(description: str = "", minimum: Optional[int] = None, maximum: Optional[int] = None,
          default: Optional[int] = None, fmt: str = "int64") -> dict:
    d: dict = {"type": "integer", "format": fmt}
    if description:
        d["description"] = description
    if minimum is not None:
        d["minimum"] = minimum
    if maximum is not None:
        d["maximum"] = maximum
    if default is not None:
        d["default"] = default
    return d


def s_bool(description: str = "", default: Optional[bool] = None) -> dict:
    d: dict = {"type": "boolean"}
    if description:
        d["description"] = description
    if default is not None:
        d["default"] = default
    return d


def s_arr(items: dict, description: str = "", **kw: Any) -> dict:
    return {"type": "array", "items": items, **({"description": description} if description else {}), **kw}


def s_obj(properties: dict, description: str = "", required: Optional[list] = None) -> dict:
    # no empty ``properties: {}``: the API server drops it, so `kubectl apply` would send it
    # again at every re-apply and report the CRD "configured" although nothing changed
    d: dict = {"type": "object", "properties": properties} if properties else {"type": "object"}
    if description:
        d["description"] = description
    if required:
        d["required"] = required
    return d


def s_map(description: str = "") -> dict:
    # nullable: some API servers validate an empty-string map value ("role: ''") as null and
    # reject it unless nullable; the stored value stays "". The webhook rejects real nulls.
    return {"type": "object", "additionalProperties": {"type": "string", "nullable": True},
            **({"description": description} if description else {})}


def s_open(description: str = "") -> dict:
    """An object whose schema is Kubernetes' own (affinity, resources): kept as sent."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
            **({"description": description} if description else {})}


def label_selector(description: str = "") -> dict:
    return s_obj({
        "matchExpressions": s_arr(s_obj({
            "key": s_str("The label key that the selector applies to."),
            "operator": s_str("In, NotIn, Exists or DoesNotExist."),
            "values": s_arr(s_str(), "Values for In/NotIn (non-empty); empty for Exists/DoesNotExist."),
        }, required=["key", "operator"]), "Label selector requirements, ANDed."),
        "matchLabels": s_map("Labels that must all match."),
    }, description or "A Kubernetes label selector.")


def selectors(description: str) -> dict:
    return s_arr(label_selector(), description)


def condition() -> dict:
    """metav1.Condition."""
    return s_obj({
        "lastTransitionTime": s_str("When the condition last changed.", format="date-time"),
        "message": s_str("Human readable detail.", maxLength=32768),
        "observedGeneration": s_int("The .metadata.generation the condition was set for.", minimum=0),
        "reason": s_str("CamelCase reason.", maxLength=1024),
        "status": s_str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
        "type": s_str("CamelCase condition type.", maxLength=316),
    }, required=["lastTransitionTime", "message", "reason", "status", "type"])


def toleration() -> dict:
    return s_obj({
        "effect": s_str("NoSchedule, PreferNoSchedule or NoExecute; empty = all."),
        "key": s_str("Taint key; empty with operator Exists = every taint."),
        "operator": s_str("Exists or Equal (default Equal)."),
        "tolerationSeconds": s_int("How long a NoExecute taint is tolerated."),
        "value": s_str("Taint value for operator Equal."),
    })


def crd(kind: str, plural: str, versions: list[dict], short_names: Optional[list[str]] = None,
        conversion: Optional[dict] = None) -> dict:
    names: dict = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()}
    if short_names:
        names["shortNames"] = short_names
    spec: dict = {"group": GROUP, "names": names, "scope": "Namespaced", "versions": versions}
    if conversion:
        spec["conversion"] = conversion
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{GROUP}"}, "spec": spec}


def version(name: str, description: str, spec: Optional[dict], status: Optional[dict] = None, *,
            storage: bool = True, served: bool = True, columns: Optional[list] = None,
            spec_required: bool = False, deprecation: str = "") -> dict:
    props: dict = {"apiVersion": s_str(), "kind": s_str(), "metadata": {"type": "object"}}
    if spec is not None:
        props["spec"] = spec
    if status is not None:
        props["status"] = status
    schema: dict = {"type": "object", "description": description, "properties": props}
    if spec_required:
        schema["required"] = ["spec"]
    v: dict = {"name": name, "served": served, "storage": storage,
               "schema": {"openAPIV3Schema": schema}}
    if status is not None:
        v["subresources"] = {"status": {}}
    if columns:
        v["additionalPrinterColumns"] = columns
    if deprecation:
        v["deprecated"] = True
        v["deprecationWarning"] = deprecation
    return v


def column(name: str, path: str, type_: str = "string") -> dict:
    return {"name": name, "type": type_, "jsonPath": path}


AGE = column("Age", ".metadata.creationTimestamp", "date")


# --- the kinds -------------------------------------------------------------------------------

def ipaddresspools() -> dict:
    spec = s_obj({
        "addresses": s_arr(s_str(), "IP ranges this pool hands out: CIDRs (10.0.0.0/24, fc00::/120), "
                                    "ranges (10.0.0.10-10.0.0.20) or single IPs (10.0.0.1/32). IPv4 and "
                                    "IPv6 may be mixed (dual-stack pool). No range may overlap another."),
        "autoAssign": s_bool("false: only services asking for this pool (annotation or IP) get its IPs.", True),
        "avoidBuggyIPs": s_bool("Skip IPv4 addresses ending in .0 and .255: some consumer devices drop them.",
                                False),
        "serviceAllocation": s_obj({
            "priority": s_int("Lower number = higher priority; 0/unset = lowest.", fmt="int32"),
            "namespaces": s_arr(s_str(), "Only services in these namespaces."),
            "namespaceSelectors": selectors("Only services in namespaces with matching labels."),
            "serviceSelectors": selectors("Only services with matching labels."),
        }, "Which services this pool serves and its priority."),
    }, "The desired state of an IPAddressPool.", required=["addresses"])
    status = s_obj({k: s_int(d) for k, d in (
        ("assignedIPv4", "IPv4 addresses in use."), ("assignedIPv6", "IPv6 addresses in use."),
        ("availableIPv4", "IPv4 addresses still free."), ("availableIPv6", "IPv6 addresses still free."))},
        "Allocation counters written by the controller.")
    return crd("IPAddressPool", "ipaddresspools", [version(
        "v1beta1", "A pool of IP addresses that LoadBalancer services can get.", spec, status, spec_required=True,
        columns=[column("Auto Assign", ".spec.autoAssign", "boolean"),
                 column("Avoid Buggy IPs", ".spec.avoidBuggyIPs", "boolean"),
                 column("Addresses", ".spec.addresses"), AGE])])


def l2advertisements() -> dict:
    spec = s_obj({
        "ipAddressPools": s_arr(s_str(), "Pools (by name) announced; neither this nor selectors = all pools."),
        "ipAddressPoolSelectors": selectors("Pools (by label) announced."),
        "nodeSelectors": selectors("Nodes that may announce; empty = all."),
        "interfaces": s_arr(s_str(), "Interfaces to answer ARP/NDP on; empty = all."),
        "serviceSelectors": selectors("Only services with matching labels."),
        "preferredNodeSelectors": s_arr(s_obj({
            "weight": s_int("Added to a matching node's score.", 1, 100, fmt="int32"),
            "preference": label_selector("Nodes this preference applies to."),
        }, required=["weight", "preference"]), "Soft preference for the announcing node."),
    }, "Announce pools' IPs with ARP (IPv4) / NDP (IPv6).")
    return crd("L2Advertisement", "l2advertisements", [version(
        "v1beta1", "Announce IPs of pools at layer 2.", spec, s_obj({}),
        columns=[column("IPAddressPools", ".spec.ipAddressPools"),
                 column("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors"),
                 column("Interfaces", ".spec.interfaces"), AGE])])


def bgpadvertisements() -> dict:
    spec = s_obj({
        "aggregationLength": s_int("IPv4 prefix length announced (32 = the IP itself); at most 32 and not "
                                   "shorter than the pool's prefixes.", minimum=1, default=32, fmt="int32"),
        "aggregationLengthV6": s_int("IPv6 prefix length announced (128 = the IP itself).", minimum=0,
                                     default=128, fmt="int32"),
        "localPref": s_int("BGP LOCAL_PREF (sent to iBGP peers only).", 0, UINT32_MAX),
        "communities": s_arr(s_str(), "Communities: a:b, large:a:b:c or an alias from a Community."),
        "ipAddressPools": s_arr(s_str(), "Pools (by name); neither this nor selectors = all pools."),
        "ipAddressPoolSelectors": selectors("Pools (by label)."),
        "nodeSelectors": selectors("Nodes that announce (next hops); empty = all."),
        "peers": s_arr(s_str(), "BGPPeer names to announce to; empty = all peers."),
        "serviceSelectors": selectors("Only services with matching labels (not with aggregation)."),
    }, "How pools' IPs are announced over BGP.")
    return crd("BGPAdvertisement", "bgpadvertisements", [version(
        "v1beta1", "Announce IPs of pools over BGP.", spec, s_obj({}),
        columns=[column("IPAddressPools", ".spec.ipAddressPools"),
                 column("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors"),
                 column("Peers", ".spec.peers"), AGE])])


def _bgppeer_v1beta1() -> dict:
    legacy_selector = s_obj({
        "matchLabels": s_map(),
        "matchExpressions": s_arr(s_obj({
            "key": s_str(), "operator": s_str(), "values": s_arr(s_str(), minItems=1),
        }, required=["key", "operator", "values"])),
    })
    return s_obj({
        "myASN": s_int("Local AS number.", 0, UINT32_MAX),
        "peerASN": s_int("The peer's AS number.", 0, UINT32_MAX),
        "peerAddress": s_str("Address to dial."),
        "sourceAddress": s_str("Source address of the session."),
        "peerPort": s_int("Port to dial.", 0, 16384, fmt="int32"),
        "holdTime": s_str("BGP hold time (Go duration, e.g. 90s)."),
        "keepaliveTime": s_str("BGP keepalive time (Go duration)."),
        "routerID": s_str("BGP router ID (IPv4 address form)."),
        "nodeSelectors": s_arr(legacy_selector, "Nodes that open this session; empty = all."),
        "password": s_str("TCP MD5 password."),
        "bfdProfile": s_str("BFDProfile name."),
        "ebgpMultiHop": s_bool("The eBGP peer is more than one hop away."),
    }, "BGPPeer v1beta1 (deprecated shape; converted to v1beta2).", required=["myASN", "peerASN", "peerAddress"])


def _bgppeer_v1beta2() -> dict:
    return s_obj({
        "myASN": s_int("Local AS number (the same for every BGPPeer).", 0, UINT32_MAX),
        "peerASN": s_int("The peer's AS number.", 0, UINT32_MAX),
        "dynamicASN": s_str("Instead of peerASN: internal (the peer is in the AS this node presents) or "
                            "external (any other AS). Exactly one of peerASN and dynamicASN.",
                            enum=["internal", "external"]),
        "localASN": s_int("The AS number this node presents to this peer instead of myASN "
                          "(FRR's local-as ... no-prepend replace-as). 0 or unset: myASN.", 0, UINT32_MAX),
        "peerAddress": s_str("Address to dial."),
        "interface": s_str("BGP unnumbered: not supported by metalxdp (rejected by the webhook)."),
        "sourceAddress": s_str("Source address of the session."),
        "peerPort": s_int("Port to dial.", 1, 16384, default=179, fmt="int32"),
        "holdTime": s_str("BGP hold time, 0 or >= 3s (Go duration, e.g. 90s). Default 90s, or 3x keepaliveTime."),
        "keepaliveTime": s_str("BGP keepalive time, at most holdTime. Default holdTime/3."),
        "connectTime": s_str("Wait between connection attempts, 1s-65535s in whole seconds."),
        "routerID": s_str("BGP router ID (IPv4 address form); the same for peers sharing a node."),
        "nodeSelectors": selectors("Nodes that open this session; empty = all."),
        "password": s_str("TCP MD5 password (or use passwordSecret)."),
        "passwordSecret": s_obj({"name": s_str("Secret name."), "namespace": s_str("Secret namespace.")},
                                "A kubernetes.io/basic-auth Secret holding key 'password'."),
        "bfdProfile": s_str("BFDProfile name; no BFD session when empty."),
        "enableGracefulRestart": s_bool("BGP graceful restart (cannot be changed after creation)."),
        "ebgpMultiHop": s_bool("The eBGP peer is more than one hop away."),
        "vrf": s_str("Not supported by metalxdp (rejected by the webhook)."),
        "disableMP": s_bool("Deprecated; has no effect.", False),
        "dualStackAddressFamily": s_bool("Announce IPv4 and IPv6 prefixes over this one session (the other family's next hop is the node's address of that family).", False),
    }, "A BGP session to a router.", required=["myASN"])


def bgppeers(conversion: str = "webhook") -> dict:
    columns = [column("Address", ".spec.peerAddress"), column("ASN", ".spec.peerASN"),
               column("BFD Profile", ".spec.bfdProfile"), column("Multi Hops", ".spec.ebgpMultiHop"), AGE]
    if conversion == "webhook":
        conv = {"strategy": "Webhook", "webhook": {
            "clientConfig": {"service": dict(WEBHOOK_SERVICE)}, "conversionReviewVersions": ["v1"]}}
    else:
        conv = {"strategy": "None"}
    return crd("BGPPeer", "bgppeers", [
        version("v1beta1", "A BGP peer (old version).", _bgppeer_v1beta1(), s_obj({}), storage=False,
                columns=columns),
        version("v1beta2", "A BGP peer.", _bgppeer_v1beta2(), s_obj({}), columns=columns),
    ], conversion=conv)


def bfdprofiles() -> dict:
    spec = s_obj({
        "detectMultiplier": s_int("Missed packets before the session is declared down.", 2, 255, fmt="int32"),
        "echoInterval": s_int("Echo interval in ms: how often echo packets are sent, and the Required Min Echo RX Interval advertised (echo mode only).", 10, 60000, fmt="int32"),
        "echoMode": s_bool("Run the BFD echo function (RFC 5880 6.4) on IPv4 single-hop sessions."),
        "minimumTtl": s_int("Minimum incoming TTL (multi-hop).", 1, 254, fmt="int32"),
        "passiveMode": s_bool("Wait for the peer to start the session."),
        "receiveInterval": s_int("Minimum receive interval in ms.", 10, 60000, fmt="int32"),
        "transmitInterval": s_int("Minimum transmit interval in ms.", 10, 60000, fmt="int32"),
    }, "BFD timers for BGP peers that reference this profile.")
    return crd("BFDProfile", "bfdprofiles", [version(
        "v1beta1", "BFD settings for BGP sessions.", spec, s_obj({}),
        columns=[column("Passive Mode", ".spec.passiveMode", "boolean"),
                 column("Transmit Interval", ".spec.transmitInterval", "integer"),
                 column("Receive Interval", ".spec.receiveInterval", "integer"),
                 column("Multiplier", ".spec.detectMultiplier", "integer")])])


def communities() -> dict:
    spec = s_obj({"communities": s_arr(s_obj({
        "name": s_str("Alias usable in BGPAdvertisement.communities; unique across Community objects."),
        "value": s_str("a:b (16-bit each) or large:a:b:c (32-bit each)."),
    }))}, "Named BGP communities.")
    return crd("Community", "communities", [version("v1beta1", "BGP community aliases.", spec, s_obj({}))])


def servicel2statuses() -> dict:
    status = s_obj({
        "node": s_str("The node announcing the service."),
        "serviceName": s_str(), "serviceNamespace": s_str(),
        "interfaces": s_arr(s_obj({"name": s_str()}, required=["name"]), "Interfaces it is announced on."),
    })
    return crd("ServiceL2Status", "servicel2statuses", [version(
        "v1beta1", "Which node announces a service at layer 2 (written by the agent).", s_obj({}), status,
        columns=[column("Allocated Node", ".status.node"), column("Service Name", ".status.serviceName"),
                 column("Service Namespace", ".status.serviceNamespace")])])


def servicebgpstatuses() -> dict:
    status = s_obj({
        "node": s_str("The announcing node."), "serviceName": s_str(), "serviceNamespace": s_str(),
        "peers": s_arr(s_str(), "BGPPeers the service is announced to from this node."),
    })
    return crd("ServiceBGPStatus", "servicebgpstatuses", [version(
        "v1beta1", "Which peers a node announces a service to (written by the agent).", s_obj({}), status,
        columns=[column("Node", ".status.node"), column("Service Name", ".status.serviceName"),
                 column("Service Namespace", ".status.serviceNamespace")])])


def configurationstates() -> dict:
    status = s_obj({
        "result": s_str("Valid, Invalid or Unknown.", enum=["Valid", "Invalid", "Unknown"]),
        "errorSummary": s_str("Why the configuration is invalid."),
        "conditions": s_arr(condition(), "configReconcilerValid / poolReconcilerValid."),
    })
    return crd("ConfigurationState", "configurationstates", [version(
        "v1beta1", "Whether a component accepted the configuration (status only).", None, status,
        columns=[column("Result", ".status.result"), column("ErrorSummary", ".status.errorSummary"), AGE])])


def metallbs() -> dict:
    pod_config = s_obj({
        "priorityClassName": s_str(), "runtimeClassName": s_str(),
        "annotations": s_map("Extra pod annotations."),
        "affinity": s_open("A Kubernetes Affinity."),
        "resources": s_open("Kubernetes ResourceRequirements."),
    })
    spec = s_obj({
        "bgpBackend": s_str("Accepted for compatibility; metalxdp always uses ExaBGP.",
                            enum=["native", "frr", "frr-k8s", "frr-k8s-external"]),
        "bgpType": s_str("Deprecated name of bgpBackend.", enum=["native", "frr", "frr-k8s", "frr-k8s-external"]),
        "logLevel": s_str("Log verbosity.", enum=["all", "debug", "info", "warn", "error", "none"]),
        "loadBalancerClass": s_str("Only services with this spec.loadBalancerClass."),
        "image": s_str("Container image for the controller and the agent (default: the operator's --image)."),
        "nodeSelector": s_map("Nodes the agent (speaker) runs on."),
        "speakerTolerations": s_arr(toleration()),
        "controllerNodeSelector": s_map("Nodes the controller runs on."),
        "controllerTolerations": s_arr(toleration()),
        "controllerConfig": pod_config,
        "speakerConfig": pod_config,
        "frrk8sConfig": s_obj({"alwaysBlock": s_arr(s_str(), "CIDRs never accepted from peers."),
                               "namespace": s_str(), "secretPassthrough": s_bool()}),
    }, "How metalxdp is deployed.")
    status = s_obj({"conditions": s_arr(condition())})
    return crd("MetalLB", "metallbs", [version("v1beta1", "A metalxdp (MetalLB) deployment.", spec, status)])


def addresspools() -> dict:
    spec = s_obj({
        "protocol": s_str("layer2 or bgp.", enum=["layer2", "bgp"]),
        "addresses": s_arr(s_str(), "CIDRs or ranges, as IPAddressPool.spec.addresses."),
        "autoAssign": s_bool("false: only services asking for this pool.", True),
        "avoidBuggyIPs": s_bool("Skip IPv4 .0 and .255 addresses.", False),
        "bgpAdvertisements": s_arr(s_obj({
            "aggregationLength": s_int(minimum=1, default=32, fmt="int32"),
            "aggregationLengthV6": s_int(minimum=0, default=128, fmt="int32"),
            "localPref": s_int(minimum=0, maximum=UINT32_MAX),
            "communities": s_arr(s_str()),
        }), "Only with protocol bgp."),
    }, "A legacy address pool (use IPAddressPool + L2Advertisement/BGPAdvertisement).",
        required=["addresses", "protocol"])
    return crd("AddressPool", "addresspools", [
        version("v1alpha1", "Deprecated.", spec, s_obj({}), storage=False, spec_required=True,
                deprecation="metallb.io v1alpha1 AddressPool is deprecated"),
        version("v1beta1", "Deprecated: use IPAddressPool.", copy.deepcopy(spec), s_obj({}), spec_required=True,
                deprecation="metallb.io v1beta1 AddressPool is deprecated, consider using IPAddressPool"),
    ])


def crd_documents(conversion: str = "webhook") -> dict[str, dict]:
    """file name -> CRD. ``conversion``: "webhook" (MetalLB's) or "none" (no webhook running)."""
    docs = [ipaddresspools(), l2advertisements(), bgpadvertisements(), bgppeers(conversion), bfdprofiles(),
            communities(), servicel2statuses(), servicebgpstatuses(), configurationstates(), metallbs(),
            addresspools()]
    return {f"metallb.io_{d['spec']['names']['plural']}.yaml": d for d in docs}


HEADER = ("# Generated by `python -m metalxdp.config.crds deploy/crds` from metalxdp/config/crds.py;\n"
          "# edit that module, not this file.\n")


def render(doc: dict) -> str:
    return HEADER + "---\n" + yaml.safe_dump(doc, sort_keys=False, width=100)


def write(directory: Path, conversion: str = "webhook") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, doc in crd_documents(conversion).items():
        path = directory / name
        path.write_text(render(doc))
        out.append(path)
    return out


# --- offline structural-schema checker -------------------------------------------------------

def storage_schemas() -> dict[tuple[str, str], dict]:
    """(kind, version) -> openAPIV3Schema, for every served version."""
    out = {}
    for doc in crd_documents().values():
        for v in doc["spec"]["versions"]:
            out[(doc["spec"]["names"]["kind"], v["name"])] = v["schema"]["openAPIV3Schema"]
    return out


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def schema_problems(value: Any, schema: dict, path: str = "") -> list[str]:
    """What an API server would reject in ``value`` (types, unknown fields, required, enum, ranges).

    A subset of apiextensions validation, enough for our schemas: unknown fields are reported
    (the API server would silently prune them, which for a config file is a mistake worth
    pointing out)."""
    where = path or "<root>"
    problems: list[str] = []
    t = schema.get("type")
    if value is None:
        return problems if schema.get("nullable") else [f"{where}: must not be null"]
    if t == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
        if not ok:
            return [f"{where}: must be an integer"]
    elif t == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{where}: must be a number"]
    elif t in _JSON_TYPES and (not isinstance(value, _JSON_TYPES[t]) or t != "boolean" and isinstance(value, bool)):
        return [f"{where}: must be {t}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: must be one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: must be >= {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{where}: must be <= {schema['maximum']}")
    if t == "string" and "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{where}: longer than {schema['maxLength']}")
    if t == "array":
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: needs at least {schema['minItems']} items")
        for i, item in enumerate(value):
            problems += schema_problems(item, schema.get("items", {}), f"{path}[{i}]")
    if t == "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{path + '.' if path else ''}{key}: is required")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                problems += schema_problems(item, props[key], sub)
            elif isinstance(extra, dict):
                problems += schema_problems(item, extra, sub)
            elif props is not None and path != "metadata":
                problems.append(f"{sub}: unknown field")
    return problems


def object_problems(obj: dict) -> list[str]:
    """Schema problems of one metallb.io object (empty for other groups or a clean object)."""
    group, _, ver = str(obj.get("apiVersion", "")).rpartition("/")
    if group != GROUP:
        return []
    schema = storage_schemas().get((obj.get("kind"), ver))
    if schema is None:
        return [f"{obj.get('kind')} {obj.get('apiVersion')}: no such served kind/version"]
    return schema_problems(obj, schema)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m metalxdp.config.crds DIRECTORY", file=sys.stderr)
        return 2
    for p in write(Path(argv[0])):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
