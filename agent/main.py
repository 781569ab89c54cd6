"""`metalxdp agent`: the DaemonSet's process (one per node, hostNetwork). See agent/node.py."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click
from prometheus_client import CollectorRegistry

from metalxdp import log as mlog
from metalxdp.kube import api_client


@click.command()
@click.option("--node-name", envvar="METALLB_NODE_NAME", required=True,
              help="This node's name (the Node object); in a DaemonSet from spec.nodeName.")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in a pod the service account is used.")
@click.option("--namespace", default=lambda: os.environ.get("METALLB_NAMESPACE", "metallb-system"),
              show_default="metallb-system", help="Namespace of the metallb.io resources and the memberlist Secret.")
@click.option("--lb-class", default=None, help="Only handle Services with this spec.loadBalancerClass.")
@click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic", "off"]), default="auto", show_default=True,
              help="auto: native XDP, falling back to generic (SKB) mode; off: no L2 answering (BGP only).")
@click.option("--bpffs-dir", default="/sys/fs/bpf/metalxdp", show_default=True,
              help="Where the XDP program and maps are pinned (survive agent restarts).")
@click.option("--detach-on-exit", is_flag=True, help="On exit, detach the XDP program and remove its pins "
              "(default: keep answering so a restart is hitless).")
@click.option("--liveness-max-age-ms", default=400, show_default=True, type=int,
              help="Split-brain guard: XDP stops answering this long after the agent stops refreshing it (0: off).")
@click.option("--ml-bind-port", default=7946, show_default=True, type=int, help="Membership (gossip) UDP port.")
@click.option("--ml-secret-name", default="memberlist", show_default=True,
              help="Secret (key 'secretkey') whose value authenticates membership packets.")
@click.option("--ignore-exclude-lb", is_flag=True,
              help="Announce from nodes labelled node.kubernetes.io/exclude-from-external-load-balancers too.")
@click.option("--handoff-quiet-s", default=2.0, show_default=True, type=float,
              help="When a VIP moves to another live node, keep answering probes sent to this node's MAC "
                   "(clients with stale caches) until its traffic here is quiet this long.")
@click.option("--handoff-max-s", default=30.0, show_default=True, type=float,
              help="Longest such handoff; 0 disables it (withdraw at once, as MetalLB).")
@click.option("--metrics-port", default=7472, show_default=True, type=int, help="Monitoring port: /metrics, /healthz (liveness), /readyz (readiness); 0: off.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option("--bgp/--no-bgp", default=True, show_default=True, help="Speak BGP (ExaBGP) to the BGPPeers.")
@click.option("--workdir", default="/run/metalxdp/agent", show_default=True, type=click.Path(),
              help="Private state (ExaBGP config, logs, API socket).")
@click.option("--pod-name", envvar="METALLB_POD_NAME", default=None,
              help="This agent's pod (in --namespace): owner of the ServiceL2Status/ServiceBGPStatus objects it "
              "writes, so deleting the pod deletes them (the DaemonSet sets it from metadata.name).")
@click.option("--log-level", type=click.Choice(list(mlog.LEVELS)), default="info", show_default=True)
def agent(node_name, kubeconfig, namespace, lb_class, xdp_mode, bpffs_dir, detach_on_exit, liveness_max_age_ms,
          ml_bind_port, ml_secret_name, ignore_exclude_lb, handoff_quiet_s, handoff_max_s, metrics_port, metrics_host, bgp,
          workdir, pod_name, log_level):
    """Run the node agent: answer ARP/NDP for the VIPs this node owns (XDP), advertise VIPs
    over BGP (ExaBGP) with BFD, and export per-VIP traffic counters."""
    mlog.setup(log_level)
    log = mlog.get_logger("agent")
    from .garp import GratuitousSender
    from .metrics import AgentMetrics, XDPCollector, XDPStateCollector
    from .node import Agent, AgentSettings

    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    dp = None
    if xdp_mode != "off":
        from .dataplane import Dataplane, DataplaneError
        try:
            dp = Dataplane(bpffs_dir, xdp_mode=xdp_mode, detach_on_exit=detach_on_exit,
                           liveness_max_age_ms=liveness_max_age_ms).open()
        except DataplaneError as e:
            log.error(str(e), event="xdpUnavailable")
            raise SystemExit(2)
    settings = AgentSettings(node_name, namespace, lb_class, ignore_exclude_lb, ml_bind_port, ml_secret_name,
                             liveness_max_age_ms, handoff_quiet_s=handoff_quiet_s, handoff_max_s=handoff_max_s,
                             bgp_workdir=Path(workdir), enable_bgp=bgp, pod_name=pod_name)
    garp = GratuitousSender()
    node = Agent(api_client(kubeconfig), settings, dp, garp, metrics, registry)
    registry.register(XDPCollector(node.xdp_counters))
    if dp is not None:
        registry.register(XDPStateCollector(dp.xdp_state))
    if metrics_port:
        from metalxdp.health import MonitoringServer
        MonitoringServer(metrics_port, metrics_host, registry, live=node.live, ready=node.ready).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    log.info("agent started", node=node_name, xdp_mode=xdp_mode, bpffs_dir=bpffs_dir)
    stop.wait()
    if dp is not None and not detach_on_exit:
        from .uninstall import check as uninstall_check
        gone, why = uninstall_check(node.api, namespace, pod_name)
        if gone:   # nobody will adopt the program and maps: take them with us
            log.info("metalxdp is being uninstalled: detaching XDP and removing the pins",
                     event="uninstallCleanup", node=node_name, reason=why)
            dp.detach_on_exit = detach_on_exit = True
    log.info("agent stopping", node=node_name, detach=detach_on_exit)
    node.stop(planned=not detach_on_exit)
    garp.close()
    if dp is not None:
        dp.close()
    sys.exit(0)
