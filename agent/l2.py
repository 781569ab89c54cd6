"""Layer 2 announcement on this node: puts the VIPs this node won into the XDP dataplane's map
(ARP/NDP then answered in XDP), sends MetalLB's gratuitous bursts, withdraws the rest, and hands
a VIP off when it moved to another live node.

``L2Announcer.apply(want, moved, ifaces)`` is one pass, called from the agent's reconcile with
the interface list read once for the pass (``local_interfaces()``):

* want: (ip, ifname) -> (service key, ETP=Local misdirect) this node announces now;
* moved: VIP -> the other live node that now announces it (a planned move: hand off);
* ifaces: name -> ifindex of the usable interfaces.

State kept between passes: what is announced (``announced``) and what is being handed off.

Handoff: clients whose ARP cache ignored the new owner's gratuitous ARP keep sending to this
node's MAC. While the VIP's traffic here goes on (``election.HandoffTracker`` on the per-VIP
packet counter) the entry stays with VIP_F_HANDOFF (only unicast probes answered), then goes.
"""
from __future__ import annotations

import os
import time

from metalxdp.log import get_logger

from . import election

log = get_logger("agent")


def local_interfaces() -> dict[str, int]:
    """name -> ifindex of the interfaces that are up and can do ARP (MetalLB's responder rules:
    UP, BROADCAST, not NOARP, not enslaved)."""
    out = {}
    for name in os.listdir("/sys/class/net"):
        base = f"/sys/class/net/{name}"
        try:
            flags = int(open(f"{base}/flags").read(), 16)
            if not flags & 0x1 or not flags & 0x2 or flags & 0x80 or os.path.exists(f"{base}/master"):
                continue   # IFF_UP, IFF_BROADCAST, IFF_NOARP, bond/bridge port
            out[name] = int(open(f"{base}/ifindex").read())
        except (OSError, ValueError):
            continue
    return out


class L2Announcer:
    """Drives the dataplane's VIP map for this node (see the module docstring). ``dp``: the
    ``agent.dataplane.Dataplane``; ``garp``: the gratuitous ARP/NA sender."""

    def __init__(self, node: str, dp, garp, handoff_quiet_s: float = 2.0, handoff_max_s: float = 30.0):
        self.node, self.dp, self.garp = node, dp, garp
        self.handoff_enabled = handoff_max_s > 0
        self.handoff = election.HandoffTracker(quiet_s=handoff_quiet_s, max_s=handoff_max_s)
        self.announced: dict[tuple[str, str], str] = {}    # (ip, ifname) -> service key
        self.standing_in: set[tuple[str, str]] = set()      # announced, as a stand-in (no GARP)
        self._handoff: dict[tuple[str, str], str] = {}     # (ip, ifname) -> service key

    def apply(self, want: dict, moved: dict[str, str], ifaces: dict[str, int],
              stand_in: frozenset = frozenset()) -> None:
        """``stand_in``: the entries of ``want`` answered for a crash-held node (its agent died,
        its kernel forwards): ARP/NDP requests are answered, no gratuitous burst is sent, so the
        clients that already use the held node stay there; once the hold ends in a real
        takeover the entry becomes a normal announcement, with its gratuitous burst."""
        self._withdraw_stale(want, ifaces)
        now = time.monotonic()
        for (ip, ifname), svc_key in list(self.announced.items()):
            if (ip, ifname) not in want:
                self.garp.cancel(ip, ifname)
                del self.announced[(ip, ifname)]
                self.standing_in.discard((ip, ifname))
                if ip in moved and self.handoff_enabled and ifname in ifaces:
                    # planned move to another live node: stale clients (caches that ignored the
                    # new owner's GARP) still reach us; keep answering their unicast probes
                    # while the VIP's traffic goes on (VIP_F_HANDOFF), then withdraw
                    self.dp.announce(ip, ifname, handoff=True)
                    self.handoff.start(f"{ip}%{ifname}", now, self._rx_packets(ip, ifname))
                    self._handoff[(ip, ifname)] = svc_key
                    log.info("VIP moved to another node: handing off", event="handoffStarted",
                             service=svc_key, ip=ip, interface=ifname, new_node=moved[ip])
                    continue
                self._withdraw(ip, ifname, svc_key)
        for (ip, ifname), svc_key in list(self._handoff.items()):
            tkey = f"{ip}%{ifname}"
            if (ip, ifname) in want:               # it came back to us
                self.handoff.cancel(tkey)
                del self._handoff[(ip, ifname)]
            elif ip not in moved or not self.handoff.observe(tkey, now, self._rx_packets(ip, ifname)):
                self.handoff.cancel(tkey)
                del self._handoff[(ip, ifname)]
                log.info("handoff done: traffic stopped or time is up" if ip in moved
                         else "handoff cancelled: the VIP is no longer announced elsewhere",
                         event="handoffDone", service=svc_key, ip=ip, interface=ifname)
                self._withdraw(ip, ifname, svc_key)
        attached = {n for n, i in ifaces.items() if i in self.dp.attached}
        for (ip, ifname), (svc_key, misdirect) in want.items():
            new = (ip, ifname) not in self.announced
            self.dp.announce(ip, ifname, etp_local_misdirect=misdirect)
            if ifname not in attached:
                self.dp.attach(ifname)
                attached.add(ifname)
            if (ip, ifname) in stand_in:
                if new:
                    self.announced[(ip, ifname)] = svc_key
                    self.standing_in.add((ip, ifname))
                    log.info("answering ARP/NDP for a node whose agent crashed (crash hold; no "
                             "gratuitous ARP)", event="serviceStandIn", protocol="layer2", service=svc_key,
                             ip=ip, interface=ifname, node=self.node)
                continue
            if new or (ip, ifname) in self.standing_in:
                self.announced[(ip, ifname)] = svc_key
                self.standing_in.discard((ip, ifname))
                self.garp.start(ip, ifname)
                log.info("service announced", event="serviceAnnounced", protocol="layer2", service=svc_key,
                         ip=ip, interface=ifname, node=self.node)

    def _withdraw_stale(self, want: dict, ifaces: dict[str, int]) -> None:
        # The VIP map is pinned and outlives the agent: after a restart it still holds what the
        # previous process announced, which this process's ``announced`` does not know about. A
        # VIP that moved away or was deleted meanwhile would otherwise be answered for ever (two
        # nodes answering ARP for one IP). So the map itself is compared with what we want.
        names_by_index = {i: n for n, i in ifaces.items()}
        for ip, ifindex, _flags in self.dp.announced():
            ifname = names_by_index.get(ifindex)
            if ifname is not None and (ip, ifname) in want:
                continue
            if ifname is not None and ((ip, ifname) in self.announced or (ip, ifname) in self._handoff):
                continue          # withdrawn (or handed off) in apply, with its log line
            self.dp.withdraw(ip, ifindex)
            if ifname:
                self.garp.cancel(ip, ifname)
            log.info("stale VIP withdrawn (announced before this agent started, or on an interface "
                     "that is gone)", event="serviceWithdrawn", protocol="layer2", ip=ip,
                     interface=ifname or str(ifindex), reason="stale")

    def _withdraw(self, ip: str, ifname: str, svc_key: str) -> None:
        from .dataplane import DataplaneError
        try:
            self.dp.withdraw(ip, ifname)
        except DataplaneError:
            pass          # the interface is gone: its entry went with it
        log.info("service withdrawn", event="serviceWithdrawn", protocol="layer2", service=svc_key,
                 ip=ip, interface=ifname)

    def _rx_packets(self, ip: str, ifname: str) -> int:
        try:
            c = self.dp.vip_counters(ip, ifname)
        except Exception:  # noqa: BLE001 - interface gone
            return 0
        return c.get("rx_packets", 0)   # data from stale clients, not ARP (broadcasts reach everyone)
