"""Per-packet cost of bpf/xdp_vip.c, measured by the kernel (BPF_PROG_TEST_RUN ``duration``).

Paths: ARP request -> reply (XDP_TX), NS -> NA (XDP_TX, frame grown by 8 bytes, checksum),
IPv4 to a VIP -> counted and passed (XDP_PASS), plus a non-VIP pass for reference.

The catch: with ``repeat > 1`` the kernel runs the program again on the same buffer, so a
program that rewrote a request into a reply then sees its own reply (an ARP reply is passed
after a few loads, an NA is treated as traffic): ``repeat = 1e6`` on a reply path measures the
cheap "reply of a reply" path, not the reply path. So:

- idempotent paths (counted pass, non-VIP pass): ``repeat = 1_000_000`` in one call, the kernel's
  average; repeated ROUNDS times for the spread;
- reply paths: ``repeat = 1`` called SINGLE_RUNS times (each call copies a fresh request in).
  With repeat = 1 the kernel's figure includes one ``ktime_get_ns()`` and the loop around the
  program; the same measurement of bpf/xdp_pass.c (returns XDP_PASS, nothing else) gives that
  fixed overhead, which is subtracted: ``net = median(ours) - median(xdp_pass)``.

Writes bench/results/xdp_prog_ns.json.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import packets as P  # noqa: E402
from agent.dataplane import BPF_SRC_DIR, Dataplane, prog_test_run  # noqa: E402

REPEAT = 1_000_000
ROUNDS = 7
SINGLE_RUNS = 20_000
LO = 1
OUR_MAC = P.mac_bytes("02:00:5e:00:00:01")
CLIENT_MAC = P.mac_bytes("02:00:5e:00:00:aa")
VIP4, VIP6 = "192.0.2.200", "2001:db8:0:1::200"
TARGET_ARP_NS = 60.0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def single_runs(fd, frame, expect):
    out = []
    for _ in range(SINGLE_RUNS):
        r = prog_test_run(fd, frame, LO, 1)
        assert r.verdict == expect, r.verdict_name
        out.append(r.duration_ns)
    return out


def main() -> dict:
    import bcc
    dp = Dataplane(None).open()
    dp.set_interface(LO, OUR_MAC)
    dp.announce(VIP4, LO)
    dp.announce(VIP6, LO)
    passb = bcc.BPF(src_file=str(BPF_SRC_DIR / "xdp_pass.c").encode())
    pass_fd = passb.load_func(b"xdp_pass", bcc.BPF.XDP).fd

    arp = P.arp_request(CLIENT_MAC, "192.0.2.100", VIP4)
    ns = P.neighbor_solicit(CLIENT_MAC, "2001:db8:0:1::100", VIP6)
    udp_vip = P.ipv4_udp(CLIENT_MAC, OUR_MAC, "192.0.2.100", VIP4)
    udp_other = P.ipv4_udp(CLIENT_MAC, OUR_MAC, "192.0.2.100", "192.0.2.201")

    results: dict = {"kernel": platform.release(), "cpus": os.cpu_count(), "repeat": REPEAT,
                     "rounds": ROUNDS, "single_runs": SINGLE_RUNS, "paths": {}}

    # fixed overhead of a repeat=1 measurement
    base = single_runs(pass_fd, arp, 2)
    results["repeat1_overhead_xdp_pass_ns"] = {"median": statistics.median(base), "p10": pct(base, .1),
                                               "p90": pct(base, .9)}
    for name, frame, verdict in (("arp_reply", arp, 3), ("na_reply", ns, 3)):
        xs = single_runs(dp.prog_fd, frame, verdict)
        med = statistics.median(xs)
        results["paths"][name] = {
            "method": "repeat=1 x %d, minus xdp_pass overhead" % SINGLE_RUNS,
            "raw_median_ns": med, "raw_p10_ns": pct(xs, .1), "raw_p90_ns": pct(xs, .9),
            "net_median_ns": med - statistics.median(base),
            "net_p10_ns": pct(xs, .1) - statistics.median(base),
            "net_p90_ns": pct(xs, .9) - statistics.median(base)}

    for name, frame in (("counted_pass_ipv4", udp_vip), ("non_vip_pass_ipv4", udp_other)):
        xs = []
        for _ in range(ROUNDS):
            r = prog_test_run(dp.prog_fd, frame, LO, REPEAT)
            assert r.verdict == 2
            xs.append(r.duration_ns)
        results["paths"][name] = {"method": f"repeat={REPEAT} x {ROUNDS} rounds",
                                  "median_ns": statistics.median(xs), "min_ns": min(xs), "max_ns": max(xs)}
    xs = []
    for _ in range(ROUNDS):
        xs.append(prog_test_run(pass_fd, udp_other, LO, REPEAT).duration_ns)
    results["paths"]["xdp_pass_reference"] = {"method": f"repeat={REPEAT} x {ROUNDS} rounds",
                                              "median_ns": statistics.median(xs), "min_ns": min(xs),
                                              "max_ns": max(xs)}
    c = dp.vip_counters(VIP4, LO)
    results["counted_packets_check"] = c["rx_packets"] == ROUNDS * REPEAT
    arp_net = results["paths"]["arp_reply"]["net_median_ns"]
    results["target_arp_reply_ns"] = TARGET_ARP_NS
    results["target_met"] = arp_net <= TARGET_ARP_NS
    passb.cleanup()
    dp.close()
    return results


if __name__ == "__main__":
    t0 = time.monotonic()
    res = main()
    res["elapsed_s"] = round(time.monotonic() - t0, 1)
    print(f"kernel {res['kernel']}, {res['cpus']} CPUs; repeat=1 overhead (xdp_pass): "
          f"{res['repeat1_overhead_xdp_pass_ns']['median']} ns median")
    for name, r in res["paths"].items():
        if "net_median_ns" in r:
            print(f"  {name:22s} net {r['net_median_ns']:6.0f} ns/pkt  (raw median {r['raw_median_ns']}, "
                  f"p10 {r['raw_p10_ns']}, p90 {r['raw_p90_ns']}; {r['method']})")
        else:
            print(f"  {name:22s}     {r['median_ns']:6.0f} ns/pkt  (min {r['min_ns']}, max {r['max_ns']}; {r['method']})")
    print(f"ARP reply path target <= {TARGET_ARP_NS:.0f} ns: {'met' if res['target_met'] else 'NOT met'}; "
          f"counter check: {res['counted_packets_check']}")
    out = Path(__file__).resolve().parent / "results" / "xdp_prog_ns.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
