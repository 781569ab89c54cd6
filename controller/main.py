"""`metalxdp controller`: the Deployment's process. Allocates LoadBalancer IPs (reconcile.py),
serves the validating/conversion webhook (webhook.py), exposes metrics, and elects a leader
through a Lease so several replicas can run."""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading

import click
from prometheus_client import CollectorRegistry

from metalxdp import log as mlog
from metalxdp.kube import ApiException, api_client
from metalxdp.runtime import tune_interpreter

from .leader import LeaderElector
from .memberlist_key import ensure_memberlist_secret
from .metrics import ControllerMetrics
from .reconcile import Controller


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in a pod the service account is used.")
@click.option("--namespace", default=lambda: os.environ.get("METALLB_NAMESPACE", "metallb-system"),
              show_default="metallb-system", help="Namespace of the metallb.io resources.")
@click.option("--lb-class", default=None, help="Only handle Services with this spec.loadBalancerClass "
              "(needs Kubernetes >= 1.21); without it, only Services with no class.")
@click.option("--metrics-port", default=9120, show_default=True, type=int, help="Monitoring port: /metrics, /healthz (liveness), /readyz (readiness); 0 disables.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="Address the metrics server binds.")
@click.option("--webhook-mode", type=click.Choice(["enabled", "disabled", "onlywebhook"]), default="enabled",
              show_default=True, help="Serve the validating and conversion webhooks (as MetalLB's flag).")
@click.option("--webhook-port", default=9443, show_default=True, type=int, help="HTTPS port of the webhook.")
@click.option("--webhook-host", default="0.0.0.0", show_default=True, help="Address the webhook binds.")
@click.option("--webhook-url", default=None, help="Register the webhook with this base URL instead of the "
              "in-cluster Service (the lab uses https://127.0.0.1:PORT).")
@click.option("--identity", default=lambda: os.environ.get("POD_NAME") or socket.gethostname() + f"-{os.getpid()}",
              help="Leader-election identity (default: pod name or host-pid).")
@click.option("--lease-duration", default=15.0, show_default=True, type=float,
              help="Lease duration in seconds; a dead leader is replaced after at most this long.")
@click.option("--ml-secret-name", envvar="METALLB_ML_SECRET_NAME", default="",
              help="Create this Secret in --namespace with a random membership key (key `secretkey`) when "
              "it is missing, as MetalLB's controller does; the agents read it. Empty: never create it.")
@click.option("--log-level", type=click.Choice(list(mlog.LEVELS)), default="info", show_default=True)
def controller(kubeconfig, namespace, lb_class, metrics_port, metrics_host, webhook_mode, webhook_port,
               webhook_host, webhook_url, identity, lease_duration, ml_secret_name, log_level) -> None:
    """Run the controller: allocate IPs to LoadBalancer Services from the IPAddressPools,
    validate metallb.io resources (webhook), export metrics. Safe to run several replicas."""
    mlog.setup(log_level)
    tune_interpreter()
    log = mlog.get_logger("controller")
    api = api_client(kubeconfig)
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    probes: dict = {}   # the Controller's checks once it exists; "starting" until then
    if metrics_port:
        from metalxdp.health import MonitoringServer
        MonitoringServer(metrics_port, metrics_host, registry,
                         live=lambda: probes["live"]() if "live" in probes else (True, "starting"),
                         ready=lambda: probes["ready"]() if "ready" in probes else (False, "starting")).start()
    stop = threading.Event()

    def _term(*_):
        stop.set()
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)

    if ml_secret_name:
        try:
            ensure_memberlist_secret(api, namespace, ml_secret_name)
        except ApiException as e:   # e.g. RBAC without create on secrets: the agents will say so
            log.warning("could not create the memberlist key", event="memberlistSecretFailed",
                        secret=f"{namespace}/{ml_secret_name}", status=e.status, error=str(e.reason))

    if webhook_mode != "disabled":
        from .webhook import start_webhook
        hook = start_webhook(api, namespace, webhook_host, webhook_port, webhook_url)
        probes["webhook"] = hook.readiness
    if webhook_mode == "onlywebhook":
        probes["live"] = lambda: (True, "ok")
        probes["ready"] = probes.get("webhook", lambda: (True, "ok"))
        stop.wait()
        return

    ctl = Controller(api, namespace, lb_class, metrics)
    probes["live"] = ctl.live

    def ready():   # synced, and (when it runs) the webhook serves with its CA injected
        ok, why = ctl.ready()
        if ok and "webhook" in probes:
            ok, why = probes["webhook"]()
            why = why if ok else f"webhook: {why}"
        return ok, why
    probes["ready"] = ready
    ctl.start_informers()
    threading.Thread(target=ctl.run, name="reconcile", daemon=True).start()

    def lost():
        # never keep writing without the lease: exit, the Deployment restarts us as a follower
        log.error("lost leadership: exiting", event="leaderLost", identity=identity)
        os._exit(1)

    elector = LeaderElector(api, namespace, "metalxdp-controller", identity,
                            lease_duration=lease_duration, renew_deadline=lease_duration * 2 / 3,
                            retry_period=max(0.2, lease_duration / 7.5),
                            on_started_leading=ctl.start_leading, on_stopped_leading=lost)
    t = threading.Thread(target=elector.run, name="leader", daemon=True)
    t.start()
    log.info("controller started", identity=identity, namespace=namespace, lb_class=lb_class)
    stop.wait()
    log.info("controller stopping")
    elector.on_stopped_leading = lambda: None
    elector.stop()
    ctl.stop()
    sys.exit(0)
