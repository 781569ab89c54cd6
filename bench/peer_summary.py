"""Every metalxdp-vs-MetalLB row of ``make bench-peer`` in one table, from the JSON the peer
benchmarks wrote (bench/results/peer_*.json): each implementation's figure with its spread,
the ratio, and which way is better. Reads only; run after the benchmarks (``make bench-peer``
does), or alone to print the table of the last run. A row whose file or field is missing says
so instead of a figure.

Usage: python bench/peer_summary.py [--results bench/results] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(results: Path, name: str):
    try:
        return json.loads((results / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _s(row: dict, unit: str = "s", digits: int = 3) -> str:
    """p50 (min-max) of a benchstats.summary dict."""
    p50, lo, hi = row[f"p50_{unit}"], row[f"min_{unit}"], row[f"max_{unit}"]
    return f"p50 {p50:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f}, n {row['n']})"


def _ratio(ours: float, theirs: float, lower_is_better: bool = True) -> str:
    """MetalLB's figure over ours when lower is better (>1: metalxdp better), else ours over
    MetalLB's; with the verdict."""
    if not ours or not theirs:
        return "n/a"
    r = theirs / ours if lower_is_better else ours / theirs
    verdict = "metalxdp better" if r > 1.02 else "metalxdp behind" if r < 0.98 else "tie"
    return f"{r:.2f}x ({verdict})"


def rows(results: Path) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []

    def missing(what: str, name: str) -> None:
        out.append((what, f"not run ({name}.json missing or without this field)", "", ""))

    l2 = _load(results, "peer_l2_failover")
    try:
        a, b = l2["summary"]["metalxdp"], l2["summary"]["metallb"]
        out.append(("L2 failover: cable cut -> first success", _s(a), _s(b), _ratio(a["p50_s"], b["p50_s"])))
    except (TypeError, KeyError):
        missing("L2 failover", "peer_l2_failover")
    try:
        for f, what in (("all_next_hops_s", "BGP: Service created -> route with all next hops"),
                        ("withdrawn_s", "BGP: Service deleted -> route gone"),
                        ("first_update_s", "BGP: created -> first node's UPDATE at the router"),
                        ("last_withdraw_update_s", "BGP: deleted -> last node's withdrawing UPDATE")):
            a, b = l2["bgp"]["metalxdp"].get(f), l2["bgp"]["metallb"].get(f)
            if a and b:
                out.append((what, _s(a), _s(b), _ratio(a["p50_s"], b["p50_s"])))
    except (TypeError, KeyError):
        missing("BGP announce/withdraw", "peer_l2_failover")
    for key, what in (("kills", "SIGKILL of the announcer under 20 req/s: requests lost"),
                      ("kills_fresh_arp", "the same, client without an ARP entry: requests lost")):
        try:
            a, b = l2[key]["metalxdp"], l2[key]["metallb"]
            if a.get("trials") and b.get("trials"):
                out.append((what, f"{a['failed']} of {a['requests']} ({a['trials']} kills)",
                            f"{b['failed']} of {b['requests']} ({b['trials']} kills)",
                            _ratio(a["failed"] / a["requests"], b["failed"] / b["requests"])
                            if a["failed"] and b["failed"] else "tie (none lost)" if not (a["failed"] or b["failed"])
                            else "metalxdp lost none" if not a["failed"] else "MetalLB lost none (metalxdp behind)"))
        except (TypeError, KeyError, ZeroDivisionError):
            missing(what, "peer_l2_failover")
    try:
        a, b = l2["rollouts"]["metalxdp"], l2["rollouts"]["metallb"]
        fmt = lambda v: (f"{sum(r['failed'] for r in v)} of {sum(r['requests'] for r in v)} failed, "  # noqa: E731
                         f"VIP moves {[r['vip_moves'] for r in v]}")
        out.append(("DaemonSet rollout restart under 20 req/s", fmt(a), fmt(b), ""))
    except (TypeError, KeyError):
        missing("rollout restart", "peer_l2_failover")
    try:
        for what, field in (("RSS per node (the pod's processes, summed)", "rss_mb"),
                            ("PSS per node (shared pages split)", "pss_mb")):
            mem = l2.get("footprint_memory") or {}
            if "metalxdp" not in mem or "metallb" not in mem:
                if field == "rss_mb":   # runs before the PSS detail: the RSS sums only
                    a, b = l2["footprint_rss_mb"]["metalxdp"], l2["footprint_rss_mb"]["metallb"]
                    va, vb = list(a.values()), list(b.values())
                else:
                    continue
            else:
                va = [m[field] for m in mem["metalxdp"].values()]
                vb = [m[field] for m in mem["metallb"].values()]
            out.append((what, f"{min(va):.1f}-{max(va):.1f} MB", f"{min(vb):.1f}-{max(vb):.1f} MB",
                        _ratio(statistics.median(va), statistics.median(vb))))
    except (TypeError, KeyError):
        missing("memory per node", "peer_l2_failover")

    fl = _load(results, "peer_arp_flood")
    try:
        a, b = fl["summary"]["max"]["metalxdp"], fl["summary"]["max"]["metallb"]
        out.append(("ARP flood at the sender's top rate: share answered",
                    f"{a['answered_share_median']:.2%} ({a['answered_share_range'][0]:.2%}-{a['answered_share_range'][1]:.2%})",
                    f"{b['answered_share_median']:.2%} ({b['answered_share_range'][0]:.2%}-{b['answered_share_range'][1]:.2%})",
                    _ratio(a["answered_share_median"], b["answered_share_median"], lower_is_better=False)))
        out.append(("ARP flood: responder CPU per reply",
                    f"{a['cpu_ns_per_reply_median']} ns ({a['cpu_ns_per_reply_range'][0]}-{a['cpu_ns_per_reply_range'][1]})",
                    f"{b['cpu_ns_per_reply_median']} ns ({b['cpu_ns_per_reply_range'][0]}-{b['cpu_ns_per_reply_range'][1]})",
                    _ratio(a["cpu_ns_per_reply_median"], b["cpu_ns_per_reply_median"])))
        ia = [t["median"] for t in fl["idle_latency_us"]["metalxdp"]]
        ib = [t["median"] for t in fl["idle_latency_us"]["metallb"]]
        out.append(("ARP answer latency at idle (median per block)",
                    f"{statistics.median(ia):.0f} us ({min(ia):.0f}-{max(ia):.0f})",
                    f"{statistics.median(ib):.0f} us ({min(ib):.0f}-{max(ib):.0f})",
                    _ratio(statistics.median(ia), statistics.median(ib))))
    except (TypeError, KeyError, ValueError):
        missing("ARP flood", "peer_arp_flood")

    pc = _load(results, "peer_controller")
    try:
        s = pc["summary"]
        out.append(("Service created -> IP in status (single)", _s(s["metalxdp single"], "ms", 1),
                    _s(s["metallb single"], "ms", 1),
                    _ratio(s["metalxdp single"]["p50_ms"], s["metallb single"]["p50_ms"])))
        r = pc["burst_rate_per_s"]
        out.append((f"burst of {pc['burst']} Services: allocation rate", f"{r['metalxdp']}/s", f"{r['metallb']}/s",
                    _ratio(r["metalxdp"], r["metallb"], lower_is_better=False)))
        c = pc["cpu_ms_per_service"]
        out.append(("controller CPU per Service (burst)", f"{c['metalxdp']} ms", f"{c['metallb']} ms",
                    _ratio(c["metalxdp"], c["metallb"])))
    except (TypeError, KeyError):
        missing("controller", "peer_controller")

    ch = _load(results, "peer_controller_chaos")
    try:
        a, b = ch["metalxdp"], ch["metallb"]
        fmt = lambda v: (f"{v['kills']} kills: duplicate IPs {v['duplicate_ips_seen']}, changed {v['changed_ips_seen']}; "  # noqa: E731
                         f"all allocated {v['all_allocated_after_last_start_s']} s after the last start")
        out.append(("controller SIGKILLed during a Service stream", fmt(a), fmt(b),
                    _ratio(a["all_allocated_after_last_start_s"], b["all_allocated_after_last_start_s"])))
    except (TypeError, KeyError):
        missing("controller chaos", "peer_controller_chaos")

    st = _load(results, "peer_bgp_stages")
    try:
        a, b = st["summary_ms"]["metalxdp"]["route_all"], st["summary_ms"]["metallb"]["route_all"]
        fmt = lambda v: f"p50 {v['p50']:.1f} ms ({v['min']:.1f}-{v['max']:.1f}, n {v['n']})"  # noqa: E731
        out.append(("process lab: BGP Service created -> all next hops", fmt(a), fmt(b), _ratio(a["p50"], b["p50"])))
    except (TypeError, KeyError):
        missing("BGP stages (process lab)", "peer_bgp_stages")

    mg = _load(results, "peer_migration")
    try:
        s = mg["summary"]
        out.append(("migration MetalLB -> metalxdp: L2 / BGP outage",
                    f"L2 {s['l2']['failed_requests']} requests failed; BGP longest outage {_s(s['bgp']['longest_outage'], 's', 1)}",
                    "", "IPs unchanged: " + str(all(t["ips_unchanged"] for t in mg["trials"]))))
    except (TypeError, KeyError):
        missing("migration", "peer_migration")

    va = _load(results, "peer_validation")
    try:
        out.append(("webhook validation table", ", ".join(f"{k}: {v}" for k, v in va["counts"].items()), "", ""))
    except (TypeError, KeyError):
        missing("validation", "peer_validation")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (for the README)")
    a = ap.parse_args()
    version = next((d.get("metallb_version") for n in ("peer_l2_failover", "peer_controller", "peer_validation")
                    if (d := _load(a.results, n))), "?")
    table = rows(a.results)
    if a.markdown:
        print(f"| row | metalxdp | MetalLB {version} | ratio |")
        print("|---|---|---|---|")
        for r in table:
            print("| " + " | ".join(r) + " |")
        return
    print(f"metalxdp vs MetalLB {version}, from {a.results}")
    for what, ours, theirs, ratio in table:
        print(f"- {what}\n    metalxdp: {ours}\n    MetalLB:  {theirs}" + (f"\n    ratio:    {ratio}" if ratio else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
