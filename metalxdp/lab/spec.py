"""The lab's addresses, AS numbers and metallb.io resources, as pure data.

Single source for both labs: the network-namespace lab (``metalxdp lab up``) and the Vagrant
VMs (``vagrant/``) render their FRR configuration and their metallb.io manifests from here, and
a test asserts the two don't drift. Defaults follow seed 002 (router AS 64512, nodes AS 64513,
eBGP, three nodes, one router, ECMP). Every address is from the documentation ranges.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from ..rig.frr import BFDTimers, Neighbor, RouterSpec

NAMESPACE = "metallb-system"


@dataclass(frozen=True)
class LabSpec:
    nodes: int = 3
    router_asn: int = 64512
    node_asn: int = 64513          # == router_asn gives the iBGP variant
    lan4: str = "192.0.2.0/24"
    lan6: str = "2001:db8:0:1::/64"
    l2_pool: tuple[str, ...] = ("192.0.2.200-192.0.2.219", "2001:db8:0:1::200/124")
    bgp_pool: tuple[str, ...] = ("203.0.113.0/26", "2001:db8:0:2::/120")
    bgp_routes: tuple[str, ...] = ("203.0.113.0/24", "2001:db8:0:2::/64")  # client -> router
    # enableGracefulRestart on the BGPPeers and `bgp graceful-restart` on the router: a node's
    # routes stay while its agent is replaced (the cluster lab's rolling update)
    graceful_restart: bool = False
    # BFD on every BGP session when set: the router gets a ``bfd profile`` of this name with
    # these timers (receive ms, transmit ms, detect multiplier) and ``neighbor X bfd profile``
    # for every node; the BGPPeers get ``bfdProfile`` and a BFDProfile of the same name/timers
    bfd_profile: str = ""
    bfd_timers: tuple[int, int, int] = (300, 300, 3)
    # the controller serves its validating webhook (the lab waits for it before applying the
    # resources, so they are validated); False starts it with --webhook-mode disabled
    webhook: bool = True
    # the controller's monitoring port (/metrics, /healthz, /readyz) on 127.0.0.1; 0: none (the
    # labs' default: several labs side by side would fight over a fixed one)
    controller_metrics_port: int = 0
    # what runs as the load balancer: "metalxdp" (its controller and agents) or "metallb" (MetalLB's
    # controller and speakers of scripts/metallb/VERSION, native BGP: metalxdp.lab.metallb_peer)
    lb: str = "metalxdp"

    def _addr(self, lan: str, host: int) -> str:
        net = ipaddress.ip_network(lan)
        # IPv6 host parts read like the IPv4 ones: .11 <-> ::11, .100 <-> ::100
        offset = int(str(host), 16) if net.version == 6 else host
        return f"{net.network_address + offset}/{net.prefixlen}"

    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    def host_addresses(self) -> dict[str, tuple[list[str], list[str]]]:
        """host -> ([ipv4/len], [ipv6/len]): router .1, nodes .11+, client .100."""
        hosts = {"router": 1, "client": 100}
        hosts.update({n: 10 + i for i, n in enumerate(self.node_names(), 1)})
        return {h: ([self._addr(self.lan4, i)], [self._addr(self.lan6, i)]) for h, i in hosts.items()}

    def router_ip(self, family: int = 4) -> str:
        return self.host_addresses()["router"][0 if family == 4 else 1][0].split("/")[0]

    def router_spec(self, bfd_profile: Optional[str] = None) -> RouterSpec:
        bfd_profile = self.bfd_profile if bfd_profile is None else bfd_profile
        addrs = self.host_addresses()
        neigh = []
        for n in self.node_names():
            v4, v6 = addrs[n]
            neigh += [Neighbor(v4[0].split("/")[0], self.node_asn, bfd_profile=bfd_profile),
                      Neighbor(v6[0].split("/")[0], self.node_asn, bfd_profile=bfd_profile)]
        rx, tx, mult = self.bfd_timers
        profiles = (BFDTimers(bfd_profile, rx, tx, mult),) if bfd_profile else ()
        return RouterSpec(asn=self.router_asn, router_id=self.router_ip(4), neighbors=tuple(neigh),
                          bfd_profiles=profiles, graceful_restart=self.graceful_restart)

    def metallb_resources(self) -> list[dict]:
        """The pools, advertisements and peers the demo applies (same as the Vagrant lab); with
        ``lb="metallb"`` as MetalLB's native BGP mode accepts them (``native_mode``)."""
        objs = self._resources()
        return native_mode(objs) if self.lb == "metallb" else objs

    def _resources(self) -> list[dict]:
        meta = lambda name: {"name": name, "namespace": NAMESPACE}  # noqa: E731
        bfd = {"bfdProfile": self.bfd_profile} if self.bfd_profile else {}
        if self.graceful_restart:
            bfd["enableGracefulRestart"] = True
        rx, tx, mult = self.bfd_timers
        profiles = [{"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile", "metadata": meta(self.bfd_profile),
                     "spec": {"receiveInterval": rx, "transmitInterval": tx, "detectMultiplier": mult}}
                    ] if self.bfd_profile else []
        return [*profiles,
            {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta("lab-l2"),
             "spec": {"addresses": list(self.l2_pool)}},
            {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": meta("lab-l2"),
             "spec": {"ipAddressPools": ["lab-l2"]}},
            {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta("lab-bgp"),
             "spec": {"addresses": list(self.bgp_pool), "autoAssign": False}},
            {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": meta("lab-bgp"),
             "spec": {"ipAddressPools": ["lab-bgp"]}},
            {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": meta("router-v4"),
             "spec": {"myASN": self.node_asn, "peerASN": self.router_asn,
                      "peerAddress": self.router_ip(4), "holdTime": "9s", "keepaliveTime": "3s", **bfd}},
            {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": meta("router-v6"),
             "spec": {"myASN": self.node_asn, "peerASN": self.router_asn,
                      "peerAddress": self.router_ip(6), "holdTime": "9s", "keepaliveTime": "3s", **bfd}},
        ]


def native_mode(objs: list[dict]) -> list[dict]:
    """``objs`` as MetalLB's native BGP mode accepts them: its webhook refuses IPv6 addresses in
    a BGP-advertised pool and ``keepaliveTime`` on a peer, so BGP pools keep their IPv4 ranges,
    only IPv4 peers stay, with the hold time alone. L2 objects are unchanged."""
    import copy
    bgp_pools = {p for o in objs if o["kind"] == "BGPAdvertisement" for p in o["spec"].get("ipAddressPools", [])}
    out = []
    for o in objs:
        o = copy.deepcopy(o)
        if o["kind"] == "IPAddressPool" and o["metadata"]["name"] in bgp_pools:
            o["spec"]["addresses"] = [c for c in o["spec"]["addresses"] if ":" not in c]
        if o["kind"] == "BGPPeer":
            if ":" in o["spec"].get("peerAddress", ""):
                continue
            o["spec"].pop("keepaliveTime", None)
        out.append(o)
    return out
