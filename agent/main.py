"""`metalxdp agent`: the DaemonSet's process (one per node, hostNetwork; see agent/node.py), and
its two helpers: `metalxdp agent status` (what a running agent is doing, from its monitoring
port's /status) and `metalxdp agent xdp` (the XDP dataplane alone, agent/xdp_cli.py)."""
from __future__ import annotations

import os
import signal
import json
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import click
from prometheus_client import CollectorRegistry

from metalxdp import log as mlog
from metalxdp.kube import KubeconfigError, rest_client
from metalxdp.runtime import tune_interpreter


DEFAULT_STATUS_ENDPOINT = "http://127.0.0.1:7472"


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--node-name", envvar="METALLB_NODE_NAME",
              help="This node's name (the Node object); in a DaemonSet from spec.nodeName. Required to run the agent.")
@click.option("--kubeconfig", envvar="KUBECONFIG",
              help="Kubeconfig (its current context; token, tokenFile or client certificate; exec and "
                   "auth-provider plugins are not run). In a pod, leave it out: the service account is used.")
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
@click.option("--crash-hold-ms", default=15000, show_default=True, type=click.IntRange(min=0),
              help="When another node's agent dies but the node still answers (its TCP gossip port "
                   "refuses: a crash, an OOM kill), keep its VIPs there this long for the restarted agent "
                   "instead of moving them away and back; its kernel keeps forwarding (0: take over at once).")
@click.option("--ml-bind-port", default=7946, show_default=True, type=int,
              help="Membership (gossip) port: UDP for the protocol, TCP for the fallback probes (as memberlist).")
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
@click.pass_context
def agent(ctx, node_name, kubeconfig, namespace, lb_class, xdp_mode, bpffs_dir, detach_on_exit, liveness_max_age_ms,
          crash_hold_ms, ml_bind_port, ml_secret_name, ignore_exclude_lb, handoff_quiet_s, handoff_max_s, metrics_port, metrics_host, bgp,
          workdir, pod_name, log_level):
    """Run the node agent: answer ARP/NDP for the VIPs this node owns (XDP), advertise VIPs
    over BGP (ExaBGP) with BFD, and export per-VIP traffic counters.

    The options run the agent (`metalxdp agent --node-name node1`). The subcommands are
    helpers: `metalxdp agent status` shows what a running agent is doing (BGP sessions, BFD
    peers, membership, XDP, per-VIP counters, why each Service is or is not announced);
    `metalxdp agent xdp` runs the XDP dataplane alone."""
    if ctx.invoked_subcommand is not None:
        return
    if not node_name:
        raise click.UsageError("Missing option '--node-name' (or $METALLB_NODE_NAME): the agent needs its node's name.")
    mlog.setup(log_level)
    tune_interpreter()
    log = mlog.get_logger("agent")
    try:   # before XDP attaches: a kubeconfig that cannot work stops the agent with nothing changed
        api = rest_client(kubeconfig)
    except KubeconfigError as e:
        log.error(f"no API server to talk to: {e}", event="kubeconfigInvalid")
        raise SystemExit(2)
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
                             bgp_workdir=Path(workdir), enable_bgp=bgp, pod_name=pod_name,
                             crash_hold_ms=crash_hold_ms)
    garp = GratuitousSender()
    node = Agent(api, settings, dp, garp, metrics, registry)
    registry.register(XDPCollector(node.xdp_counters))
    if dp is not None:
        registry.register(XDPStateCollector(dp.xdp_state))
    if metrics_port:
        from metalxdp.health import MonitoringServer
        MonitoringServer(metrics_port, metrics_host, registry, live=node.live, ready=node.ready,
                         status=node.status_document).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    log.info("agent started", node=node_name, xdp_mode=xdp_mode, bpffs_dir=bpffs_dir)
    stop.wait()
    mode = "leave"
    if dp is not None and not detach_on_exit:
        from .uninstall import RESTART, UNINSTALL, check as stop_check
        mode, why = stop_check(node.api, namespace, pod_name, node_name=node_name)
        if mode == UNINSTALL:   # nobody will adopt the program and maps: take them with us
            log.info("metalxdp is being uninstalled: detaching XDP and removing the pins",
                     event="uninstallCleanup", node=node_name, reason=why)
            dp.detach_on_exit = detach_on_exit = True
        elif mode == RESTART:
            log.info("pod replaced on this node: leaving as restarting, VIPs stay",
                     event="restartLeave", node=node_name, reason=why)
    log.info("agent stopping", node=node_name, detach=detach_on_exit, mode=mode)
    node.stop(planned=not detach_on_exit, restarting=mode == "restart")
    garp.close()
    if dp is not None:
        dp.close()
    sys.exit(0)


def fetch_status(endpoint: str, timeout: float = 5.0) -> dict:
    """GET ``endpoint``/status (an agent's monitoring port) as a dict; click errors say what failed."""
    url = endpoint.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise click.ClickException(f"{url}: HTTP {e.code}: {e.read().decode(errors='replace').strip()[:300]}")
    except (urllib.error.URLError, OSError) as e:
        raise click.ClickException(f"{url}: {getattr(e, 'reason', e)}; is the agent running, with --metrics-port "
                                   "on that port? Inside an agent pod the default endpoint works; from elsewhere pass "
                                   "--endpoint http://NODE-IP:7472")
    except ValueError as e:
        raise click.ClickException(f"{url}: not JSON ({e}); an agent older than `agent status`?")


@agent.command("status")
@click.option("--endpoint", default=DEFAULT_STATUS_ENDPOINT, show_default=True, envvar="METALXDP_AGENT_ENDPOINT",
              help="The agent's monitoring port (its --metrics-port). The default is right inside an agent pod "
                   "(hostNetwork) or on the node itself.")
@click.option("--json", "as_json", is_flag=True, help="Print the agent's /status document as JSON.")
@click.option("--timeout", default=5.0, show_default=True, type=float, help="Seconds to wait for the agent.")
def agent_status(endpoint, as_json, timeout):
    """Show what one node's agent is doing: its BGP sessions (as FRR's `show bgp summary`: peer,
    AS, state, uptime, prefixes sent), BFD peers (as `show bfd peers`: state, timers,
    diagnostic), membership (the members this node sees), XDP (program id, mode, interfaces,
    liveness gate), the per-VIP counters and, for every LoadBalancer Service, whether this node
    announces it and if not why (MetalLB's reason names: notOwner, noMatchingAdvertisement,
    noLocalEndpoints, ...).

    For the cluster-wide view (every Service, every node) use `metalxdp status`."""
    doc = fetch_status(endpoint, timeout)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from .status_report import format_agent_status
    click.echo(format_agent_status(doc), nl=False)


def _add_xdp() -> None:
    from .xdp_cli import xdp
    agent.add_command(xdp)


_add_xdp()
