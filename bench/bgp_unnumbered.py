"""BGP unnumbered (BGPPeer interface) against FRR: time from the agent's start to Established and to
both VIP routes (IPv4 with an IPv6 next hop, RFC 8950) in the router's kernel.

Per trial a fresh lab: FRR (AS 64512, ``neighbor eth0 interface remote-as external``, running for
3 s before the node starts, so its RAs are periodic by then) and a node with only link-local
addresses on eth0. Then, timed from the start of the node's side (``Unnumbered`` + BGPSpeaker):
  router_found   the router's link-local known (its RA, or the kernel's neighbour table)
  established    FRR reports the eth0 neighbor Established
  routes         198.51.100.10/32 and 2001:db8:5::10/128 via our link-local in the router's kernel
Prints p50/p99/min/max and writes bench/results/bgp_unnumbered.json.
Usage: python bench/bgp_unnumbered.py [--trials 10]
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from prometheus_client import CollectorRegistry  # noqa: E402

from agent.bgp.advertise import Route  # noqa: E402
from agent.bgp.config_render import NodeAddresses  # noqa: E402
from agent.bgp.exabgp import BGPSpeaker  # noqa: E402
from agent.bgp.unnumbered import Unnumbered, resolve_peers  # noqa: E402
from benchstats import arg_parser, print_table, summary, write_json  # noqa: E402
from metalxdp.config.types import BGPPeer  # noqa: E402
from metalxdp.rig.frr import FRRRouter, RouterSpec, render_frr_conf  # noqa: E402
from metalxdp.rig.netns import Topology  # noqa: E402

import ipaddress  # noqa: E402

VIP4, VIP6 = "198.51.100.10/32", "2001:db8:5::10/128"
LIMIT = 30.0


def frr_conf() -> str:
    conf = render_frr_conf(RouterSpec(asn=64512, router_id="192.0.2.1", neighbors=()))
    head = " timers bgp 3 9\n"
    return conf.replace(head, head + " neighbor eth0 interface remote-as external\n"
                        " neighbor eth0 timers connect 1\n").replace(
        "  maximum-paths ibgp 8\n", "  maximum-paths ibgp 8\n  neighbor eth0 activate\n")


def via(router: FRRRouter, prefix: str) -> str:
    fam = "-6" if ":" in prefix else "-4"
    out = router.host.run(["ip", "-j", fam, "route", "show", prefix], check=False).stdout
    routes = json.loads(out or "[]")
    if not routes:
        return ""
    v = routes[0].get("via")
    return v.get("host", "") if isinstance(v, dict) else routes[0].get("gateway", "")


def trial(workdir: Path) -> dict:
    topo = Topology()
    router = None
    un = sp = None
    try:
        rh = topo.add_host("router", ipv4=["192.0.2.1/24"], forwarding=True)
        node = topo.add_host("node1")
        router = FRRRouter(rh, Path(tempfile.mkdtemp(prefix="metalxdp-frr-")))
        router.start(frr_conf())
        time.sleep(3.0)
        peer = BGPPeer("tor", 64513, 64512, None, hold_time=9.0, keepalive_time=3.0, interface="eth0")
        t0 = time.monotonic()
        un = Unnumbered(netns=node.netns)
        sp = BGPSpeaker(NodeAddresses("node1", None, None), workdir / "node1", netns=node.netns,
                        registry=CollectorRegistry())
        if un.wait_router("eth0", LIMIT) is None:
            raise RuntimeError("no router advertisement from FRR")
        found = time.monotonic() - t0
        ready, waiting = resolve_peers({"tor": peer}, un.links(["eth0"]))
        if waiting:
            raise RuntimeError(f"peer still waiting: {waiting}")
        ours = str(ready["tor"].source_address)
        sp.set_peers(ready.values())
        routes = frozenset({Route(ipaddress.ip_network(VIP4)), Route(ipaddress.ip_network(VIP6))})
        sp.set({"tor": routes}, {})
        est = got = None
        while time.monotonic() - t0 < LIMIT and got is None:
            if est is None:
                n = router.json("show bgp neighbors json") or {}
                if n.get("eth0", {}).get("bgpState") == "Established":
                    est = time.monotonic() - t0
            if via(router, VIP4) == ours and via(router, VIP6) == ours:
                got = time.monotonic() - t0
                est = est or got
            time.sleep(0.01)
        if got is None:
            raise RuntimeError("routes not in the router's kernel")
        return {"router_found_s": found, "established_s": est, "routes_s": got}
    finally:
        if sp:
            sp.close()
        if un:
            un.close()
        if router:
            router.stop()
        topo.destroy()


def main() -> None:
    ap = arg_parser(__doc__, "bgp_unnumbered")
    ap.add_argument("--trials", type=int, default=10)
    a = ap.parse_args()
    trials, failed = [], []
    for i in range(a.trials):
        with tempfile.TemporaryDirectory(prefix="mx-unnum-") as d:
            try:
                t = trial(Path(d))
                trials.append(t)
                print(f"trial {i + 1}: router {t['router_found_s']:.2f} s, Established "
                      f"{t['established_s']:.2f} s, routes {t['routes_s']:.2f} s", flush=True)
            except Exception as e:     # noqa: BLE001 - a failed trial is reported, not hidden
                failed.append(str(e))
                print(f"trial {i + 1}: FAILED: {e}", flush=True)
    rows = {k: summary([t[k] for t in trials], "s", 3) if trials else {"n": 0}
            for k in ("router_found_s", "established_s", "routes_s")}
    print_table("from the node's start", rows, "s", 3, 22, 7)
    write_json(Path(a.out), {"benchmark": "bgp_unnumbered", "host": platform.node(),
                             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "summary": rows, "trials": trials, "failed": failed})
    sys.exit(1 if failed or not trials else 0)


if __name__ == "__main__":
    main()
