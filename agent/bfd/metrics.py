"""MetalLB's BFD metrics (the FRR-mode names of frr-tools/metrics/collector/bfd.go), read from
the BFDManager at scrape time, so the BFD thread does no metric work per packet.

    registry = CollectorRegistry()
    register_bfd_metrics(registry, manager)

exposes, per peer address:
  metallb_bfd_session_up             gauge    1 while the session is Up
  metallb_bfd_control_packet_input   counter* control packets received for the session
  metallb_bfd_control_packet_output  counter* control packets sent
  metallb_bfd_session_up_events      counter* transitions to Up
  metallb_bfd_session_down_events    counter* transitions from Up to Down / AdminDown
  metallb_bfd_echo_packet_input      counter* our echo packets that came back
  metallb_bfd_echo_packet_output     counter* echo packets sent
*The names carry no ``_total`` suffix, exactly as MetalLB's collector (Go const metrics) exports
them, so existing dashboards and alerts work unchanged. prometheus_client always renames a
``counter`` family to ``<name>_total`` in the text format, so these monotonic values are exposed
as ``untyped`` under the exact MetalLB names (``rate()``/``increase()`` work on them the same).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

SESSION_UP = "metallb_bfd_session_up"
PACKET_INPUT = "metallb_bfd_control_packet_input"
PACKET_OUTPUT = "metallb_bfd_control_packet_output"
UP_EVENTS = "metallb_bfd_session_up_events"
DOWN_EVENTS = "metallb_bfd_session_down_events"
ECHO_INPUT = "metallb_bfd_echo_packet_input"
ECHO_OUTPUT = "metallb_bfd_echo_packet_output"


class SessionSource(Protocol):
    def sessions(self) -> Mapping[str, object]: ...   # peer -> runner.SessionInfo


def _metric(name: str, doc: str, typ: str) -> Metric:
    return Metric(name, doc, typ)


class BFDCollector(Collector):
    def __init__(self, source: SessionSource):
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return []                                 # no samples at registration time

    def collect(self) -> Iterable[Metric]:
        try:
            sessions = self.source.sessions()
        except RuntimeError:                      # manager closed: no sessions
            sessions = {}
        up = _metric(SESSION_UP, "BFD session state (1 is up, 0 is down)", "gauge")
        rx = _metric(PACKET_INPUT, "Number of received BFD control packets", "unknown")
        tx = _metric(PACKET_OUTPUT, "Number of sent BFD control packets", "unknown")
        ups = _metric(UP_EVENTS, "Number of BFD session up events", "unknown")
        downs = _metric(DOWN_EVENTS, "Number of BFD session down events", "unknown")
        erx = _metric(ECHO_INPUT, "Number of received BFD echo packets", "unknown")
        etx = _metric(ECHO_OUTPUT, "Number of sent BFD echo packets", "unknown")
        for peer, s in sorted(sessions.items()):
            lbl = {"peer": peer}
            up.add_sample(SESSION_UP, lbl, 1.0 if s.state == "Up" else 0.0)
            rx.add_sample(PACKET_INPUT, lbl, float(s.control_packet_input))
            tx.add_sample(PACKET_OUTPUT, lbl, float(s.control_packet_output))
            ups.add_sample(UP_EVENTS, lbl, float(s.session_up_events))
            downs.add_sample(DOWN_EVENTS, lbl, float(s.session_down_events))
            erx.add_sample(ECHO_INPUT, lbl, float(getattr(s, "echo_packet_input", 0)))
            etx.add_sample(ECHO_OUTPUT, lbl, float(getattr(s, "echo_packet_output", 0)))
        return [up, rx, tx, ups, downs, erx, etx]


def register_bfd_metrics(registry: CollectorRegistry, source: SessionSource) -> BFDCollector:
    c = BFDCollector(source)
    registry.register(c)
    return c
