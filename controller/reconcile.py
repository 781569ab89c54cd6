"""The controller's reconcile loop: watches Services, Namespaces and the metallb.io resources,
and gives every LoadBalancer Service its IPs through the pure allocator.

Durability (beyond MetalLB, whose users hit duplicate IPs after restarts, #1774/#2479): nothing
is allocated until every watched collection has been listed, and then *every* IP already in a
Service's status is learned (oldest Service first) before the first new allocation. Decisions
are made by one thread, so a burst of concurrent creations cannot race; writes are ordered per
Service (see writer.py). A Service whose IP is still in a pool keeps it; one whose IP left every
pool gets ClearAssignment and a new IP if one is free; a pending Service is retried as soon as
an IP frees up or the configuration changes. An invalid new configuration is refused and the
last good one stays in force (ConfigurationState says so, and metallb_k8s_client_config_stale_bool).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Optional

from metalxdp.config.parse import parse
from metalxdp.config.types import Config, ConfigError
from metalxdp.health import loop_live
from metalxdp.kube import ApiException, ConflictError, client, replace_custom_status
from metalxdp.log import get_logger
from metalxdp.service import (POOL_ANNOTATION, ServiceSpecError, annotation, ingress_ips, service_spec_from_k8s,
                              status_ips_from_k8s, wants_load_balancer)
from metalxdp.watch import Informer, config_informers, obj_key

from .allocator import AllocationError, Allocator
from .metrics import ControllerMetrics
from .writer import ServiceWriter, ingress_current

log = get_logger("controller")

CONFIG_KEY = "\0config"
POOL_STATUS_IDLE = 0.05        # seconds the queue is idle before the pools' status is written
LEGACY_CONFIGMAP = "config"   # MetalLB < 0.13 read its configuration from metallb-system/config
LEGACY_MESSAGE = ("the ConfigMap metallb-system/config holds MetalLB's legacy configuration format, "
                  "which metalxdp (like MetalLB since 0.13) does not read; convert it: kubectl get configmap "
                  "-n metallb-system config -o yaml > old.yaml; metalxdp config convert -f old.yaml | "
                  "kubectl apply -f -; then delete the ConfigMap")


class WorkQueue:
    """A FIFO of keys without duplicates; ``CONFIG_KEY`` jumps the line."""

    def __init__(self):
        self._q: deque[str] = deque()
        self._set: set[str] = set()
        self._cv = threading.Condition()

    def add(self, key: str) -> None:
        with self._cv:
            if key in self._set:
                return
            self._set.add(key)
            (self._q.appendleft if key == CONFIG_KEY else self._q.append)(key)
            self._cv.notify()

    def get(self, timeout: float) -> Optional[str]:
        with self._cv:
            if not self._q and not self._cv.wait_for(lambda: bool(self._q), timeout):
                return None
            key = self._q.popleft()
            self._set.discard(key)
            return key

    def __len__(self) -> int:
        with self._cv:
            return len(self._q)


class Controller:
    def __init__(self, api: client.ApiClient, namespace: str = "metallb-system",
                 lb_class: Optional[str] = None, metrics: Optional[ControllerMetrics] = None,
                 writer: Optional[ServiceWriter] = None):
        self.api, self.namespace, self.lb_class = api, namespace, lb_class
        self.metrics = metrics
        self.writer = writer or ServiceWriter(api, metrics)
        self.queue = WorkQueue()
        self.allocator = Allocator()
        self.config: Optional[Config] = None
        self.config_error: Optional[ConfigError] = None
        self.pending: set[str] = set()        # services waiting for a free IP
        self.leading = threading.Event()      # only the leader allocates and writes
        self._learned = False
        self._stop = threading.Event()
        self._pools_dirty = False
        enqueue_svc = lambda typ, obj: self.queue.add(obj_key(obj))  # noqa: E731
        enqueue_cfg = lambda typ, obj: self.queue.add(CONFIG_KEY)    # noqa: E731
        self.services = Informer(api, "/api/v1/services", enqueue_svc)
        self.namespaces = Informer(api, "/api/v1/namespaces", self._namespace_changed)
        self.secrets = Informer(api, f"/api/v1/namespaces/{namespace}/secrets", enqueue_cfg)
        self.config_informers = config_informers(api, namespace, enqueue_cfg)
        # MetalLB's legacy ConfigMap: never read as configuration, but never silently ignored
        self.legacy_configmap = Informer(api, f"/api/v1/namespaces/{namespace}/configmaps", enqueue_cfg,
                                         field_selector=f"metadata.name={LEGACY_CONFIGMAP}")
        self._legacy_warned: Optional[str] = None   # resourceVersion already warned about
        self.informers = [self.services, self.namespaces, self.secrets, *self.config_informers,
                          self.legacy_configmap]

    # ---- inputs --------------------------------------------------------------------------
    def _namespace_changed(self, typ: str, obj: dict) -> None:
        # namespace labels decide namespaceSelector pools: reconsider that namespace's services
        if self._learned:
            ns = obj["metadata"]["name"]
            for s in self.services.items():
                if s["metadata"].get("namespace") == ns:
                    self.queue.add(obj_key(s))
        self.queue.add(CONFIG_KEY)

    def namespace_labels(self, ns: str) -> dict:
        o = self.namespaces.get(ns)
        return dict((o or {}).get("metadata", {}).get("labels") or {})

    def config_resources(self) -> list[dict]:
        return [o for inf in self.config_informers for o in inf.items()]

    # ---- config -------------------------------------------------------------------------
    def _reload_config(self) -> None:
        secrets = {obj_key(s): s for s in self.secrets.items()}
        namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self.namespaces.items()}
        try:
            cfg = parse(self.config_resources(), secrets=secrets, namespaces=namespaces)
        except ConfigError as e:
            self.config_error = e
            if self.metrics:
                self.metrics.config_stale.set(1 if self.config is not None else 0)
            log.error("failed to parse the configuration; keeping the last good one" if self.config
                      else "failed to parse the configuration", event="configStale",
                      error=str(e), transient=e.transient)
            self._write_configuration_state()
            if e.transient:   # a Secret or BFDProfile that may appear: look again soon
                threading.Timer(2.0, self.queue.add, args=(CONFIG_KEY,)).start()
            return
        changed = cfg != self.config
        self.config, self.config_error = cfg, None
        if self.metrics:
            self.metrics.config_loaded.set(1)
            self.metrics.config_stale.set(0)
        self._write_configuration_state()
        if not changed and self._learned:
            return
        log.info("config reloaded", event="configLoaded", pools=sorted(cfg.pools))
        cleared = self.allocator.set_pools(cfg.pools)
        if self.metrics:
            self.metrics.forget_pools_except(cfg.pools)
        self._pools_dirty = True
        if not self._learned:
            self._learn_existing()
        for key in cleared:
            log.info("IP no longer in any pool", event="clearAssignment", service=key, reason="notAllowedByConfig")
            svc = self.services.get(key)
            if svc:
                self.writer.event(svc, "Normal", "ClearAssignment",
                                  "current IP not allowed by config, clearing")
        # MetalLB reprocesses every service on a config change
        if self._resync_t0 is None:
            self._resync_t0 = time.monotonic()
        for s in self.services.items():
            self.queue.add(obj_key(s))

    def _learn_existing(self) -> None:
        """Learn every IP already in a Service status before allocating anything."""
        svcs = [s for s in self.services.items() if wants_load_balancer(s, self.lb_class) and ingress_ips(s)]
        svcs.sort(key=lambda s: (s["metadata"].get("creationTimestamp", ""), obj_key(s)))
        kept = conflicts = 0
        for s in svcs:
            key = obj_key(s)
            try:
                spec, _ = service_spec_from_k8s(s, self.namespace_labels(s["metadata"]["namespace"]))
                self.allocator.assign(spec, status_ips_from_k8s(s))
                kept += 1
            except (ServiceSpecError, AllocationError) as e:
                conflicts += 1
                log.warning("existing IP cannot be kept", event="clearAssignment", service=key,
                            ips=ingress_ips(s), reason=getattr(e, "code", getattr(e, "reason", "")),
                            error=str(e))
        self._learned = True
        log.info("learned existing assignments", services=kept, conflicts=conflicts)

    # ---- services -----------------------------------------------------------------------
    def _clear(self, key: str, svc: dict) -> None:
        if ingress_ips(svc) or annotation(svc, POOL_ANNOTATION):
            self.writer.update(key, (), None)

    def _released(self, key: str) -> None:
        self._pools_dirty = True
        for k in list(self.pending):      # an IP freed up: pending services get another try
            self.queue.add(k)

    def sync_service(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None:
            if self.allocator.release(key):
                log.info("service deleted", event="serviceDeleted", service=key)
                self._released(key)
            self.pending.discard(key)
            return
        if not wants_load_balancer(svc, self.lb_class):
            self.pending.discard(key)
            if self.allocator.release(key):
                log.info("not a LoadBalancer any more", event="clearAssignment", service=key,
                         reason="notLoadBalancer")
                self._released(key)
            # Only a Service that stopped being a LoadBalancer has our annotation undone. One of
            # another loadBalancerClass belongs to another implementation (MetalLB, during a
            # migration or beside us), which writes the same annotation name: never touched, as
            # MetalLB filters such Services out (found running MetalLB beside us: stripping it
            # made MetalLB retry every status write on a conflict)
            if (svc.get("spec") or {}).get("type") != "LoadBalancer" and annotation(svc, POOL_ANNOTATION):
                self.writer.update(key, (), None)
            return
        if self.config is None:
            return
        try:
            spec, warnings = service_spec_from_k8s(svc, self.namespace_labels(svc["metadata"]["namespace"]))
        except ServiceSpecError as e:
            self.writer.event(svc, "Warning", e.reason, e.message)
            log.warning("service cannot be allocated", event="clearAssignment", service=key,
                        reason=e.reason, error=e.message)
            if self.allocator.release(key):
                self._released(key)
            self._clear(key, svc)
            return
        for w in warnings:
            self.writer.event(svc, "Warning", w.reason, w.message)
        had = self.allocator.ips_of(key)
        try:
            alloc = self.allocator.allocate(spec)
        except AllocationError as e:
            if e.cleared:
                self.writer.event(svc, "Normal", "ClearAssignment", f"{e.cleared}: clearing {[str(i) for i in e.previous_ips]}")
                self._released(key)
            self.pending.add(key)
            self.writer.event(svc, "Warning", "AllocationFailed", f"Failed to allocate IP for {key}: {e.message}")
            log.warning("IP allocation failed", event="allocationFailed", service=key, reason=e.code,
                        error=e.message)
            self._clear(key, svc)
            return
        self.pending.discard(key)
        if alloc.cleared:
            self.writer.event(svc, "Normal", "ClearAssignment",
                              f"{alloc.cleared}: clearing {[str(i) for i in alloc.previous_ips]}")
            log.info("cleared assignment", event="clearAssignment", service=key, reason=alloc.cleared,
                     ips=[str(i) for i in alloc.previous_ips])
            self._released(key)
        if alloc.additional_failed:
            self.writer.event(svc, "Normal", "AdditionalAssignFailed", alloc.additional_failed)
        ips = [str(i) for i in alloc.ips]
        need_status = not ingress_current(svc, ips)
        need_annotation = annotation(svc, POOL_ANNOTATION) != alloc.pool_name
        changed = set(alloc.ips) != set(had)
        if changed:
            log.info("IP address assigned by controller", event="ipAllocated", service=key, ip=ips,
                     pool=alloc.pool_name)
        if need_status or need_annotation:
            # a lone Service (nothing else queued) is written from this thread: the status is
            # what the agents wait for, so it goes before the Event (writer.keyed)
            self.writer.update(key, tuple(ips), alloc.pool_name, annotate=need_annotation, status=need_status,
                               inline=len(self.queue) == 0)
        if changed:
            self._pools_dirty = True
            # MetalLB's message: Go's %q of the []string, e.g. Assigned IP ["192.0.2.200" "2001:db8::1"]
            self.writer.event(svc, "Normal", "IPAllocated", "Assigned IP [" + " ".join(f'"{i}"' for i in ips) + "]")

    def _legacy_config(self) -> Optional[dict]:
        """The metallb-system/config ConfigMap when it holds MetalLB's legacy format."""
        cm = self.legacy_configmap.get(f"{self.namespace}/{LEGACY_CONFIGMAP}")
        return cm if cm is not None and "config" in (cm.get("data") or {}) else None

    def _warn_legacy_config(self) -> None:
        cm = self._legacy_config()
        rv = (cm or {}).get("metadata", {}).get("resourceVersion")
        if cm is None or rv == self._legacy_warned:
            return
        self._legacy_warned = rv
        log.warning(LEGACY_MESSAGE, event="legacyConfigMapIgnored", configmap=f"{self.namespace}/{LEGACY_CONFIGMAP}")
        self.writer.event({"kind": "ConfigMap", "apiVersion": "v1", **cm}, "Warning", "LegacyConfigMapIgnored",
                          LEGACY_MESSAGE)

    # ---- status objects -----------------------------------------------------------------
    def _write_configuration_state(self) -> None:
        self._warn_legacy_config()
        err = self.config_error
        body = {"status": {
            "result": "Invalid" if err else "Valid",
            # no empty strings: some API servers read "" in a CR status as null and refuse it;
            # the status is written with PUT, so an omitted errorSummary is cleared
            **({"errorSummary": str(err)} if err else {}),
            "conditions": [{"type": "configReconcilerValid", "status": "False" if err else "True",
                            "reason": "ConfigurationError" if err else "Reconciled",
                            "message": (str(err) + ("; the last valid configuration stays in force"
                                                    if self.config else "")) if err else "configuration is valid",
                            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                           *([{"type": "legacyConfigMapIgnored", "status": "True", "reason": "LegacyConfigMap",
                               "message": LEGACY_MESSAGE,
                               "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
                             if self._legacy_config() is not None else [])]}}
        self.writer.keyed("\0configurationstate", lambda: self._put_configuration_state(body))

    def _put_configuration_state(self, body: dict) -> None:
        # a PUT of the status (see replace_custom_status): errorSummary must never become null
        try:
            replace_custom_status(self.api, "metallb.io", "v1beta1", self.namespace, "configurationstates",
                                  "controller", body["status"], create={
                                      "apiVersion": "metallb.io/v1beta1", "kind": "ConfigurationState",
                                      "metadata": {"name": "controller",
                                                   "labels": {"metallb.io/component-type": "controller"}}})
        except ApiException as e:
            log.warning("ConfigurationState not written", status=e.status, reason=e.reason,
                        body=str(e.body)[:300])
        except ConflictError as e:
            log.warning("ConfigurationState not written", error=str(e))

    def _write_pool_status(self) -> None:
        if not self.config:
            return
        co = client.CustomObjectsApi(self.api)
        for name in self.config.pools:
            c = self.allocator.counters(name)
            if self.metrics:
                self.metrics.set_pool(name, c)
            st = self.allocator.pool_status(name)
            body = {"status": {"assignedIPv4": st.assigned_ipv4, "assignedIPv6": st.assigned_ipv6,
                               "availableIPv4": st.available_ipv4, "availableIPv6": st.available_ipv6}}
            try:
                co.patch_namespaced_custom_object_status("metallb.io", "v1beta1", self.namespace,
                                                         "ipaddresspools", name, body)
            except ApiException:
                pass   # a legacy AddressPool or a pool deleted meanwhile

    # ---- loop -----------------------------------------------------------------------------
    def start_informers(self, timeout: float = 60) -> None:
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            if not inf.wait_synced(timeout):
                raise RuntimeError(f"could not list {inf.path} within {timeout}s")
        self.synced = True

    # ---- probes (metalxdp.health) ----------------------------------------------------------
    synced = False
    _last_pass: Optional[float] = None
    _resync_t0: Optional[float] = None    # a full resync (every Service reprocessed) began then

    def live(self) -> tuple[bool, str]:
        return loop_live(self._last_pass is not None, self._last_pass, time.monotonic())

    def ready(self) -> tuple[bool, str]:
        return (True, "ok") if self.synced else (False, "listing Services, EndpointSlices and metallb.io objects")

    def run(self) -> None:
        """Process the queue while leading. Blocks until ``stop``."""
        self.queue.add(CONFIG_KEY)
        last_pool_write = 0.0
        while not self._stop.is_set():
            # the pools' status once the queue has been idle for POOL_STATUS_IDLE (or each
            # second of a long stream). Before, it was written whenever the queue was empty for
            # a moment, so after nearly every allocation, and its GET + PUT competed with the
            # Service's own status write. Measured against MetalLB (bench/peer_controller.py):
            # single create 0.88x -> 1.0x, CPU per Service 3.1 -> 2.0 ms
            key = self.queue.get(timeout=POOL_STATUS_IDLE if self._pools_dirty else 0.5)
            if key is not None and self.leading.is_set():
                self.process(key)
                if self._resync_t0 is not None and self._learned and len(self.queue) == 0:
                    self._resync_finished()
            if self._pools_dirty and ((len(self.queue) == 0 and key is None) or time.monotonic() - last_pool_write > 1):
                self._pools_dirty = False
                last_pool_write = time.monotonic()
                self.writer.keyed("\0poolstatus", self._write_pool_status)
            self._last_pass = time.monotonic()

    def process(self, key: str) -> None:
        """Handle one queued key (a Service, or the configuration), counted as MetalLB's
        controllers count it: every processed key into metallb_k8s_client_updates_total, every
        one whose handling failed into ..._update_errors_total as well."""
        if self.metrics:
            self.metrics.updates_total.inc()
        try:
            if key == CONFIG_KEY:
                self._reload_config()
            elif self._learned:
                self.sync_service(key)
        except Exception:  # noqa: BLE001 - one bad object must not stop the loop
            if self.metrics:
                self.metrics.update_errors_total.inc()
            log.error("reconcile failed", exc_info=True, key=key)

    def _resync_finished(self) -> None:
        """Every Service has been reprocessed since the resync began (new leader, or a changed
        configuration) and the queue is empty: log and export how long that took. Writes
        still being sent are counted, not waited for."""
        took = time.monotonic() - self._resync_t0
        self._resync_t0 = None
        if self.metrics:
            self.metrics.allocation_seconds.set(took)
        log.info("full resync finished", event="resyncFinished", services=len(self.services.items()),
                 seconds=round(took, 3), writes_pending=self.writer.pending())

    def start_leading(self) -> None:
        """Called when this replica becomes leader: forget everything, list Services afresh (the
        previous leader's last writes must be seen before anything is allocated), learn, go."""
        self._resync_t0 = time.monotonic()   # the list below is part of it
        self.allocator = Allocator()
        self.config, self._learned = None, False
        self.pending.clear()
        self.services._list()
        self.leading.set()
        if self.metrics:
            self.metrics.is_leader.set(1)
        self.queue.add(CONFIG_KEY)

    def stop(self) -> None:
        self._stop.set()
        for inf in self.informers:
            inf.stop()
        self.writer.close()
