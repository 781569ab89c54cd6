"""Text ExaBGP 5 reads: the exabgp.conf of one node, the environment it runs with, and the
runtime API commands that announce and withdraw routes. Pure functions (golden-file tested).

One ``neighbor`` block per active BGPPeer, keyed by the peer address. Mapping from BGPPeer:

| BGPPeer              | exabgp.conf                                                        |
|----------------------|--------------------------------------------------------------------|
| peerAddress          | ``neighbor <addr>``                                                |
| sourceAddress        | ``local-address`` (else the node's address of the peer's family)   |
| myASN / peerASN      | ``local-as`` / ``peer-as``                                         |
| localASN             | ``local-as`` (the AS the router sees; myASN never appears)         |
| dynamicASN           | internal: ``peer-as`` = the AS we present; external: ``peer-as     |
|                      | auto``, and the driver tears down a session whose OPEN carries our |
|                      | own AS (FRR's ``remote-as external`` refuses it the same way)      |
| routerID             | ``router-id`` (else the node's IPv4, else crc32(node name))        |
| holdTime             | ``hold-time``                                                      |
| keepaliveTime        | timers.json, applied by ``exabgp_timers.py`` (ExaBGP alone: hold/3)|
| connectTime          | timers.json: a fixed wait between attempts (ExaBGP alone: back-off)|
| peerPort             | ``connect <port>``                                                 |
| password(Secret)     | ``md5-password`` base64-encoded (no quoting problems) + md5-base64 |
| ebgpMultiHop         | ``outgoing-ttl 255``; single-hop eBGP gets ``outgoing-ttl 1``      |
| enableGracefulRestart| ``capability { graceful-restart 120; }``, ``manual-eor true``: the  |
|                      | driver sends End-of-RIB after its routes on every new session      |
| interface            | ``neighbor <router's link-local>``, ``local-address <ours>``,      |
|                      | ``source-interface <if>`` (ExaBGP takes no ``%scope``: binding the |
|                      | socket to the device is what lets a link-local connect), families  |
|                      | ipv4 and ipv6 with ``nexthop { ipv4 unicast ipv6; }`` (RFC 8950)   |

The family is the peer address's own (ipv4 unicast or ipv6 unicast): metalxdp announces IPv4
prefixes over IPv4 sessions and IPv6 over IPv6. An unnumbered (``interface``) peer carries both,
every route with our link-local as its next hop (``next-hop self`` would give an IPv4 route the
router ID, which FRR does not install). Interface peers reach this module already resolved by
``agent.bgp.unnumbered.resolve_peers``.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import shlex
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from metalxdp.config.types import BGPPeer, IPAddress

from .advertise import Route

API_PROCESS = "ctl"
# seconds the router keeps our routes while we restart (FRR's default restart-time)
GRACEFUL_RESTART_TIME = 120


@dataclass(frozen=True)
class NodeAddresses:
    """The node's own addresses: the default local end of each session, per family."""
    name: str
    ipv4: Optional[ipaddress.IPv4Address] = None
    ipv6: Optional[ipaddress.IPv6Address] = None

    def for_family(self, version: int) -> Optional[IPAddress]:
        return self.ipv4 if version == 4 else self.ipv6


class RenderError(ValueError):
    """A peer cannot be configured on this node (e.g. no local address of its family)."""


def local_address(peer: BGPPeer, node: NodeAddresses) -> IPAddress:
    if peer.source_address is not None:
        return peer.source_address
    if peer.peer_address is None:
        raise RenderError(f"BGPPeer/{peer.name}: interface {peer.interface}: the link-local addresses "
                          f"are not known yet")
    addr = node.for_family(peer.peer_address.version)
    if addr is None:
        raise RenderError(f"BGPPeer/{peer.name}: node {node.name} has no IPv{peer.peer_address.version} "
                          f"address to reach {peer.peer_address}; set spec.sourceAddress")
    return addr


def router_id(peer: BGPPeer, node: NodeAddresses) -> ipaddress.IPv4Address:
    """The peer's routerID, else the node's IPv4 address, else a stable value from the node
    name (MetalLB native does the same: a v6-only node still needs a 32-bit router id)."""
    if peer.router_id is not None:
        return peer.router_id
    if node.ipv4 is not None:
        return node.ipv4
    return ipaddress.IPv4Address(zlib.crc32(node.name.encode()) or 1)


def render_exabgp_conf(peers: Sequence[BGPPeer], node: NodeAddresses,
                       api_argv: Sequence[str]) -> str:
    """exabgp.conf: the API process ``ctl`` (``api_argv`` is its command line) and one
    neighbor block per peer, in peer-name order (stable output)."""
    run = " ".join(shlex.quote(a) for a in api_argv)
    out = [f"process {API_PROCESS} {{", f"\trun {run};", "\tencoder json;", "}", ""]
    for peer in sorted(peers, key=lambda p: p.name):
        out += _neighbor(peer, node)
    return "\n".join(out)


def _neighbor(peer: BGPPeer, node: NodeAddresses) -> list[str]:
    if peer.peer_address is None:
        raise RenderError(f"BGPPeer/{peer.name}: interface {peer.interface}: the router's link-local "
                          f"address is not known yet")
    families = sorted(peer.families())
    hold = int(round(peer.hold_time))
    out = [f"neighbor {peer.peer_address} {{",
           f"\tdescription \"{peer.name}\";",
           f"\trouter-id {router_id(peer, node)};",
           f"\tlocal-address {local_address(peer, node)};",
           f"\tlocal-as {peer.local_as};",
           f"\tpeer-as {peer_as(peer)};",
           f"\thold-time {hold};",
           # we open the session ourselves (MetalLB's speakers do too); the listener bound
           # through exabgp_tcp_bind still accepts the router's own attempts
           "\tpassive false;",
           # one UPDATE per announce: the router sees each change as soon as we send it
           "\tgroup-updates false;"]
    if peer.interface:
        out.append(f"\tsource-interface {peer.interface};")
    if peer.peer_port != 179:
        out.append(f"\tconnect {peer.peer_port};")
    if peer.password:
        # base64 so that any character of a password survives ExaBGP's tokeniser
        b64 = base64.b64encode(peer.password.encode()).decode()
        out += ["\tmd5-base64 true;", f"\tmd5-password {b64};"]
    if not peer.ibgp:
        # FRR's default: single-hop eBGP sends TTL 1; ebgpMultiHop lifts it to 255
        out.append(f"\toutgoing-ttl {255 if peer.ebgp_multihop else 1};")
    if peer.enable_graceful_restart:
        # End-of-RIB is sent by the driver once it has announced (see BGPSpeaker._session_up)
        out += ["\tmanual-eor true;",
                "\tcapability {", f"\t\tgraceful-restart {GRACEFUL_RESTART_TIME};", "\t}"]
    out += ["\tfamily {", *(f"\t\tipv{v} unicast;" for v in families), "\t}"]
    if peer.interface:
        # RFC 8950: IPv4 routes with an IPv6 next hop (ExaBGP drops this block unless both
        # families are listed, which they are)
        out += ["\tnexthop {", "\t\tipv4 unicast ipv6;", "\t}"]
    out += [
            "\tapi {", f"\t\tprocesses [ {API_PROCESS} ];", "\t\tneighbor-changes;",
            *(["\t\treceive {", "\t\t\tparsed;", "\t\t\topen;", "\t\t}"] if peer.dynamic_asn == "external" else []),
            "\t}",
            "}", ""]
    return out


def render_timers(peers: Sequence[BGPPeer]) -> str:
    """timers.json for ``exabgp_timers.py``: peer address -> keepalive (s) and connect (s)."""
    out = {}
    for p in sorted(peers, key=lambda p: p.name):
        t = {"keepalive": int(round(p.keepalive_time))} if p.hold_time else {}
        if p.connect_time is not None:
            t["connect"] = int(p.connect_time)
        if t:
            out[str(p.peer_address)] = t
    return json.dumps(out, indent=1, sort_keys=True) + "\n"


def peer_as(peer: BGPPeer) -> str:
    """ExaBGP's ``peer-as``: peerASN, or for dynamicASN internal the AS we present, external
    ``auto`` (any AS; the driver refuses our own, see ``BGPSpeaker``)."""
    if peer.dynamic_asn == "internal":
        return str(peer.local_as)
    if peer.dynamic_asn == "external":
        return "auto"
    return str(peer.peer_asn)


def exabgp_env(bind: Iterable[IPAddress], log_level: str = "INFO") -> dict[str, str]:
    """Environment for the ExaBGP process (ExaBGP reads its settings from ``exabgp_*`` vars)."""
    return {
        # otherwise ExaBGP drops to 'nobody' and cannot write its log or open MD5 sockets
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_tcp_bind": " ".join(str(a) for a in sorted(set(bind), key=lambda a: (a.version, a))),
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": log_level,
        # the driver's helper is the only API client: no CLI pipes to create or clean up
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_encoder": "json",
        "exabgp_api_respawn": "true",
        # the reactor's idle poll: 50 ms instead of 10 (speed / 100 s). The API socket and the
        # sessions' sockets wake it at once either way; timers (keepalive, hold, connect retry)
        # are seconds. Idle, one peer: 0.8 % of a core instead of 3.3 % per node (stop 40), on
        # nodes where every agent's CPU is taken from the API server and the other agents
        "exabgp_reactor_speed": "5.0",
    }


def next_hop(peer: BGPPeer, route: Route, node: Optional[NodeAddresses] = None) -> str:
    """``self``, except: an unnumbered peer gets our link-local for every route, and a
    dualStackAddressFamily peer gets the node's own address for a route of the other family
    (``self`` would be the session's address, of the wrong family)."""
    if peer.interface and peer.source_address:
        return str(peer.source_address)
    if peer.peer_address is not None and route.prefix.version != peer.peer_address.version:
        addr = node.for_family(route.prefix.version) if node is not None else None
        if addr is None:
            raise RenderError(f"BGPPeer/{peer.name}: node has no IPv{route.prefix.version} address to use "
                              f"as the next hop of {route.prefix} over the IPv{peer.peer_address.version} "
                              f"session (dualStackAddressFamily)")
        return str(addr)
    return "self"


def announce_command(peer: BGPPeer, route: Route, node: Optional[NodeAddresses] = None) -> str:
    """``neighbor <addr> announce route <prefix> next-hop self [...]`` for one route."""
    # origin incomplete ("?"): what MetalLB's speakers send (seed 002's router table shows it)
    nh = next_hop(peer, route, node)
    cmd = f"neighbor {peer.peer_address} announce route {route.prefix} next-hop {nh} origin incomplete"
    legacy = [c.value for c in route.communities if not c.large]
    large = [c.value.removeprefix("large:") for c in route.communities if c.large]
    if legacy:
        cmd += f" community [ {' '.join(legacy)} ]"
    if large:
        cmd += f" large-community [ {' '.join(large)} ]"
    if route.local_pref is not None:
        cmd += f" local-preference {route.local_pref}"
    return cmd


def withdraw_command(peer: BGPPeer, route: Route) -> str:
    return f"neighbor {peer.peer_address} withdraw route {route.prefix} next-hop self"
