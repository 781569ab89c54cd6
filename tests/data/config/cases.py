"""The validation table: one valid and at least one invalid case per rule.

Covers every rule of MetalLB's webhook/config.For (reference section C, items 1-8, with
metalxdp's backend gate) and the OpenShift seed's webhook list. Each case's resources are full
Kubernetes objects in ``metallb-system`` that an API server (the pinned release) with ``deploy/crds``
accepts *schema-wise* unless the case is marked ``level="schema"``.

How to run a case against a real API server with the webhook registered (the integration test
does this): start from an empty metallb-system namespace, apply ``resources[:-1]`` in order
(they are all valid), then apply ``resources[-1]``:

- ``level="valid"``: accepted (``warning`` if set is returned as an admission warning);
- ``level="parser"``: rejected by the webhook, the message contains ``error_substring``;
- ``level="schema"``: rejected by the CRD schema (ranges/enums/required), before the webhook;
- ``level="controller"``: a problem with a referenced Secret (wrong type, no ``password`` key),
  or one that spans kinds no single webhook sees together (an IPv6 pool advertised to a peer
  whose BFD profile has echo mode). The webhook ACCEPTS it - like MetalLB, which does not read
  Secrets at admission and checks each kind with its own scope - and ``parse()`` (the
  controller) rejects it permanently;
- ``level="transient"``: a reference to something that may not exist yet (Secret, BFDProfile,
  Community alias). The webhook ACCEPTS it (MetalLB blanks these at admission); ``parse()``
  with ``strict_transient=True`` reports it as a transient ConfigError.

Plain ``parse()`` rejects every non-valid case, naming ``error_field`` (a substring of the
ConfigError's field path) and ``error_substring`` (a substring of its message).
v1 Secrets and Nodes in ``resources`` are inputs for the parser (``secrets=``, ``nodes=``).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional

NS = "metallb-system"


@dataclass(frozen=True)
class Case:
    id: str
    resources: list
    level: str = "valid"                   # valid | parser | schema | controller | transient
    error_field: Optional[str] = None      # substring of ConfigError.field
    error_substring: Optional[str] = None  # substring of the message
    warning: Optional[str] = None          # substring of a Config.warnings entry (valid cases)
    rule: str = ""                         # which rule the case is about (for reports)
    nodes: Optional[dict] = field(default=None, compare=False)

    @property
    def invalid(self) -> bool:
        return self.level != "valid"


def obj(kind: str, name: str, spec: dict, version: str = "v1beta1", labels: Optional[dict] = None) -> dict:
    meta: dict = {"name": name, "namespace": NS}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": f"metallb.io/{version}", "kind": kind, "metadata": meta, "spec": spec}


def pool(name: str, *addresses: str, labels: Optional[dict] = None, **spec) -> dict:
    return obj("IPAddressPool", name, {"addresses": list(addresses), **spec}, labels=labels)


def legacy_pool(name: str, protocol: str, *addresses: str, version: str = "v1beta1", **spec) -> dict:
    return obj("AddressPool", name, {"protocol": protocol, "addresses": list(addresses), **spec}, version)


def peer(name: str, address: str = "198.19.0.1", my_asn: int = 64500, peer_asn: int = 64501, **spec) -> dict:
    return obj("BGPPeer", name, {"myASN": my_asn, "peerASN": peer_asn, "peerAddress": address, **spec}, "v1beta2")


def l2(name: str, **spec) -> dict:
    return obj("L2Advertisement", name, spec)


def bgpadv(name: str, **spec) -> dict:
    return obj("BGPAdvertisement", name, spec)


def bfd(name: str, **spec) -> dict:
    return obj("BFDProfile", name, spec)


def community(name: str, *pairs: tuple[str, str]) -> dict:
    return obj("Community", name, {"communities": [{"name": n, "value": v} for n, v in pairs]})


def secret(name: str, password: Optional[str] = "s3cret", type_: str = "kubernetes.io/basic-auth",
           username: Optional[str] = None) -> dict:
    data = {}
    if password is not None:
        data["password"] = base64.b64encode(password.encode()).decode()
    if username is not None:
        data["username"] = base64.b64encode(username.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "type": type_, "data": data}


SEL_A = {"matchLabels": {"zone": "a"}}
SEL_B = {"matchLabels": {"zone": "b"}}

CASES: list[Case] = [
    # ---- seed 000: address pool webhook -------------------------------------------------------
    Case("pool-names-unique-ok", [legacy_pool("p1", "layer2", "198.18.0.0/28"), pool("p2", "198.18.1.0/28")],
         rule="seed000: pool names unique"),
    Case("pool-names-unique-dup", [pool("dup", "198.18.0.0/28"), legacy_pool("dup", "layer2", "198.18.1.0/28")],
         "parser", "metadata.name", "duplicate definition of pool", rule="seed000: pool names unique"),
    Case("pool-no-overlap-ok", [pool("a", "198.18.0.0/25"), pool("b", "198.18.0.128/25")],
         rule="seed000: ranges do not overlap"),
    Case("pool-overlap-cidr", [pool("a", "198.18.0.0/24"), pool("b", "198.18.0.128/25")],
         "parser", "spec.addresses[0]", "overlaps", rule="seed000: ranges do not overlap"),
    Case("pool-overlap-range", [pool("a", "203.0.113.100-203.0.113.200"), pool("b", "203.0.113.150/32")],
         "parser", "spec.addresses[0]", "overlaps", rule="seed000: ranges do not overlap"),
    Case("pool-overlap-v6", [pool("a", "2001:db8::/120"), pool("b", "2001:db8::10-2001:db8::20")],
         "parser", "spec.addresses[0]", "overlaps", rule="seed000: ranges do not overlap"),
    Case("pool-overlap-within-pool", [pool("a", "198.18.0.0/24", "198.18.0.5-198.18.0.6")],
         "parser", "spec.addresses[1]", "overlaps", rule="seed000: ranges do not overlap"),
    Case("legacy-bgpadv-with-bgp-ok", [legacy_pool("lp", "bgp", "203.0.113.100-203.0.113.255",
                                                   bgpAdvertisements=[{"communities": ["65535:65282"]}])],
         rule="seed000: bgpAdvertisements only with protocol bgp"),
    Case("legacy-bgpadv-with-layer2", [legacy_pool("lp", "layer2", "198.18.0.0/28",
                                                   bgpAdvertisements=[{"localPref": 100}])],
         "parser", "spec.bgpAdvertisements", "only allowed with protocol: bgp",
         rule="seed000: bgpAdvertisements only with protocol bgp"),
    Case("legacy-v1alpha1-ok", [legacy_pool("old", "layer2", "198.18.2.0/28", version="v1alpha1")],
         rule="legacy AddressPool v1alpha1 served"),
    Case("legacy-protocol-enum", [legacy_pool("lp", "ospf", "198.18.0.0/28")],
         "schema", "spec.protocol", "layer2 or bgp", rule="legacy protocol enum"),
    # ---- seed 000: BGP peer webhook -----------------------------------------------------------
    Case("peer-address-unique-ok", [peer("a", "198.19.0.1"), peer("b", "198.19.0.2")],
         rule="seed000: peer address unique"),
    Case("peer-address-unique-dup", [peer("a", "198.19.0.1"), peer("b", "198.19.0.1", peer_asn=64999)],
         "parser", "spec.peerAddress", "already used by BGPPeer/a", rule="seed000: peer address unique"),
    Case("peer-keepalive-lt-hold-ok", [peer("a", keepaliveTime="30s", holdTime="90s")],
         rule="seed000: keepalive shorter than hold time"),
    Case("peer-keepalive-only-ok", [peer("a", keepaliveTime="10s")],
         rule="seed000: keepalive only -> hold = 3*keepalive"),
    Case("peer-keepalive-gt-hold", [peer("a", keepaliveTime="60s", holdTime="30s")],
         "parser", "spec.keepaliveTime", "must be lower than holdTime", rule="seed000: keepalive shorter than hold"),
    Case("peer-my-asn-same-ok", [peer("a", "198.19.0.1"), peer("b", "198.19.0.2", peer_asn=65000)],
         rule="seed000: one myASN"),
    Case("peer-my-asn-differs", [peer("a", "198.19.0.1"), peer("b", "198.19.0.2", my_asn=64600)],
         "parser", "spec.myASN", "same myASN", rule="seed000: one myASN"),
    Case("peer-router-id-same-ok", [peer("a", "198.19.0.1", routerID="198.19.10.10"),
                                    peer("b", "198.19.0.2", routerID="198.19.10.10")],
         rule="seed000: one routerID"),
    Case("peer-router-id-differs", [peer("a", "198.19.0.1", routerID="198.19.10.10"),
                                    peer("b", "198.19.0.2", routerID="198.19.10.11")],
         "parser", "spec.routerID", "same routerID", rule="seed000: one routerID"),
    Case("peer-router-id-set-and-unset", [peer("a", "198.19.0.1", routerID="198.19.10.10"), peer("b", "198.19.0.2")],
         "parser", "spec.routerID", "same routerID", rule="seed000: one routerID"),
    # ---- MetalLB v0.16 checkFRRPeersCompatible: the per-node rules only bind peers that share a node
    Case("peer-my-asn-router-id-differ-disjoint-nodes-ok",
         [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
          {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "b"}}},
          peer("a", "198.19.0.1", routerID="198.19.10.10", nodeSelectors=[SEL_A]),
          peer("b", "198.19.0.2", my_asn=64600, routerID="198.19.10.11", nodeSelectors=[SEL_B])],
         rule="v0.16: myASN/routerID may differ on disjoint nodes", nodes={"n1": {"zone": "a"}, "n2": {"zone": "b"}}),
    Case("peer-my-asn-differs-shared-node",
         [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
          {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "b"}}},
          peer("a", "198.19.0.1", nodeSelectors=[SEL_A]),
          peer("b", "198.19.0.2", my_asn=64600)],
         "parser", "spec.myASN", "same myASN", rule="v0.16: myASN equal on a shared node",
         nodes={"n1": {"zone": "a"}, "n2": {"zone": "b"}}),
    Case("peer-router-id-differs-shared-node",
         [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
          {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "b"}}},
          peer("a", "198.19.0.1", routerID="198.19.10.10"),
          peer("b", "198.19.0.2", routerID="198.19.10.11", nodeSelectors=[SEL_B])],
         "parser", "spec.routerID", "same routerID", rule="v0.16: routerID equal on a shared node",
         nodes={"n1": {"zone": "a"}, "n2": {"zone": "b"}}),
    Case("peer-my-asn-differs-no-nodes-in-cluster",
         [peer("a", "198.19.0.1", nodeSelectors=[SEL_A]),
          peer("b", "198.19.0.2", my_asn=64600, nodeSelectors=[SEL_B])],
         "parser", "spec.myASN", "same myASN", rule="v0.16: no nodes known counts as shared", nodes={}),
    # ---- C.1 backend gate ---------------------------------------------------------------------
    Case("gate-accepted-features", [
        bfd("fast", receiveInterval=100, transmitInterval=100, detectMultiplier=3),
        secret("bgp-pass"),
        peer("full", "2001:db8:ccd:e793::1", bfdProfile="fast", keepaliveTime="3s", holdTime="9s",
             enableGracefulRestart=True, passwordSecret={"name": "bgp-pass", "namespace": NS},
             ebgpMultiHop=True, sourceAddress="2001:db8:ccd:e793::2", routerID="198.19.10.10",
             connectTime="5s"),
        pool("v6", "2001:db8:ccd:e799::/124"),
        bgpadv("v6adv", ipAddressPools=["v6"], communities=["large:64500:1:2", "65535:65281"]),
    ], rule="C.1 metalxdp accepts bfd, keepalive, IPv6, large communities, GR, secrets, multihop, connectTime"),
    Case("gate-vrf", [peer("a", vrf="red")], "parser", "spec.vrf", "vrf is not supported", rule="C.1 gate"),
    # ---- BGP unnumbered (MetalLB peerFromCR: exactly one of address and interface) -------------
    Case("peer-interface-ok", [obj("BGPPeer", "a", {"myASN": 64500, "peerASN": 64501, "interface": "eth1"}, "v1beta2")],
         rule="C.3 interface"),
    Case("peer-interface-and-address", [obj("BGPPeer", "a", {"myASN": 64500, "peerASN": 64501, "interface": "eth1",
                                                             "peerAddress": "198.19.0.1"}, "v1beta2")],
         "parser", "spec.interface", "peer has both Address and Interface specified", rule="C.3 interface"),
    Case("peer-interface-dup", [obj("BGPPeer", "a", {"myASN": 64500, "peerASN": 64501, "interface": "eth1"}, "v1beta2"),
                                obj("BGPPeer", "b", {"myASN": 64500, "peerASN": 64502, "interface": "eth1"}, "v1beta2")],
         "parser", "spec.interface", "interface eth1 is already used", rule="C.3 interface"),
    Case("peer-interface-source-warns", [obj("BGPPeer", "a", {"myASN": 64500, "peerASN": 64501, "interface": "eth1",
                                                              "sourceAddress": "198.19.0.5"}, "v1beta2")],
         warning="sourceAddress has no effect with spec.interface", rule="C.3 interface"),
    Case("peer-interface-two-ok", [obj("BGPPeer", "a", {"myASN": 64500, "peerASN": 64501, "interface": "eth1"}, "v1beta2"),
                                   obj("BGPPeer", "b", {"myASN": 64500, "peerASN": 64501, "interface": "eth2"}, "v1beta2")],
         rule="C.3 interface"),
    # ---- MetalLB's peerFromCR ASN rules (issue 17: localASN and dynamicASN work) ---------------
    Case("peer-dynamic-asn-external-ok", [obj("BGPPeer", "a", {"myASN": 64500, "dynamicASN": "external",
                                                               "peerAddress": "198.19.0.1"}, "v1beta2")],
         rule="C.3 peerASN or dynamicASN"),
    Case("peer-dynamic-asn-internal-ok", [obj("BGPPeer", "a", {"myASN": 64500, "dynamicASN": "internal",
                                                               "peerAddress": "198.19.0.1"}, "v1beta2")],
         rule="C.3 peerASN or dynamicASN"),
    Case("peer-dynamic-asn-and-peer-asn", [peer("a", dynamicASN="external")],
         "parser", "spec.dynamicASN", "both peerASN and dynamicASN", rule="C.3 peerASN or dynamicASN"),
    Case("peer-neither-peer-asn-nor-dynamic", [obj("BGPPeer", "a", {"myASN": 64500, "peerAddress": "198.19.0.1"},
                                                   "v1beta2")],
         "parser", "spec.peerASN", "missing peer ASN and dynamicASN", rule="C.3 peerASN or dynamicASN"),
    Case("peer-dynamic-asn-bad-enum", [obj("BGPPeer", "a", {"myASN": 64500, "dynamicASN": "sideways",
                                                            "peerAddress": "198.19.0.1"}, "v1beta2")],
         "schema", "spec.dynamicASN", "invalid dynamicASN", rule="CRD enum internal/external"),
    Case("peer-dynamic-internal-multihop-ok", [obj("BGPPeer", "a", {"myASN": 64500, "dynamicASN": "internal",
                                                                    "peerAddress": "198.19.0.1",
                                                                    "ebgpMultiHop": True}, "v1beta2")],
         rule="C.3 multihop rule compares peerASN with myASN only (MetalLB)"),
    Case("peer-local-asn-ok", [peer("a", localASN=64999)], rule="C.3 localASN (range only)"),
    Case("peer-local-asn-per-node-ok",
         [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
          {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "b"}}},
          peer("a", "198.19.0.1", localASN=64601, nodeSelectors=[SEL_A]),
          peer("b", "198.19.0.2", localASN=64602, nodeSelectors=[SEL_B])],
         rule="C.3 a different AS per node: one myASN, localASN per peer"),
    Case("peer-local-asn-too-big", [peer("a", localASN=4294967296)],
         "schema", "spec.localASN", "must be between 0 and 4294967295", rule="CRD range 0-4294967295"),
    Case("peer-dual-stack-af-ok", [peer("a", dualStackAddressFamily=True)], rule="C.3 dualStackAddressFamily"),
    Case("gate-disable-mp-warns", [peer("a", disableMP=True)], warning="has no effect", rule="C.1 disableMP"),
    Case("frr-same-address-disjoint-nodes-ok",
         [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}}},
          {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "b"}}},
          peer("a", "198.19.0.1", nodeSelectors=[SEL_A]),
          peer("b", "198.19.0.1", peer_asn=64999, nodeSelectors=[SEL_B])],
         rule="C.1 FRR: same address allowed on disjoint nodes", nodes={"n1": {"zone": "a"}, "n2": {"zone": "b"}}),
    # ---- C.2 BFD profiles ---------------------------------------------------------------------
    Case("bfd-ranges-ok", [bfd("edge", receiveInterval=10, transmitInterval=60000, detectMultiplier=255,
                               echoInterval=10, minimumTtl=254, passiveMode=True)], rule="C.2 BFD ranges"),
    Case("bfd-detect-multiplier-low", [bfd("b", detectMultiplier=1)], "schema", "spec.detectMultiplier",
         "between 2 and 255", rule="C.2 BFD ranges"),
    Case("bfd-detect-multiplier-high", [bfd("b", detectMultiplier=256)], "schema", "spec.detectMultiplier",
         "between 2 and 255", rule="C.2 BFD ranges"),
    Case("bfd-receive-interval", [bfd("b", receiveInterval=9)], "schema", "spec.receiveInterval",
         "between 10 and 60000", rule="C.2 BFD ranges"),
    Case("bfd-transmit-interval", [bfd("b", transmitInterval=60001)], "schema", "spec.transmitInterval",
         "between 10 and 60000", rule="C.2 BFD ranges"),
    Case("bfd-echo-interval", [bfd("b", echoInterval=5)], "schema", "spec.echoInterval",
         "between 10 and 60000", rule="C.2 BFD ranges"),
    Case("bfd-minimum-ttl", [bfd("b", minimumTtl=255)], "schema", "spec.minimumTtl", "between 1 and 254",
         rule="C.2 BFD ranges"),
    Case("bfd-echo-mode-false-ok", [bfd("b", echoMode=False)], rule="C.8 echo mode"),
    Case("bfd-echo-mode", [bfd("b", echoMode=True, echoInterval=100)], rule="C.8 echo mode"),
    # MetalLB validateConfig: an IPv6 pool must not be advertised to a peer with BFD echo
    Case("bfd-echo-v6-pool-all-peers", [bfd("b", echoMode=True), peer("r1", bfdProfile="b"),
                                        pool("p6", "2001:db8:5::/120"), bgpadv("a", ipAddressPools=["p6"])],
         "controller", "spec", "which has bfd echo enabled, which is not possible", rule="C.8 echo and IPv6"),
    Case("bfd-echo-v6-pool-named-peer", [bfd("b", echoMode=True), peer("r1", bfdProfile="b"),
                                         peer("r2", address="198.19.0.2"),
                                         pool("p6", "198.51.100.0/28", "2001:db8:5::/120"),
                                         bgpadv("a", ipAddressPools=["p6"], peers=["r1"])],
         "controller", "spec.peers", "references peer r1 which has bfd echo", rule="C.8 echo and IPv6"),
    Case("bfd-echo-v6-pool-other-peer-ok", [bfd("b", echoMode=True), peer("r1", bfdProfile="b"),
                                            peer("r2", address="198.19.0.2"),
                                            pool("p6", "2001:db8:5::/120"),
                                            bgpadv("a", ipAddressPools=["p6"], peers=["r2"])],
         rule="C.8 echo and IPv6"),
    Case("bfd-echo-v4-pool-ok", [bfd("b", echoMode=True), peer("r1", bfdProfile="b"),
                                 pool("p4", "198.51.100.0/28"), bgpadv("a", ipAddressPools=["p4"])],
         rule="C.8 echo and IPv6"),
    Case("bfd-no-echo-v6-pool-ok", [bfd("b", echoMode=False), peer("r1", bfdProfile="b"),
                                    pool("p6", "2001:db8:5::/120"), bgpadv("a", ipAddressPools=["p6"])],
         rule="C.8 echo and IPv6"),
    # ---- C.3 peers ----------------------------------------------------------------------------
    Case("peer-minimal-ok", [peer("a")], rule="C.3 peer"),
    Case("peer-v1beta1-ok", [obj("BGPPeer", "old", {"myASN": 64500, "peerASN": 64501, "peerAddress": "198.19.0.9",
                                                    "nodeSelectors": [{"matchExpressions": [
                                                        {"key": "zone", "operator": "In", "values": ["a"]}]}]})],
         rule="C.3 v1beta1 BGPPeer converted"),
    Case("peer-my-asn-zero", [peer("a", my_asn=0)], "parser", "spec.myASN", "missing local ASN", rule="C.3"),
    Case("peer-my-asn-too-big", [peer("a", my_asn=4294967296)], "schema", "spec.myASN",
         "between 0 and 4294967295", rule="C.3 ASN range"),
    Case("peer-no-peer-asn", [obj("BGPPeer", "a", {"myASN": 64500, "peerAddress": "198.19.0.1"}, "v1beta2")],
         "parser", "spec.peerASN", "missing peer ASN", rule="C.3"),
    Case("peer-ibgp-multihop", [peer("a", my_asn=64500, peer_asn=64500, ebgpMultiHop=True)],
         "parser", "spec.ebgpMultiHop", "iBGP", rule="C.3"),
    Case("peer-ibgp-ok", [peer("a", my_asn=64500, peer_asn=64500)], rule="C.3"),
    Case("peer-no-address", [obj("BGPPeer", "a", {"myASN": 64500, "peerASN": 64501}, "v1beta2")],
         "parser", "spec.peerAddress", "peer has no Address or Interface specified",
         rule="C.3 address XOR interface"),
    Case("peer-bad-address", [peer("a", "198.19.0.300")], "parser", "spec.peerAddress", "invalid BGPPeer address",
         rule="C.3 valid IPs"),
    Case("peer-bad-router-id", [peer("a", routerID="router-1")], "parser", "spec.routerID", "invalid router ID",
         rule="C.3 valid IPs"),
    Case("peer-bad-source-address", [peer("a", sourceAddress="198.18.0")], "parser", "spec.sourceAddress",
         "invalid source IP", rule="C.3 valid IPs"),
    Case("peer-hold-time-too-small", [peer("a", holdTime="2s")], "parser", "spec.holdTime", "must be 0 or >=3s",
         rule="C.3 timers"),
    Case("peer-hold-time-zero-ok", [peer("a", holdTime="0s", keepaliveTime="0s")], rule="C.3 timers"),
    Case("peer-hold-time-bad-format", [peer("a", holdTime="ninety")], "parser", "spec.holdTime",
         "invalid duration", rule="C.3 timers"),
    Case("peer-connect-time-zero", [peer("a", connectTime="0s")], "parser", "spec.connectTime",
         "between 1 second and 65535", rule="C.3/CRD connectTime"),
    Case("peer-connect-time-fraction", [peer("a", connectTime="1500ms")], "parser", "spec.connectTime",
         "whole number of seconds", rule="C.3/CRD connectTime"),
    Case("peer-connect-time-ok", [peer("a", connectTime="10s")], rule="C.3/CRD connectTime"),
    Case("peer-port-ok", [peer("a", peerPort=1179)], rule="CRD peerPort"),
    Case("peer-port-zero", [peer("a", peerPort=0)], "schema", "spec.peerPort", "between 1 and 16384",
         rule="CRD peerPort"),
    Case("peer-port-too-big", [peer("a", peerPort=16385)], "schema", "spec.peerPort", "between 1 and 16384",
         rule="CRD peerPort"),
    Case("peer-node-selectors-ok", [peer("a", nodeSelectors=[SEL_A, SEL_B])], rule="C.3 nodeSelectors"),
    Case("peer-node-selectors-dup", [peer("a", nodeSelectors=[SEL_A, SEL_A])], "parser", "spec.nodeSelectors[1]",
         "duplicate definition of nodeSelectors", rule="C.3 nodeSelectors"),
    Case("peer-password-and-secret", [secret("bgp-pass"), peer("a", password="x",
                                                               passwordSecret={"name": "bgp-pass"})],
         "parser", "spec.password", "both password and passwordSecret", rule="C.3 password XOR secret"),
    Case("peer-secret-missing", [peer("a", passwordSecret={"name": "nope", "namespace": NS})],
         "transient", "spec.passwordSecret", "not found", rule="C.3 secret exists (transient)"),
    Case("peer-secret-wrong-type", [secret("opaque", type_="Opaque"),
                                    peer("a", passwordSecret={"name": "opaque", "namespace": NS})],
         "controller", "spec.passwordSecret", "kubernetes.io/basic-auth", rule="C.3 secret type"),
    Case("peer-secret-no-password-key", [secret("nopass", password=None, username="bgp"),
                                         peer("a", passwordSecret={"name": "nopass", "namespace": NS})],
         "controller", "spec.passwordSecret", "password not specified", rule="C.3 secret key"),
    Case("peer-bfd-profile-ok", [bfd("slow"), peer("a", bfdProfile="slow")], rule="C.3 bfd profile exists"),
    Case("peer-bfd-profile-missing", [peer("a", bfdProfile="nope")], "transient", "spec.bfdProfile",
         "does not exist", rule="C.3 bfd profile exists (transient)"),
    Case("peer-deep-equal-dup", [peer("a"), peer("b")], "parser", "spec", "already exists with the same settings",
         rule="C.3 no duplicate peer"),
    # ---- C.4 pools ----------------------------------------------------------------------------
    Case("pool-forms-ok", [pool("forms", "198.18.0.0/28", " 198.18.1.1 - 198.18.1.9 ", "198.18.2.1-198.18.2.1",
                                "198.18.3.7/32", "2001:db8::/124", "2001:db8::100/128", autoAssign=False, avoidBuggyIPs=True)],
         rule="C.4 address forms, mixed families"),
    Case("pool-no-addresses", [pool("empty")], "parser", "spec.addresses", "no prefixes", rule="C.4 >=1 address"),
    Case("pool-bad-cidr", [pool("bad", "198.18.0.0/33")], "parser", "spec.addresses[0]", "invalid CIDR",
         rule="C.4 CIDR parse"),
    Case("pool-bare-ip", [pool("bad", "198.18.0.1")], "parser", "spec.addresses[0]", "invalid CIDR",
         rule="C.4 CIDR parse"),
    Case("pool-range-reversed", [pool("bad", "198.18.0.9-198.18.0.1")], "parser", "spec.addresses[0]",
         "after the end IP", rule="C.4 range start<=end"),
    Case("pool-range-bad-ip", [pool("bad", "198.18.0.1-198.18.0.x")], "parser", "spec.addresses[0]",
         "invalid end IP", rule="C.4 range parse"),
    Case("pool-range-mixed-family", [pool("bad", "198.18.0.1-2001:db8::1")], "parser", "spec.addresses[0]",
         "must both be IPv4 or both IPv6", rule="C.4 range parse"),
    Case("pool-service-allocation-ok", [pool("sa", "198.18.5.0/28", serviceAllocation={
        "priority": 10, "namespaces": ["a", "b"], "namespaceSelectors": [SEL_A],
        "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Exists"}]}]})],
         rule="C.4 serviceAllocation"),
    Case("pool-dup-namespaces", [pool("sa", "198.18.5.0/28", serviceAllocation={"namespaces": ["a", "a"]})],
         "parser", "spec.serviceAllocation.namespaces[1]", "duplicate namespace", rule="C.4 dup namespaces"),
    Case("pool-dup-namespace-selectors", [pool("sa", "198.18.5.0/28", serviceAllocation={
        "namespaceSelectors": [SEL_A, SEL_A]})], "parser", "spec.serviceAllocation.namespaceSelectors[1]",
         "duplicate definition of namespaceSelectors", rule="C.4 dup selectors"),
    Case("pool-dup-service-selectors", [pool("sa", "198.18.5.0/28", serviceAllocation={
        "serviceSelectors": [SEL_B, SEL_B]})], "parser", "spec.serviceAllocation.serviceSelectors[1]",
         "duplicate definition of serviceSelectors", rule="C.4 dup selectors"),
    Case("pool-selector-bad-operator", [pool("sa", "198.18.5.0/28", serviceAllocation={"serviceSelectors": [
        {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}]})],
         "parser", "matchExpressions[0].operator", "not a valid label selector operator", rule="C.4 selector parse"),
    Case("pool-selector-in-without-values", [pool("sa", "198.18.5.0/28", serviceAllocation={"serviceSelectors": [
        {"matchExpressions": [{"key": "app", "operator": "In"}]}]})],
         "parser", "matchExpressions[0].values", "at least one value", rule="C.4 selector parse"),
    Case("pool-selector-exists-with-values", [pool("sa", "198.18.5.0/28", serviceAllocation={"serviceSelectors": [
        {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}]})],
         "parser", "matchExpressions[0].values", "must be empty", rule="C.4 selector parse"),
    Case("pool-selector-bad-label-value", [pool("sa", "198.18.5.0/28", serviceAllocation={"serviceSelectors": [
        {"matchLabels": {"app": "has space"}}]})], "parser", "matchLabels.app", "invalid label value",
         rule="C.4 selector parse"),
    Case("pool-selector-dup-values", [pool("sa", "198.18.5.0/28", serviceAllocation={"serviceSelectors": [
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "x"]}]}]})],
         "parser", "matchExpressions[0].values", "duplicate match expression value", rule="C.4 selector dup"),
    Case("pool-selector-dup-expressions", [pool("sa", "198.18.5.0/28", serviceAllocation={"serviceSelectors": [
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "y"]},
                              {"key": "app", "operator": "In", "values": ["y", "x"]}]}]})],
         "parser", "matchExpressions[1]", "duplicate match expression", rule="C.4 selector dup"),
    # ---- C.5 communities ----------------------------------------------------------------------
    Case("community-ok", [community("c1", ("no-export", "65535:65281"), ("big", "large:64500:1:2"))],
         rule="C.5 community values"),
    Case("community-bad-value", [community("c1", ("bad", "65536:1"))], "parser", "spec.communities[0].value",
         "invalid community value", rule="C.5 community values"),
    Case("community-bad-format", [community("c1", ("bad", "1:2:3"))], "parser", "spec.communities[0].value",
         "invalid community format", rule="C.5 community values"),
    Case("community-bad-large", [community("c1", ("bad", "large:1:2:4294967296"))], "parser",
         "spec.communities[0].value", "invalid community value", rule="C.5 community values"),
    Case("community-dup-alias", [community("c1", ("x", "1:1")), community("c2", ("x", "1:2"))], "parser",
         "spec.communities[0].name", "duplicate definition of community alias", rule="C.5 unique alias"),
    # ---- C.6 L2 advertisements ----------------------------------------------------------------
    Case("l2-ok", [pool("p", "198.18.0.0/28", labels={"tier": "web"}),
                   l2("l2", ipAddressPools=["p"], ipAddressPoolSelectors=[{"matchLabels": {"tier": "web"}}],
                      nodeSelectors=[SEL_A], interfaces=["eth0"], serviceSelectors=[SEL_B],
                      preferredNodeSelectors=[{"weight": 50, "preference": SEL_A}])], rule="C.6 L2Advertisement"),
    Case("l2-empty-ok", [pool("p", "198.18.0.0/28"), l2("all")], rule="C.6 empty = all pools"),
    Case("l2-dup-pools", [l2("l2", ipAddressPools=["p", "p"])], "parser", "spec.ipAddressPools[1]",
         "duplicate ipAddressPools", rule="C.6 dup"),
    Case("l2-dup-pool-selectors", [l2("l2", ipAddressPoolSelectors=[SEL_A, SEL_A])], "parser",
         "spec.ipAddressPoolSelectors[1]", "duplicate definition", rule="C.6 dup"),
    Case("l2-dup-node-selectors", [l2("l2", nodeSelectors=[SEL_B, SEL_B])], "parser", "spec.nodeSelectors[1]",
         "duplicate definition", rule="C.6 dup"),
    Case("l2-dup-service-selectors", [l2("l2", serviceSelectors=[SEL_B, SEL_B])], "parser",
         "spec.serviceSelectors[1]", "duplicate definition", rule="C.6 dup"),
    Case("l2-bad-node-selector", [l2("l2", nodeSelectors=[{"matchLabels": {"-bad-key": "x"}}])], "parser",
         "spec.nodeSelectors[0].matchLabels", "invalid label key", rule="C.6 selector parse"),
    Case("l2-preferred-weight-ok", [l2("l2", preferredNodeSelectors=[{"weight": 100, "preference": SEL_A},
                                                                      {"weight": 1, "preference": SEL_B}])],
         rule="C.6/CRD preferred weight"),
    Case("l2-preferred-weight", [l2("l2", preferredNodeSelectors=[{"weight": 0, "preference": SEL_A}])],
         "schema", "spec.preferredNodeSelectors[0].weight", "between 1 and 100", rule="C.6/CRD preferred weight"),
    Case("l2-preferred-bad-selector", [l2("l2", preferredNodeSelectors=[{"weight": 10, "preference": {
        "matchExpressions": [{"key": "zone", "operator": "NotIn"}]}}])], "parser",
         "preference.matchExpressions[0].values", "at least one value", rule="C.6 preferred selector parse"),
    # ---- C.7 BGP advertisements ---------------------------------------------------------------
    Case("bgpadv-ok", [pool("p", "198.18.0.0/24"), community("c", ("no-export", "65535:65281")),
                       peer("r1"),
                       bgpadv("adv", ipAddressPools=["p"], aggregationLength=24, localPref=100,
                              communities=["no-export", "64500:1"], peers=["r1"], nodeSelectors=[SEL_A])],
         rule="C.7 BGPAdvertisement"),
    Case("bgpadv-dup-pools", [bgpadv("a", ipAddressPools=["p", "p"])], "parser", "spec.ipAddressPools[1]",
         "duplicate", rule="C.7 dup"),
    Case("bgpadv-dup-communities", [bgpadv("a", communities=["1:1", "1:1"])], "parser", "spec.communities[1]",
         "duplicate community", rule="C.7 dup"),
    Case("bgpadv-dup-peers", [bgpadv("a", peers=["r1", "r1"])], "parser", "spec.peers[1]", "duplicate peer",
         rule="C.7 dup"),
    Case("bgpadv-dup-node-selectors", [bgpadv("a", nodeSelectors=[SEL_A, SEL_A])], "parser",
         "spec.nodeSelectors[1]", "duplicate definition", rule="C.7 dup"),
    Case("bgpadv-dup-pool-selectors", [bgpadv("a", ipAddressPoolSelectors=[SEL_A, SEL_A])], "parser",
         "spec.ipAddressPoolSelectors[1]", "duplicate definition", rule="C.7 dup"),
    Case("bgpadv-identical", [pool("p", "198.18.0.0/24"), bgpadv("a", ipAddressPools=["p"], localPref=10),
                              bgpadv("b", ipAddressPools=["p"], localPref=10)], "parser", "spec",
         "identical to BGPAdvertisement/a", rule="C.7 identical ads"),
    Case("bgpadv-service-selectors-ok", [bgpadv("a", serviceSelectors=[SEL_A])], rule="C.7 serviceSelectors"),
    Case("bgpadv-service-selectors-and-aggregation", [bgpadv("a", serviceSelectors=[SEL_A], aggregationLength=24)],
         "parser", "spec.aggregationLength", "mutually exclusive", rule="C.7 serviceSelectors vs aggregation"),
    Case("bgpadv-service-selectors-and-aggregation-v6", [bgpadv("a", serviceSelectors=[SEL_A],
                                                                aggregationLengthV6=64)],
         "parser", "spec.aggregationLengthV6", "mutually exclusive", rule="C.7 serviceSelectors vs aggregation"),
    Case("bgpadv-aggregation-too-long", [bgpadv("a", aggregationLength=33)], "parser", "spec.aggregationLength",
         "between 1 and 32", rule="C.7 aggregationLength <= 32"),
    Case("bgpadv-aggregation-one-ok", [bgpadv("a", aggregationLength=1, aggregationLengthV6=0)],
         rule="C.7/CRD aggregationLength >= 1"),
    Case("bgpadv-aggregation-zero", [bgpadv("a", aggregationLength=0)], "schema", "spec.aggregationLength",
         "between 1 and 32", rule="C.7/CRD aggregationLength >= 1"),
    Case("bgpadv-aggregation-v6-too-long", [bgpadv("a", aggregationLengthV6=129)], "parser",
         "spec.aggregationLengthV6", "between 0 and 128", rule="C.7 aggregationLengthV6 <= 128"),
    Case("bgpadv-aggregation-wider-than-pool", [pool("p", "198.18.0.0/24"), bgpadv("a", ipAddressPools=["p"],
                                                                               aggregationLength=16)],
         "parser", "spec.aggregationLength", "more specific than the aggregation length",
         rule="C.7 aggregation not wider than pool prefix"),
    Case("bgpadv-aggregation-v6-wider-than-pool", [pool("p", "2001:db8::/120"), bgpadv("a", aggregationLengthV6=64)],
         "parser", "spec.aggregationLengthV6", "more specific than the aggregation length",
         rule="C.7 aggregation not wider than pool prefix"),
    Case("bgpadv-bad-community", [bgpadv("a", communities=["70000:1"])], "parser", "spec.communities[0]",
         "invalid community value", rule="C.7 community value"),
    Case("bgpadv-unknown-alias", [bgpadv("a", communities=["no-such-alias"])], "transient", "spec.communities[0]",
         "no Community resource defines", rule="C.7 community alias (transient)"),
    Case("bgpadv-local-pref-compatible-ok", [
        pool("p", "198.18.0.0/24"), peer("r1", "198.19.0.1"), peer("r2", "198.19.0.2", peer_asn=64999),
        bgpadv("a", ipAddressPools=["p"], localPref=100, peers=["r1"]),
        bgpadv("b", ipAddressPools=["p"], localPref=200, peers=["r2"]),
        bgpadv("c", ipAddressPools=["p"], localPref=300, aggregationLength=24)],
         rule="C.7 localPref compatible (disjoint peers / different aggregation)"),
    Case("bgpadv-local-pref-conflict", [pool("p", "198.18.0.0/24"), bgpadv("a", ipAddressPools=["p"], localPref=100),
                                        bgpadv("b", ipAddressPools=["p"], localPref=200)],
         "parser", "spec.localPref", "local preference 100 was already set", rule="C.7 localPref compatibility"),
    # ---- the operator's MetalLB resource ------------------------------------------------------
    Case("metallb-cr-ok", [obj("MetalLB", "metallb", {"logLevel": "debug", "nodeSelector": {
        "node-role.kubernetes.io/worker": ""}, "speakerTolerations": [
        {"key": "Example", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]})],
         rule="MetalLB CR"),
    Case("metallb-cr-toleration-seconds", [obj("MetalLB", "metallb", {"speakerTolerations": [
        {"key": "Example", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]})],
         "parser", "speakerTolerations[0].effect", "NoExecute", rule="MetalLB CR tolerations"),
    Case("metallb-cr-log-level", [obj("MetalLB", "metallb", {"logLevel": "chatty"})], "schema", "spec.logLevel",
         "must be one of", rule="MetalLB CR logLevel enum"),
]


def secrets_of(resources: list) -> dict:
    """"namespace/name" -> Secret, from the v1 Secrets among a case's resources."""
    return {f"{r['metadata'].get('namespace', NS)}/{r['metadata']['name']}": r
            for r in resources if isinstance(r, dict) and r.get("kind") == "Secret"}
