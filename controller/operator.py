"""`metalxdp operator`: the metalxdp counterpart of metallb-operator. Serves the ``MetalLB``
custom resource (metallb.io/v1beta1) of its namespace: renders the controller Deployment and the
speaker (agent) DaemonSet from it (``operator_render``, pure), keeps them as rendered, reports
Available/Progressing/Degraded conditions, and removes them when the CR goes.

* One instance: the oldest MetalLB (creation time, then name) is active; any other gets
  ``Degraded=True`` reason ``MultipleInstances`` naming the active one, and is otherwise ignored.
* Drift: the workloads carry a hash of what was rendered, and the operator remembers the
  ``metadata.generation`` of its own last write; a CR edit changes the hash, a hand edit of the
  Deployment/DaemonSet bumps the generation; either way the rendering is written back.
* Deletion: the workloads are owned by the CR (ownerReferences: the garbage collector removes
  them) and the operator also deletes them itself when no MetalLB is left, so they go even
  where the garbage collector is slow or the ownerReference was edited away. No finalizer: a
  CR deleted while the operator is down is still cleaned up by the garbage collector.
* It does not create RBAC (see deploy/operator/rbac.yaml); it creates the ``memberlist`` Secret
  (random 128-byte key) when it is missing.
* Status comes from the workloads' status fields only. Where no deployment/daemonset controller
  or kubelet runs (the test API server) those never fill: Progressing=True, Available=False.

Reconciliation is level-based: any event (MetalLB, Deployment, DaemonSet) wakes one loop that
recomputes everything from the API server's current state; a resync every 30 s catches the rest.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import click

from metalxdp import log as mlog
from metalxdp.kube import MERGE_PATCH, ApiException, api_client, call_json, client, get_json
from metalxdp.watch import Informer

from . import operator_render as render
from .leader import LeaderElector
from .memberlist_key import ensure_memberlist_secret

log = mlog.get_logger("operator")

RESYNC_SECONDS = 30.0


class Operator:
    def __init__(self, api: client.ApiClient, namespace: str, image: str = render.DEFAULT_IMAGE):
        self.api, self.namespace, self.image = api, namespace, image
        self._wake = threading.Event()
        self._stop = threading.Event()
        # (kind, name) -> metadata.generation of our last create/replace
        self._written_generation: dict[tuple[str, str], int] = {}
        kick = lambda typ, obj: self._wake.set()  # noqa: E731
        managed = f"app.kubernetes.io/managed-by={render.MANAGED_BY}"
        ns = namespace
        self.metallbs = Informer(api, f"/apis/metallb.io/v1beta1/namespaces/{ns}/metallbs", kick, optional=True)
        self.informers = [
            self.metallbs,
            Informer(api, f"/apis/apps/v1/namespaces/{ns}/deployments", kick, label_selector=managed),
            Informer(api, f"/apis/apps/v1/namespaces/{ns}/daemonsets", kick, label_selector=managed),
        ]
        self.reconciles = 0
        self.last_error: Optional[str] = None

    # ---- paths (plain JSON in and out: metalxdp.kube.call_json / get_json) --------------
    @staticmethod
    def _workload_path(kind: str, namespace: str, name: Optional[str] = None) -> str:
        plural = {"Deployment": "deployments", "DaemonSet": "daemonsets"}[kind]
        return f"/apis/apps/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    def _metallb_path(self, name: str) -> str:
        return f"/apis/metallb.io/v1beta1/namespaces/{self.namespace}/metallbs/{name}"

    # ---- pieces of a reconcile -----------------------------------------------------------
    def ensure_memberlist_secret(self) -> None:
        ensure_memberlist_secret(self.api, self.namespace)

    def sync_workload(self, desired: dict) -> dict:
        """Create ``desired`` or put it back; returns the object as the server has it."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        key = (kind, name)
        current = get_json(self.api, self._workload_path(kind, self.namespace, name))
        if render.in_sync(current, desired, self._written_generation.get(key)):
            return current
        if current is None:
            out = call_json(self.api, "POST", self._workload_path(kind, self.namespace), desired)
            log.info("created", event="workloadCreated", kind=kind, name=name)
        else:
            out = call_json(self.api, "PUT", self._workload_path(kind, self.namespace, name),
                             render.for_update(current, desired))
            if out["metadata"].get("generation") != current["metadata"].get("generation"):
                log.info("wrote the rendered workload back", event="workloadUpdated", kind=kind, name=name,
                         generation=out["metadata"].get("generation"))
        self._written_generation[key] = out["metadata"].get("generation")
        return out

    def delete_workloads(self) -> None:
        for kind, name in (("Deployment", render.CONTROLLER_NAME), ("DaemonSet", render.AGENT_NAME)):
            cur = get_json(self.api, self._workload_path(kind, self.namespace, name))
            self._written_generation.pop((kind, name), None)
            if cur is None:
                continue
            if (cur["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != render.MANAGED_BY:
                continue   # installed by hand (kubectl apply -k): not ours to remove
            try:
                call_json(self.api, "DELETE", self._workload_path(kind, self.namespace, name),
                           {"propagationPolicy": "Background"})
                log.info("deleted: no MetalLB instance left", event="workloadDeleted", kind=kind, name=name)
            except ApiException as e:
                if e.status != 404:
                    raise

    def set_conditions(self, cr: dict, conds: list[render.Condition]) -> None:
        previous = (cr.get("status") or {}).get("conditions")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new = render.status_conditions(conds, previous, cr["metadata"].get("generation"), now)
        if render.same_conditions(previous, new):
            return
        try:
            call_json(self.api, "PATCH", self._metallb_path(cr["metadata"]["name"]) + "/status",
                       {"status": {"conditions": new}}, content_type=MERGE_PATCH)
        except ApiException as e:
            if e.status != 404:   # deleted meanwhile
                raise

    def reconcile(self) -> None:
        self.reconciles += 1
        active, ignored = render.select_active(self.metallbs.items())
        for cr in ignored:
            self.set_conditions(cr, render.multiple_instances(active))
        if active is None:
            self.delete_workloads()
            return
        # re-read: the informer's copy may lag our own status writes
        fresh = get_json(self.api, self._metallb_path(active["metadata"]["name"]))
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            self._wake.set()
            return
        error, dep, ds = None, None, None
        try:
            self.ensure_memberlist_secret()
            dep = self.sync_workload(render.owned(render.render_controller(fresh, namespace=self.namespace,
                                                                           image=self.image), fresh))
            ds = self.sync_workload(render.owned(render.render_agent(fresh, namespace=self.namespace,
                                                                     image=self.image), fresh))
        except ApiException as e:
            if e.status == 409:   # raced with another writer: look again
                self._wake.set()
                return
            error = f"{e.status} {e.reason}: {_api_message(e)}"
            log.error("sync failed", error=error)
        self.set_conditions(fresh, render.workload_conditions(dep, ds, error))

    # ---- loop ------------------------------------------------------------------------------
    def start_informers(self, timeout: float = 60) -> None:
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            inf.wait_synced(timeout)

    def run(self) -> None:
        backoff = 0.2
        self._wake.set()
        while not self._stop.is_set():
            self._wake.wait(RESYNC_SECONDS)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.reconcile()
                self.last_error, backoff = None, 0.2
            except Exception as e:  # noqa: BLE001 - API unreachable, bad object: retry
                self.last_error = str(e)
                log.warning("reconcile failed; retrying", error=str(e), retry_in=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)
                self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for inf in self.informers:
            inf.stop()


def _api_message(e: ApiException) -> str:
    try:
        return json.loads(e.body).get("message", "")[:500]
    except Exception:  # noqa: BLE001
        return str(e.body)[:500]


def _serve_health(port: int, healthy) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = self.path.startswith("/healthz") and healthy()
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok\n" if ok else b"unhealthy\n")

        def log_message(self, *args):
            pass
    srv = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=srv.serve_forever, name="health", daemon=True).start()


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in a pod the service account is used.")
@click.option("--namespace", default=lambda: os.environ.get("METALLB_NAMESPACE", render.DEFAULT_NAMESPACE),
              show_default=render.DEFAULT_NAMESPACE, help="Namespace of the MetalLB CR and of what it deploys.")
@click.option("--image", default=render.DEFAULT_IMAGE, show_default=True,
              help="Image of the controller and speaker it renders (a CR's spec.image wins).")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True,
              help="Only the holder of Lease metalxdp-operator writes (safe rolling updates).")
@click.option("--identity", default=lambda: os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
              help="Leader-election identity (default: pod name or host-pid).")
@click.option("--health-port", default=0, type=int, help="Serve /healthz on this port; 0 disables.")
@click.option("--log-level", type=click.Choice(list(mlog.LEVELS)), default="info", show_default=True)
def operator(kubeconfig, namespace, image, leader_elect, identity, health_port, log_level) -> None:
    """Run the operator: deploy and keep in sync the controller and the speaker from the
    MetalLB custom resource of NAMESPACE (one instance supported)."""
    mlog.setup(log_level)
    api = api_client(kubeconfig)
    op = Operator(api, namespace, image)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def start() -> None:
        op.start_informers()
        threading.Thread(target=op.run, name="reconcile", daemon=True).start()
        log.info("operator started", namespace=namespace, image=image, identity=identity)

    if health_port:
        _serve_health(health_port, lambda: not stop.is_set())
    if leader_elect:
        def lost():
            log.error("lost leadership: exiting", event="leaderLost", identity=identity)
            os._exit(1)
        elector = LeaderElector(api, namespace, "metalxdp-operator", identity,
                                # informers sync off the elector's thread: renewals must not wait
                                on_started_leading=lambda: threading.Thread(target=start, daemon=True).start(),
                                on_stopped_leading=lost)
        threading.Thread(target=elector.run, name="leader", daemon=True).start()
    else:
        elector = None
        start()
    stop.wait()
    log.info("operator stopping")
    if elector:
        elector.on_stopped_leading = lambda: None
        elector.stop()
    op.stop()
    sys.exit(0)
