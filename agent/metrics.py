"""Agent metrics with MetalLB's names, plus metalxdp_* for what XDP adds (per-VIP traffic, the
program's attachment and the liveness gate).

The layer-2 counters, the per-VIP traffic and the XDP state come straight from the XDP
program's maps and the kernel at scrape time (custom collectors), so they cost nothing on the
hot path. Turning a snapshot into metric families is pure (``xdp_state_families``); reading it
is ``Dataplane.xdp_state()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, UnknownMetricFamily


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.announced = Gauge("metallb_speaker_announced", "Services being announced from this node "
                               "by the desired protocol", ["service", "protocol", "node", "ip"], registry=registry)
        self.config_loaded = Gauge("metallb_k8s_client_config_loaded_bool",
                                   "1 if the MetalLB configuration was successfully loaded at least once.",
                                   registry=registry)
        self.config_stale = Gauge("metallb_k8s_client_config_stale_bool",
                                  "1 if running on a stale configuration, because the latest config failed to load.",
                                  registry=registry)
        # MetalLB's meaning (internal/k8s/controllers): one per Kubernetes object update (a watch
        # event) the agent has processed, and one error per update whose processing failed
        self.updates_total = Counter("metallb_k8s_client_updates_total",
                                     "Number of k8s object updates that have been processed.", registry=registry)
        self.update_errors_total = Counter("metallb_k8s_client_update_errors_total",
                                           "Number of k8s object updates that failed for some reason.",
                                           registry=registry)
        # metalxdp's own: MetalLB has no failover count. A VIP this node starts (gained) or stops
        # (lost) announcing; in layer2 a gain on one node with a loss on another is a failover
        self.announcement_changes = Counter("metalxdp_speaker_announcement_changes",
                                            "Times this node started (change=gained) or stopped "
                                            "(change=lost) announcing an IP, by protocol",
                                            ["protocol", "ip", "change"], registry=registry)
        self.members = Gauge("metalxdp_membership_members", "Agents this node sees alive (itself included)",
                             registry=registry)
        # one pass recomputes every Service (level-triggered): its cost grows with the cluster
        self.reconcile_seconds = Histogram("metalxdp_agent_reconcile_seconds",
                                           "Duration of one agent reconcile pass over every Service",
                                           buckets=RECONCILE_BUCKETS, registry=registry)


RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW_RECONCILE_S = 1.0      # a pass this long is logged (event slowReconcile)


def announcement_changes(before: "set[tuple[str, str]]", after: "set[tuple[str, str]]"
                         ) -> list[tuple[str, str, str]]:
    """(protocol, ip) pairs announced before and after a pass -> the (protocol, ip, change)
    label sets to count, change being "gained" or "lost" (pure). An IP shared by several
    Services (allow-shared-ip) is one pair: it changes once."""
    return sorted([(p, ip, "gained") for p, ip in after - before] +
                  [(p, ip, "lost") for p, ip in before - after])


def processed_updates(pending: int, failed: bool) -> tuple[int, int]:
    """How one agent reconcile pass counts into metallb_k8s_client_updates_total and
    ..._update_errors_total (pure): the pass processed the ``pending`` watch events that arrived
    since the previous one (the agent coalesces them); when it failed, each of them failed, and a
    failed pass counts as at least one error (a periodic pass without events can fail too)."""
    return pending, (max(pending, 1) if failed else 0)


class XDPCollector:
    """Reads the dataplane counters at scrape time.

    read: returns ({(ip, ifname): {rx_packets, rx_bytes, requests, replies, misdirected}}, {ip: gratuitous frames}).
    """

    def __init__(self, read: Callable[[], tuple[dict, dict]]):
        self.read = read

    def describe(self):
        return []

    def collect(self):
        try:
            per_vip, garp = self.read()
        except Exception:  # noqa: BLE001 - a scrape must never kill the agent
            return
        # MetalLB's exact names (its Go client adds no _total); prometheus_client would append
        # _total to a counter, so these are exposed untyped (monotonic: rate() works)
        req = UnknownMetricFamily("metallb_layer2_requests_received", "Number of layer2 requests received for owned IPs", labels=["ip"])
        resp = UnknownMetricFamily("metallb_layer2_responses_sent", "Number of layer2 responses sent for owned IPs", labels=["ip"])
        grat = UnknownMetricFamily("metallb_layer2_gratuitous_sent", "Number of gratuitous layer2 packets sent for owned IPs", labels=["ip"])
        pk = CounterMetricFamily("metalxdp_vip_packets_total", "IPv4/IPv6 packets to the VIP seen by XDP", labels=["ip", "interface"])
        by = CounterMetricFamily("metalxdp_vip_bytes_total", "Bytes of IPv4/IPv6 packets to the VIP seen by XDP", labels=["ip", "interface"])
        mis = CounterMetricFamily("metalxdp_vip_misdirected_packets_total", "Packets to an externalTrafficPolicy=Local VIP "
                                  "on a node without a ready local endpoint", labels=["ip", "interface"])
        reqs: dict[str, int] = {}
        resps: dict[str, int] = {}
        for (ip, ifname), c in per_vip.items():
            reqs[ip] = reqs.get(ip, 0) + c.get("requests", 0)
            resps[ip] = resps.get(ip, 0) + c.get("replies", 0)
            pk.add_metric([ip, ifname], c.get("rx_packets", 0))
            by.add_metric([ip, ifname], c.get("rx_bytes", 0))
            mis.add_metric([ip, ifname], c.get("misdirected", 0))
        for ip, v in reqs.items():
            req.add_metric([ip], v)
        for ip, v in resps.items():
            resp.add_metric([ip], v)
        for ip, v in garp.items():
            grat.add_metric([ip], v)
        yield from (req, resp, grat, pk, by, mis)


# ---- the XDP program's own state ------------------------------------------------------------

@dataclass(frozen=True)
class Attachment:
    interface: str
    mode: str          # "native" | "generic" (as attached by this process)
    attached: bool     # the kernel still runs our program on it


@dataclass(frozen=True)
class XDPState:
    """One scrape's view of the dataplane (``Dataplane.xdp_state()``); times are CLOCK_MONOTONIC
    ns, the clock the heartbeat is stamped with (bpf_ktime_get_ns)."""
    attachments: tuple[Attachment, ...] = ()
    heartbeat_ns: int = 0            # mx_liveness: last heartbeat
    max_age_jiffies: int = 0         # the window the program compares (0: gate off)
    max_age_ns: int = 0              # the same window as the agent asked for it
    hz: int = 0                      # the HZ the agent converted with
    now_ns: int = 0
    not_answered: Mapping[str, int] = field(default_factory=dict)   # mx_global: name -> frames


def liveness_gate_open(heartbeat_ns: int, max_age_jiffies: int, hz: int, now_ns: int) -> bool:
    """The XDP program's agent_alive() seen from userspace: the gate is open while the heartbeat
    is at most ``max_age_jiffies`` ticks old (to the tick: userspace has no jiffies, so the age is
    converted with the agent's HZ). A window of 0 is the gate switched off: always open."""
    if max_age_jiffies == 0:
        return True
    if hz <= 0:
        return False   # a window without a tick rate cannot be honoured by the agent either
    age_jiffies = max(0, now_ns - heartbeat_ns) * hz // 1_000_000_000
    return age_jiffies <= max_age_jiffies


# mx_global's counter names (bpf/vip_consts.h G_*) -> the reason label
def _reason(counter: str) -> str:
    return counter.removeprefix("pass_")


def xdp_state_families(st: XDPState) -> list[Metric]:
    """The metalxdp_xdp_* families of one snapshot (pure)."""
    attached = GaugeMetricFamily("metalxdp_xdp_attached", "1 while the metalxdp XDP program runs on the "
                                 "interface this agent attached it to, 0 once it is gone (detached by hand, "
                                 "replaced)", labels=["interface", "mode"])
    for a in st.attachments:
        attached.add_metric([a.interface, a.mode], 1.0 if a.attached else 0.0)
    gate = GaugeMetricFamily("metalxdp_xdp_liveness_gate_open", "1 while the XDP program answers for this "
                             "node (the agent's heartbeat is fresh or the gate is off), 0 when it has "
                             "stopped answering: split-brain guard")
    gate.add_metric([], 1.0 if liveness_gate_open(st.heartbeat_ns, st.max_age_jiffies, st.hz, st.now_ns) else 0.0)
    age = GaugeMetricFamily("metalxdp_xdp_heartbeat_age_seconds", "Age of the agent's last heartbeat in the "
                            "XDP liveness map")
    age.add_metric([], max(0, st.now_ns - st.heartbeat_ns) / 1e9)
    window = GaugeMetricFamily("metalxdp_xdp_liveness_max_age_seconds", "The liveness gate's window "
                               "(--liveness-max-age-ms; 0: gate off)")
    window.add_metric([], st.max_age_ns / 1e9)
    unanswered = CounterMetricFamily("metalxdp_xdp_frames_not_answered", "ARP/NDP frames the XDP program "
                                     "passed to the kernel instead of answering, by reason (gated: the "
                                     "liveness gate was closed; not_for_us: sent to another host's MAC; "
                                     "vlan; malformed)", labels=["reason"])
    for name, value in sorted(st.not_answered.items()):
        unanswered.add_metric([_reason(name)], value)
    return [attached, gate, age, window, unanswered]


class XDPStateCollector:
    """``read`` returns an XDPState (``Dataplane.xdp_state``); a failing read drops these series
    from the scrape instead of failing it."""

    def __init__(self, read: Callable[[], XDPState]):
        self.read = read

    def describe(self):
        return []

    def collect(self):
        try:
            st = self.read()
        except Exception:  # noqa: BLE001 - a scrape must never kill the agent
            return
        yield from xdp_state_families(st)
