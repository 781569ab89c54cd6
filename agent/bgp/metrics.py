"""Prometheus metrics of the BGP speaker, with MetalLB's names.

The ``peer`` label is the peer's IP address (as MetalLB's FRR-mode metrics do).
"""
from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, REGISTRY


class BGPMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None):
        reg = registry if registry is not None else REGISTRY
        self.session_up = Gauge("metallb_bgp_session_up",
                                "BGP session state (1 is up, 0 is down)", ["peer"], registry=reg)
        self.updates = Counter("metallb_bgp_updates",
                               "Number of BGP UPDATE messages sent", ["peer"], registry=reg)
        self.announced_prefixes = Gauge("metallb_bgp_announced_prefixes_total",
                                        "Number of prefixes currently being advertised on the BGP session",
                                        ["peer"], registry=reg)
        # metalxdp's own: the ExaBGP behind the sessions (a thread of the agent, or a process)
        self.speaker_up = Gauge("metalxdp_bgp_speaker_up",
                                "1 while the node's ExaBGP runs and is driven by the agent",
                                registry=reg)
        self.speaker_restarts = Counter("metalxdp_bgp_speaker_restarts",
                                        "ExaBGP restarted after it died (or its reactor raised) or could not "
                                        "be driven", registry=reg)
        self.reloads_lost = Counter("metalxdp_bgp_speaker_reloads_lost",
                                    "Reloads ExaBGP did not apply (seen in show neighbor) and that "
                                    "were sent again", registry=reg)
        self.speaker_crash_looping = Gauge("metalxdp_bgp_speaker_crash_looping",
                                           "1 while ExaBGP fails again and again (restarts backing off)",
                                           registry=reg)

    def set_session(self, peer: str, up: bool) -> None:
        self.session_up.labels(peer).set(1 if up else 0)

    def update_sent(self, peer: str, n: int = 1) -> None:
        self.updates.labels(peer).inc(n)

    def set_announced(self, peer: str, count: int) -> None:
        self.announced_prefixes.labels(peer).set(count)

    def forget(self, peer: str) -> None:
        """A peer removed from the configuration: drop its series instead of freezing them."""
        for m in (self.session_up, self.updates, self.announced_prefixes):
            try:
                m.remove(peer)
            except KeyError:
                pass
