"""Controller metrics, named as MetalLB names them (section F of the feature reference)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# the per-pool gauges; also the field names of the allocator's PoolCounters
POOL_GAUGES = ("addresses_total", "ipv4_addresses_total", "ipv6_addresses_total",
               "addresses_in_use_total", "ipv4_addresses_in_use_total", "ipv6_addresses_in_use_total",
               "services_allocated_total")


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry):
        g = lambda name, doc, labels=("pool",): Gauge(name, doc, labels, registry=registry)  # noqa: E731
        self.addresses_total = g("metallb_allocator_addresses_total", "Number of usable IP addresses, per pool")
        self.ipv4_addresses_total = g("metallb_allocator_ipv4_addresses_total", "Number of usable IPv4 addresses, per pool")
        self.ipv6_addresses_total = g("metallb_allocator_ipv6_addresses_total", "Number of usable IPv6 addresses, per pool")
        self.addresses_in_use_total = g("metallb_allocator_addresses_in_use_total", "Number of IP addresses in use, per pool")
        self.ipv4_addresses_in_use_total = g("metallb_allocator_ipv4_addresses_in_use_total", "Number of IPv4 addresses in use, per pool")
        self.ipv6_addresses_in_use_total = g("metallb_allocator_ipv6_addresses_in_use_total", "Number of IPv6 addresses in use, per pool")
        # registered by MetalLB but never set there; set here (services holding an IP of the pool)
        self.services_allocated_total = g("metallb_allocator_services_allocated_total", "Number of services allocated, per pool")
        # MetalLB's meaning: one per processed work-queue key (a Service or the configuration,
        # Controller.process); errors: its handling raised, or writing its result back failed
        self.updates_total = Counter("metallb_k8s_client_updates_total",
                                     "Number of k8s object updates that have been processed.", registry=registry)
        self.update_errors_total = Counter("metallb_k8s_client_update_errors_total",
                                           "Number of k8s object updates that failed for some reason.", registry=registry)
        self.config_loaded = Gauge("metallb_k8s_client_config_loaded_bool",
                                   "1 if the MetalLB configuration was successfully loaded at least once.", registry=registry)
        self.config_stale = Gauge("metallb_k8s_client_config_stale_bool",
                                  "1 if running on a stale configuration, because the latest config failed to load.", registry=registry)
        self.is_leader = Gauge("metalxdp_controller_leader_bool", "1 while this replica holds the controller lease.", registry=registry)
        self.allocation_seconds = Gauge("metalxdp_controller_last_sync_seconds",
                                        "Duration of the last full reconcile of all services.", registry=registry)
        self._pools: set[str] = set()

    def set_pool(self, name: str, c) -> None:
        """``c`` is the allocator's PoolCounters for pool ``name``."""
        self._pools.add(name)
        for attr in POOL_GAUGES:
            getattr(self, attr).labels(name).set(getattr(c, attr))

    def forget_pools_except(self, names) -> None:
        for gone in self._pools - set(names):
            for attr in POOL_GAUGES:
                try:
                    getattr(self, attr).remove(gone)
                except KeyError:
                    pass
        self._pools &= set(names)
