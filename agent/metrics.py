"""Agent metrics with MetalLB's names, plus metalxdp_* for what XDP adds (per-VIP traffic).

The layer-2 counters and the per-VIP traffic come straight from the XDP program's per-CPU
maps at scrape time (a custom collector), so they cost nothing on the hot path.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, UnknownMetricFamily


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
        self.updates_total = Counter("metallb_k8s_client_updates_total",
                                     "Number of k8s object updates that have been processed.", registry=registry)
        self.members = Gauge("metalxdp_membership_members", "Agents this node sees alive (itself included)",
                             registry=registry)


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
