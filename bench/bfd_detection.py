"""BFD failure detection and transmit jitter, measured against a real FRR bfdd in lab namespaces.

For each timer setting (300 ms x 3 and 100 ms x 3 by default) it brings a session Up between
our BFDManager (node namespace) and FRR (router namespace), then cuts the node's cable N times
(``Topology.set_link(node, up=False)``, at a random phase of the transmit cycle) and records:

  frr_detect_s   cut -> FRR's "up -> down reason:control-expired" (bfdd debug log, microsecond
                 timestamps); theory: detect mult x interval minus the time since our last
                 packet, i.e. 0.6-0.9 s at 300 ms x 3 and 0.2-0.3 s at 100 ms x 3
  frr_overshoot_ms  FRR's down time minus (our last packet it captured + detection time): how
                 late FRR's own timer fires
  our_detect_s   cut -> our callback reporting Up -> Down (same theory, FRR's packets)

and, from a capture in the router namespace (AF_PACKET, kernel timestamps) while Up, the
intervals between our packets divided by the negotiated interval: RFC 5880 wants 0.75-1.0.
The cut time is taken right after the `ip link set ... down` command returns (its duration is
reported; the cut happens inside it, so detection figures may read up to that much short).

Prints a summary and writes bench/results/bfd.json.
Usage: python bench/bfd_detection.py [--cuts 20] [--timers 300x3,100x3] [--jitter-seconds 20]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.bfd.runner import BFDManager  # noqa: E402
from metalxdp.config.types import BFDProfile  # noqa: E402
from metalxdp.lab.bfd_rig import Sniffer, frr_add_peer, frr_peer, wait_until  # noqa: E402
from metalxdp.rig.frr import FRRRouter, RouterSpec, render_frr_conf  # noqa: E402
from metalxdp.rig.netns import Topology  # noqa: E402

ROUTER, NODE = "192.0.2.1", "192.0.2.11"
DOWN_RE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) .*state-change: \[.*peer:"
                     + re.escape(NODE) + r" .*\] up -> down reason:(\S+)")


def frr_down_times(log: Path) -> list[float]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = DOWN_RE.match(line)
        if m:
            out.append(datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S.%f").timestamp())
    return out


def summary(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)
    return {"n": len(s), "min": s[0], "p50": statistics.median(s),
            "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1],
            "mean": statistics.fmean(s), "stdev": statistics.pstdev(s)}


def histogram(xs: list[float], lo: float, hi: float, bins: int) -> list[dict]:
    width = (hi - lo) / bins
    counts = [0] * bins
    below = above = 0
    for x in xs:
        if x < lo:
            below += 1
        elif x >= hi:
            above += 1
        else:
            counts[int((x - lo) / width)] += 1
    rows = [{"from": round(lo + i * width, 4), "to": round(lo + (i + 1) * width, 4), "count": c}
            for i, c in enumerate(counts)]
    return [{"from": None, "to": lo, "count": below}] + rows + [{"from": hi, "to": None, "count": above}]


def run_setting(topo: Topology, frr: FRRRouter, node_ns: str, interval_ms: int, mult: int,
                cuts: int, jitter_s: float) -> dict:
    frr_add_peer(frr, NODE, ROUTER, rx=interval_ms, tx=interval_ms, mult=mult)
    events: list[tuple[float, str, str]] = []
    lock = threading.Lock()

    def on_change(peer, old, new):
        with lock:
            events.append((time.time(), old, new))

    profile = BFDProfile("bench", receive_interval_ms=interval_ms, transmit_interval_ms=interval_ms,
                         detect_multiplier=mult)
    log = frr.workdir / "all.log"
    res = {"interval_ms": interval_ms, "detect_multiplier": mult, "cuts": []}
    with BFDManager(on_state_change=on_change, netns=node_ns) as bfd:
        bfd.add_session(ROUTER, NODE, profile)

        def settled():
            p = frr_peer(frr, NODE)
            return (p and p["status"] == "up" and p["remote-transmit-interval"] == interval_ms
                    and bfd.states().get(ROUTER) == "Up"
                    and bfd.sessions()[ROUTER].tx_interval_ms == interval_ms)

        wait_until("session Up at the bench timers", settled, 20)
        # ---- transmit jitter while Up ----
        with Sniffer(frr.host.netns) as sniff:
            time.sleep(jitter_s)
        ours = sorted(c.ts for c in sniff.from_(NODE) if c.packet.state.label == "Up")
        ratios = [(b - a) * 1000 / interval_ms for a, b in zip(ours, ours[1:])]
        res["tx_jitter"] = {"packets": len(ours), "ratio_to_interval": summary(ratios),
                            "outside_0.75_1.0": sum(1 for r in ratios if r < 0.75 or r > 1.0),
                            "histogram": histogram(ratios, 0.70, 1.05, 14)}
        # ---- link cuts ----
        for i in range(cuts):
            wait_until("session Up before the cut", settled, 30)
            time.sleep(0.5 + random.uniform(0, interval_ms / 1000))
            with Sniffer(frr.host.netns) as sniff:
                time.sleep(interval_ms / 1000 * 1.5)
                n_down = len(frr_down_times(log))
                with lock:
                    n_ev = len(events)
                t_before = time.time()
                topo.set_link("node1", up=False)
                t_cut = time.time()
                wait_until("FRR down", lambda: len(frr_down_times(log)) > n_down, 5, interval=0.01)
                wait_until("our side down", lambda: bfd.states().get(ROUTER) == "Down", 5, interval=0.01)
            frr_down = frr_down_times(log)[n_down]
            with lock:
                ours_down = [t for t, o, n in events[n_ev:] if (o, n) == ("Up", "Down")]
            last_rx = max(c.ts for c in sniff.from_(NODE) if c.ts <= t_cut)
            row = {"cut_cmd_ms": (t_cut - t_before) * 1000, "frr_detect_s": frr_down - t_cut,
                   "frr_overshoot_ms": (frr_down - last_rx - mult * interval_ms / 1000) * 1000,
                   "our_detect_s": (ours_down[0] - t_cut) if ours_down else None}
            res["cuts"].append(row)
            print(f"  {interval_ms} ms x {mult} cut {i + 1:2d}: FRR {row['frr_detect_s']*1000:6.1f} ms"
                  f"  ours {row['our_detect_s']*1000:6.1f} ms  (FRR timer late"
                  f" {row['frr_overshoot_ms']:5.1f} ms, ip cmd {row['cut_cmd_ms']:.1f} ms)", flush=True)
            topo.set_link("node1", up=True)
    res["frr_detect_s"] = summary([c["frr_detect_s"] for c in res["cuts"]])
    res["our_detect_s"] = summary([c["our_detect_s"] for c in res["cuts"] if c["our_detect_s"] is not None])
    res["frr_overshoot_ms"] = summary([c["frr_overshoot_ms"] for c in res["cuts"]])
    res["theory_s"] = [(mult - 1) * interval_ms / 1000, mult * interval_ms / 1000]
    frr.vtysh("configure terminal", "bfd", f"no peer {NODE} local-address {ROUTER}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--timers", default="300x3,100x3", help="comma list of <interval ms>x<mult>")
    ap.add_argument("--jitter-seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bfd.json"))
    a = ap.parse_args()
    settings = [tuple(int(x) for x in s.split("x")) for s in a.timers.split(",")]
    out = {"benchmark": "bfd_detection", "host": platform.node(), "python": platform.python_version(),
           "kernel": platform.release(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cuts_per_setting": a.cuts, "settings": []}
    with Topology() as topo:
        r = topo.add_host("router", ipv4=[f"{ROUTER}/24"], forwarding=True)
        node = topo.add_host("node1", ipv4=[f"{NODE}/24"])
        frr = FRRRouter(r, Path(tempfile.mkdtemp(prefix="metalxdp-frr-")))
        try:
            frr.start(render_frr_conf(RouterSpec(64500, ROUTER, neighbors=())))
            frr.vtysh("configure terminal", "log timestamp precision 6",
                      f"log file {frr.workdir}/all.log debugging", "debug bfd peer")
            for interval_ms, mult in settings:
                print(f"{interval_ms} ms x {mult}:", flush=True)
                res = run_setting(topo, frr, node.netns, interval_ms, mult, a.cuts, a.jitter_seconds)
                out["settings"].append(res)
        finally:
            frr.stop()
    print()
    for s in out["settings"]:
        f, o, j = s["frr_detect_s"], s["our_detect_s"], s["tx_jitter"]["ratio_to_interval"]
        print(f"{s['interval_ms']} ms x {s['detect_multiplier']} (theory {s['theory_s'][0]:.1f}-"
              f"{s['theory_s'][1]:.1f} s), {f['n']} cuts:")
        print(f"  FRR detects in  min {f['min']*1000:.0f}  p50 {f['p50']*1000:.0f}  p90 {f['p90']*1000:.0f}"
              f"  max {f['max']*1000:.0f} ms")
        print(f"  we detect in    min {o['min']*1000:.0f}  p50 {o['p50']*1000:.0f}  p90 {o['p90']*1000:.0f}"
              f"  max {o['max']*1000:.0f} ms")
        fo = s["frr_overshoot_ms"]
        print(f"  FRR's timer fires {fo['p50']:.1f} ms (p50) / {fo['max']:.1f} ms (max) after the "
              f"detection time since our last packet")
        print(f"  our TX interval / negotiated: min {j['min']:.3f} p50 {j['p50']:.3f} max {j['max']:.3f}"
              f" over {s['tx_jitter']['packets']} packets, {s['tx_jitter']['outside_0.75_1.0']} outside 0.75-1.0")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
