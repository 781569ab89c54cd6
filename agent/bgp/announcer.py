"""BGP on this node: the pure plan (``advertise``) sent through the ExaBGP speaker, and the BFD
sessions wired to it (a session going Down takes its peer's BGP session down, Up brings it back:
``agent.bfd.runner.up_down_callback``).

    bgp = BGPAnnouncer(node_name, workdir, registry)
    plan = bgp.apply(config, node_view, services, node_addresses)   # once per agent reconcile
    bgp.close()

The speaker and the BFD manager start on first need (a node with no peer runs neither).
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Optional, Sequence

from metalxdp.config.types import Config
from metalxdp.log import get_logger

from ..bfd.runner import up_down_callback
from ..nodeview import NodeView
from . import advertise as bgpadv

log = get_logger("agent")


class BGPAnnouncer:
    def __init__(self, node: str, workdir: Path, registry=None, wake=None):
        """``wake``: asks the agent for a reconcile (an unnumbered router was found)."""
        self.node, self.workdir, self.registry = node, workdir, registry
        self.speaker = None
        self.bfd = None
        self.unnumbered = None
        self._wake = wake
        self._waiting: dict[str, str] = {}
        self._peer_by_ip: dict[str, str] = {}
        self._bfd_changed = up_down_callback(lambda name: self.speaker.peer_up(name),
                                             lambda name: self.speaker.peer_down(name),
                                             key=self._peer_for_bfd)

    def apply(self, cfg: Config, node: NodeView, views: Sequence[bgpadv.ServiceView],
              addresses: Sequence[str]) -> Optional[bgpadv.NodePlan]:
        """Send this node's plan to its active peers and keep their BFD sessions; ``addresses``:
        the node's InternalIPs (the speaker's local addresses). None when there is nothing to do
        (no peer selects this node and no speaker runs yet)."""
        peers = self._resolve(bgpadv.active_peers(cfg, node))
        if not peers and self.speaker is None:
            return None
        speaker = self._ensure_speaker(addresses)
        speaker.set_peers(peers.values())
        plan = bgpadv.plan_for_node(cfg, node, views)
        speaker.set(plan.advertisements, plan.prefix_owners)
        self._sync_bfd(cfg, peers)
        return plan

    def _resolve(self, peers: dict) -> dict:
        """Unnumbered peers get the link-local addresses learnt from router advertisements;
        those still waiting for them are left out (and logged once per reason)."""
        ifaces = sorted({p.interface for p in peers.values() if p.interface})
        if not ifaces and self.unnumbered is None:
            return peers
        from .unnumbered import Unnumbered, resolve_peers
        if self.unnumbered is None:
            self.unnumbered = Unnumbered(on_change=self._wake)
        ready, waiting = resolve_peers(peers, self.unnumbered.links(ifaces))
        for name, why in sorted(waiting.items()):
            if self._waiting.get(name) != why:
                log.info(f"BGP peer {name} waits: {why}", event="peerWaiting", peer=name, reason=why)
        self._waiting = waiting
        return ready

    def close(self, restarting: bool = False) -> None:
        """``restarting``: a new agent follows on this node (BGPSpeaker.close)."""
        if self.unnumbered:
            self.unnumbered.close()
        if self.bfd:
            self.bfd.close()
        if self.speaker:
            self.speaker.close(restarting=restarting)

    def _ensure_speaker(self, addresses: Sequence[str]):
        if self.speaker is None:
            from .config_render import NodeAddresses
            from .exabgp import BGPSpeaker
            v4 = next((ipaddress.ip_address(a) for a in addresses if ":" not in a), None)
            v6 = next((ipaddress.ip_address(a) for a in addresses if ":" in a), None)
            # ExaBGP's reactor on a thread of the agent (one interpreter per node, not two);
            # METALXDP_EXABGP_IN_PROCESS=0 starts it as a process, as before
            in_process = os.environ.get("METALXDP_EXABGP_IN_PROCESS", "1") not in ("0", "false", "no")
            self.speaker = BGPSpeaker(NodeAddresses(self.node, v4, v6), self.workdir / self.node,
                                      registry=self.registry, in_process=in_process)
        return self.speaker

    def _sync_bfd(self, cfg: Config, peers: dict) -> None:
        from ..bfd.runner import BFDManager, normalize, sessions_for_peers
        wanted = sessions_for_peers(peers.values(), cfg.bfd_profiles)
        if not wanted and self.bfd is None:
            return
        self._peer_by_ip = {normalize(str(p.peer_address)): name for name, p in peers.items()
                            if not p.interface}
        if self.bfd is None:
            self.bfd = BFDManager(self._on_bfd_change)
            if self.registry is not None:   # metallb_bfd_* on the agent's metrics endpoint
                from ..bfd.metrics import register_bfd_metrics
                register_bfd_metrics(self.registry, self.bfd)
        self.bfd.sync(wanted)

    def _peer_for_bfd(self, peer_ip: str) -> Optional[str]:
        """The BGPPeer a BFD session belongs to (None: not ours, or no speaker to tell)."""
        return self._peer_by_ip.get(peer_ip) if self.speaker is not None else None

    def _on_bfd_change(self, peer_ip: str, old: str, new: str) -> None:
        name = self._peer_for_bfd(peer_ip)
        if name is not None:
            log.info("BFD session state changed", event="bfdStateChanged", peer=name, old=old, new=new)
        self._bfd_changed(peer_ip, old, new)
