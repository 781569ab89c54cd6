"""Run the XDP dataplane alone (tests, the restart test, debugging), inside the node's network
namespace:

    ip netns exec NODE python -m agent.xdp_cli --iface eth0 --vip 192.0.2.200 \
        --vip 2001:db8:0:1::200 --xdp-mode auto --bpffs-dir /sys/fs/bpf/metalxdp/NODE

It loads and attaches the program (or adopts the pinned one of the same version: answers
never stop across a restart), announces the VIPs (withdrawing pinned ones no longer asked
for), sends the gratuitous burst, refreshes the liveness heartbeat, logs JSON lines and runs
until SIGTERM/SIGINT. Only ``--detach-on-exit`` removes the program and its pins on exit.

``--pass-only`` instead attaches bpf/xdp_pass.c to the --iface interfaces and exits (the veth
peers of a lab need it for native XDP_TX).
"""
from __future__ import annotations

import ipaddress
import signal
import threading
import time

import click

from metalxdp.log import get_logger, setup

from .dataplane import DEFAULT_BPFFS_DIR, Dataplane, DataplaneError, attach_pass_program, interface_index
from .garp import GratuitousSender


@click.command("xdp")
@click.option("--iface", "ifaces", multiple=True, required=True, help="interface to answer on (repeatable)")
@click.option("--vip", "vips", multiple=True, help="VIP to announce on every --iface (repeatable)")
@click.option("--etp-local-misdirect", "misdirect", multiple=True,
              help="VIP (also given with --vip) whose Service is ETP=Local without a ready local endpoint")
@click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic"]), default="auto", show_default=True)
@click.option("--bpffs-dir", default=DEFAULT_BPFFS_DIR, show_default=True,
              help="where the program and maps are pinned (one directory per node)")
@click.option("--detach-on-exit", is_flag=True, help="detach and unpin on SIGTERM/SIGINT")
@click.option("--liveness-max-age-ms", type=int, default=0, show_default=True,
              help="stop answering when the heartbeat is older than this (0: never)")
@click.option("--heartbeat-ms", type=int, default=0,
              help="heartbeat period (default: a third of the max age, at most 1 s)")
@click.option("--garp/--no-garp", default=True, show_default=True, help="gratuitous burst on start")
@click.option("--stats-interval-s", type=float, default=0.0, help="log counters this often (0: never)")
@click.option("--pass-only", is_flag=True, help="attach an XDP_PASS program to --iface and exit")
@click.option("--bpf-cflag", "bpf_cflags", multiple=True,
              help="extra BPF cflag such as -DMAX_VIPS=8192 (a change rebuilds the pinned maps)")
@click.option("--log-level", default="info", show_default=True)
def xdp(ifaces, vips, misdirect, xdp_mode, bpffs_dir, detach_on_exit, liveness_max_age_ms, heartbeat_ms,
        garp, stats_interval_s, pass_only, bpf_cflags, log_level):
    """Run the metalxdp XDP dataplane on its own, in the current network namespace: load (or
    adopt the pinned) program, announce the --vip addresses on every --iface, refresh the
    liveness heartbeat, log JSON lines until SIGTERM. For tests, benchmarks and debugging;
    the agent does all this itself. `python -m agent.xdp_cli` is the same command."""
    setup(log_level)
    log = get_logger("agent")
    if pass_only:
        for ifname in ifaces:
            prog_id = attach_pass_program(ifname, "native" if xdp_mode != "generic" else "generic")
            log.info("XDP_PASS program attached", event="xdpPassAttached", ifname=ifname, prog_id=prog_id)
        return

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    wanted = {(str(ipaddress.ip_address(v)), interface_index(i)) for v in vips for i in ifaces}
    misdirected = {str(ipaddress.ip_address(v)) for v in misdirect}
    period = (heartbeat_ms or min(1000, max(50, liveness_max_age_ms // 3 or 1000))) / 1000

    try:
        dp = Dataplane(bpffs_dir, xdp_mode=xdp_mode, detach_on_exit=detach_on_exit,
                       liveness_max_age_ms=liveness_max_age_ms, cflags=bpf_cflags).open()
    except DataplaneError as e:
        log.error(str(e), event="xdpUnavailable")
        raise SystemExit(2)
    gratuitous = GratuitousSender()
    try:
        # Fill the maps first, attach last: an upgrade swaps programs with the VIPs in place.
        for ifname in ifaces:
            dp.set_interface(ifname)
        for ip, ifindex, _ in dp.announced():
            if (ip, ifindex) not in wanted:
                dp.withdraw(ip, ifindex)
                log.info("stale VIP withdrawn", event="serviceWithdrawn", ip=ip, ifindex=ifindex)
        for ip in sorted({ip for ip, _ in wanted}):
            for ifname in ifaces:
                dp.announce(ip, ifname, etp_local_misdirect=ip in misdirected)
        dp.heartbeat()
        modes = {ifname: dp.attach(ifname) for ifname in ifaces}
        if garp:
            for ip in sorted({ip for ip, _ in wanted}):
                for ifname in ifaces:
                    gratuitous.start(ip, ifname)
        log.info("dataplane running", event="xdpReady", adopted=dp.adopted, modes=modes,
                 vips=sorted({ip for ip, _ in wanted}), bpffs_dir=dp.bpffs_dir)
        next_stats = time.monotonic() + stats_interval_s
        while not stop.wait(period):
            dp.heartbeat()
            if stats_interval_s and time.monotonic() >= next_stats:
                next_stats += stats_interval_s
                log.info("counters", event="xdpCounters",
                         vips={f"{ip}%{ifx}": c for (ip, ifx), c in dp.counters().items()},
                         gratuitous_sent=gratuitous.sent(), **{"global": dp.global_counters()})
        log.info("stopping", event="xdpStopping", detach=detach_on_exit,
                 gratuitous_sent=gratuitous.sent())
    finally:
        gratuitous.close()
        dp.close()


if __name__ == "__main__":
    xdp()
