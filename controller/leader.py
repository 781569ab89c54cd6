"""Leader election through a coordination.k8s.io/v1 Lease, so two controller replicas can run
and exactly one allocates.

The decision (``LeaseDecision.next_action``) is pure and table-tested; ``LeaderElector`` does
the I/O with optimistic concurrency (a replace carries the resourceVersion it read, so two
candidates can never both win the same term). A leader that cannot renew within
``renew_deadline`` (< ``lease_duration``) stops leading *before* another replica may take over:
the process exits and restarts as a follower, so no two replicas ever write at once.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from metalxdp.kube import ApiException, client
from metalxdp.log import get_logger

log = get_logger("leader")


@dataclass(frozen=True)
class LeaseView:
    holder: str
    renew_time: Optional[float]     # unix seconds, None when never renewed
    duration: float


def next_action(me: str, lease: Optional[LeaseView], now: float) -> str:
    """'create' (no lease), 'renew' (mine), 'acquire' (expired or released), 'wait' (someone
    else holds a live lease)."""
    if lease is None:
        return "create"
    if lease.holder == me:
        return "renew"
    if not lease.holder or lease.renew_time is None or now > lease.renew_time + lease.duration:
        return "acquire"
    return "wait"


def _ts(t: Optional[dt.datetime]) -> Optional[float]:
    return t.timestamp() if t else None


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 lease_duration: float = 15, renew_deadline: float = 10, retry_period: float = 2,
                 on_started_leading: Callable[[], None] = lambda: None,
                 on_stopped_leading: Callable[[], None] = lambda: None):
        assert renew_deadline < lease_duration
        self.coord = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.on_started_leading, self.on_stopped_leading = on_started_leading, on_stopped_leading
        self.leading = threading.Event()
        self._stop = threading.Event()

    def _body(self, rv: Optional[str] = None, transitions: int = 0) -> dict:
        now = dt.datetime.now(dt.timezone.utc)
        md = {"name": self.name, "namespace": self.namespace}
        if rv:
            md["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": md,
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(max(1, self.lease_duration)),
                         "acquireTime": now if not rv or transitions else None, "renewTime": now,
                         "leaseTransitions": transitions}}

    def try_once(self) -> bool:
        """One attempt to acquire or renew; True while we hold the lease."""
        try:
            cur = self.coord.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            cur = None
        view = None if cur is None else LeaseView(cur.spec.holder_identity or "", _ts(cur.spec.renew_time),
                                                  float(cur.spec.lease_duration_seconds or self.lease_duration))
        action = next_action(self.identity, view, time.time())
        try:
            if action == "create":
                self.coord.create_namespaced_lease(self.namespace, self._body())
            elif action == "renew":
                body = self._body(cur.metadata.resource_version, cur.spec.lease_transitions or 0)
                body["spec"]["acquireTime"] = cur.spec.acquire_time
                self.coord.replace_namespaced_lease(self.name, self.namespace, body)
            elif action == "acquire":
                self.coord.replace_namespaced_lease(
                    self.name, self.namespace,
                    self._body(cur.metadata.resource_version, (cur.spec.lease_transitions or 0) + 1))
            else:
                return False
        except ApiException as e:
            if e.status in (409, 422):   # someone else won the race
                return False
            raise
        return True

    def run(self) -> None:
        """Block: wait to lead, then keep renewing. Returns when leadership is lost or stopped."""
        while not self._stop.is_set():
            try:
                if self.try_once():
                    break
            except Exception as e:  # noqa: BLE001
                log.warning("lease acquire failed", error=str(e))
            self._stop.wait(self.retry_period)
        if self._stop.is_set():
            return
        log.info("became leader", event="leaderElected", identity=self.identity, lease=self.name)
        self.leading.set()
        self.on_started_leading()
        last_renew = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(self.retry_period)
            try:
                if self.try_once():
                    last_renew = time.monotonic()
                    continue
                log.error("lease taken by another replica", identity=self.identity)
                break
            except Exception as e:  # noqa: BLE001
                log.warning("lease renew failed", error=str(e))
            if time.monotonic() - last_renew > self.renew_deadline:
                log.error("could not renew the lease in time", identity=self.identity)
                break
        self.leading.clear()
        self.on_stopped_leading()

    def stop(self) -> None:
        self._stop.set()
