"""L2 failover in the network-namespace lab (issue 6's benchmark), measured from the client.

1. link cut: ``--cuts`` trials (default 20). The client requests an L2 VIP 10 times a second
   (each request a new TCP connection, 1 s timeout, requests overlap); the announcing node's
   cable is cut; figure = time from the cut to the completion of the first successful request
   sent after it (p50/p99/max; targets <= 1 s / <= 2 s), plus the failed requests per trial.
   The Service's backends are on the *other* nodes, so what is measured is the L2 takeover
   (membership detection + election + XDP announce + gratuitous ARP), not the loss of a
   backend the lab has no kubelet to mark unready. Three Services (three IPs, each with its own
   first node in MetalLB's order) are used in turn, so the cut node varies.
2. agent restarts: ``--restarts`` SIGTERM restarts (default 20) of the announcing node's agent
   under the same 10/s stream, then as many SIGKILL restarts; figure = failed requests (target
   0 for both). For SIGKILL it also reports which peers crash-held the node (``memberCrashHeld``)
   and whether another node announced the VIP meanwhile (with the crash hold: never).
   ``--sigkills N`` sets the SIGKILL count on its own (issue 19's 100 kills).
3. membership at 1,000 nodes: the figures of ``bench/membership_sim.py`` (its JSON when present,
   else it is run).

Between trials the lab is brought back to steady state (every agent sees 3 members, the VIP is
answered by its first node only, requests succeed), so trials are independent.

Prints the figures and writes bench/results/l2_failover.json.
Usage (root): python bench/l2_failover.py [--cuts 20] [--restarts 20]
"""
from __future__ import annotations

import json
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchstats import arg_parser, nearest_rank  # noqa: E402
from metalxdp.lab import tools as lt  # noqa: E402
from metalxdp.lab.cluster import Lab, running_lab  # noqa: E402
from metalxdp.rig.procs import wait_for  # noqa: E402

NODES = ("node1", "node2", "node3")
RATE_HZ = 10
TIMEOUT_S = 1.0
SERVICES = ("bench-a", "bench-b", "bench-c")


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": round(min(values), 3), "p50": round(statistics.median(values), 3),
            "p99": round(nearest_rank(values, 99), 3), "max": round(max(values), 3),
            "mean": round(statistics.fmean(values), 3),
            "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0}




def ts(rec: dict) -> float:
    return datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()


def steady(lab: Lab, ip: str, owner: str, timeout: float = 60) -> None:
    """Every agent sees every other, only ``owner`` answers for ``ip``, requests succeed."""
    def members_ok():
        return all(lt.metric(lt.node_metrics(lab, n), "metalxdp_membership_members") == len(NODES) for n in NODES)
    wait_for("every agent to see 3 members", members_ok, timeout)
    wait_for(f"only {owner} to answer for {ip}", lambda: lt.announcing_nodes(lab, ip) == {owner}, timeout)
    wait_for(f"requests to {ip} to succeed", lambda: all(lt.curl(lab, ip) for _ in range(3)), timeout)


def setup_services(lab: Lab) -> dict[str, tuple[str, str]]:
    """Backends on every node (labelled not-<other node>); per Service: (ip, first node), with
    the selector leaving out that node's backend."""
    for n in NODES:
        lab.add_backend(f"b-{n}", n, {"app": "bench", **{f"not-{o}": "y" for o in NODES if o != n}})
    out = {}
    for name in SERVICES:
        lt.apply_service(lab, name, selector={"app": "bench"})
        ip = lt.wait_service_ips(lab, name)[0]
        lt.wait_curl(lab, ip)
        wait_for(f"one node to answer for {ip}", lambda: len(lt.announcing_nodes(lab, ip)) == 1, 30)
        owner = lt.announcing_node(lab, ip)
        lt.apply_service(lab, name, selector={"app": "bench", f"not-{owner}": "y"})
        wait_for(f"{name} to reach only backends off {owner}",
                 lambda: all((b := lt.curl(lab, ip)) and not b.endswith(owner) for _ in range(6)), 30)
        out[name] = (ip, owner)
    return out


def rotation(lab: Lab, services: dict, trials: int) -> Iterator[tuple[int, str, str, str]]:
    """(trial, service, ip, owner) for ``trials`` trials, the services in turn, each once its
    owner answers steadily."""
    names = list(services)
    for k in range(trials):
        name = names[k % len(names)]
        ip, owner = services[name]
        steady(lab, ip, owner)
        yield k, name, ip, owner


def link_cut_trials(lab: Lab, services: dict, trials: int) -> list[dict]:
    out = []
    for k, name, ip, owner in rotation(lab, services, trials):
        with lt.RequestStream(lab, ip, rate_hz=RATE_HZ, timeout=TIMEOUT_S) as stream:
            stream.wait_ok()
            lab.set_link(owner, up=False)
            # measured from when the port is surely down (the command has returned): a request
            # sent while `ip link set` was still running may have got through the old node
            t_cut = time.monotonic()
            try:
                wait_for("a successful request after the cut",
                         lambda: lt.first_success_after(stream.results, t_cut) is not None, 30)
                t_ok = time.monotonic()
                wait_for("1 s more", lambda: time.monotonic() - t_ok > 1.0, 5)
            finally:
                results = stream.stop()
                lab.set_link(owner, up=True)
        after = [r for r in results if r["sent"] >= t_cut - TIMEOUT_S]
        rec = {"trial": k, "service": name, "ip": ip, "cut_node": owner,
               "first_success_s": round(lt.first_success_after(results, t_cut), 3),
               "failed_requests": sum(not r["ok"] for r in after)}
        rec["served_by_after_cut"] = next((n for n in NODES if n != owner and any(
            r.get("body", "").endswith(n) for r in results if r["ok"] and r["sent"] >= t_cut)), None)
        out.append(rec)
        print(f"  cut {k + 1:2d}/{trials}: {owner} ({ip})  first success after {rec['first_success_s']:.3f} s, "
              f"{rec['failed_requests']} failed requests", flush=True)
    return out


def restart_trials(lab: Lab, services: dict, trials: int, sig: int) -> list[dict]:
    out = []
    for k, _name, ip, owner in rotation(lab, services, trials):
        before = len(lt.agent_log_events(lab, owner, "serviceAnnounced", ip=ip, interface="eth0"))
        others = {n: len(lt.agent_log_events(lab, n, "serviceAnnounced", ip=ip, interface="eth0")) for n in NODES if n != owner}
        held0 = {n: len(lt.agent_log_events(lab, n, "memberCrashHeld", member=owner)) for n in others}
        with lt.RequestStream(lab, ip, rate_hz=RATE_HZ, timeout=TIMEOUT_S) as stream:
            stream.wait_ok()
            t0 = time.monotonic()
            wall0 = time.time()
            lab.restart_agent(owner, sig)
            wait_for(f"{owner}'s new agent to announce {ip}", lambda: len(lt.agent_log_events(
                lab, owner, "serviceAnnounced", ip=ip, interface="eth0")) > before, 60)
            t_back = time.monotonic()
            wait_for("1 s more", lambda: time.monotonic() - t_back > 1.0, 5)
            results = stream.stop()
        during = [r for r in results if r["sent"] >= t0]
        takeovers = [ts(e) - wall0 for n, c in others.items()
                     for e in lt.agent_log_events(lab, n, "serviceAnnounced", ip=ip, interface="eth0")[c:]]
        rec = {"trial": k, "signal": signal.Signals(sig).name, "node": owner, "ip": ip,
               "requests": len(during), "failed_requests": sum(not r["ok"] for r in results),
               "failures": [{"sent_after_s": round(r["sent"] - t0, 3), "error": r.get("error")}
                            for r in results if not r["ok"]],
               "agent_back_s": round(t_back - t0, 3),
               "crash_held_by": sorted(n for n, c in held0.items()
                                       if len(lt.agent_log_events(lab, n, "memberCrashHeld", member=owner)) > c),
               "takeover_by_other_node_s": round(min(takeovers), 3) if takeovers else None}
        out.append(rec)
        print(f"  {rec['signal']} {k + 1:2d}/{trials}: {owner}  {rec['failed_requests']} failed of "
              f"{rec['requests']}, agent back after {rec['agent_back_s']:.2f} s, other node announced "
              f"{'after %.3f s' % rec['takeover_by_other_node_s'] if takeovers else 'never'}", flush=True)
    return out


def membership_figures(run_if_missing: bool) -> dict:
    path = ROOT / "bench" / "results" / "membership_sim.json"
    if not path.exists() and run_if_missing:
        subprocess.run([sys.executable, str(ROOT / "bench" / "membership_sim.py")], check=False, timeout=900)
    if not path.exists():
        return {"available": False}
    data = json.loads(path.read_text())
    keep = ("scenario", "nodes", "killed", "trials", "loss", "detection_s", "first_detection_s",
            "msgs_per_s_per_node", "false_deaths", "undetected_pairs", "join_converged_s")
    return {"available": True, "source": str(path.relative_to(ROOT)), "quick": data.get("quick"),
            "results": [{k: r.get(k) for k in keep} for r in data.get("results", [])]}


def main() -> None:
    ap = arg_parser(__doc__, "l2_failover")
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=20, help="per signal (SIGTERM, then SIGKILL)")
    ap.add_argument("--sigkills", type=int, default=None,
                    help="SIGKILL restarts (default: --restarts); e.g. --cuts 0 --restarts 0 --sigkills 100 "
                         "--out bench/results/l2_sigkill_100.json for issue 19's 100-kill figure")
    ap.add_argument("--no-membership-sim", action="store_true", help="don't run membership_sim.py if its JSON is missing")
    a = ap.parse_args()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="l2bench-"))
    print("lab up ...", flush=True)
    try:
        with running_lab("l2bench", root) as lab:
            services = setup_services(lab)
            print("services: " + ", ".join(f"{n} {ip} on {o}" for n, (ip, o) in services.items()), flush=True)
            print(f"link cut, {a.cuts} trials, {RATE_HZ} requests/s:", flush=True)
            cuts = link_cut_trials(lab, services, a.cuts)
            print(f"agent restarts under {RATE_HZ} requests/s:", flush=True)
            term = restart_trials(lab, services, a.restarts, signal.SIGTERM)
            kill = restart_trials(lab, services, a.restarts if a.sigkills is None else a.sigkills,
                                  signal.SIGKILL)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mem = membership_figures(not a.no_membership_sim)

    first = [c["first_success_s"] for c in cuts]
    res = {
        "benchmark": "l2_failover", "python": platform.python_version(), "platform": platform.platform(),
        "rate_hz": RATE_HZ, "request_timeout_s": TIMEOUT_S, "wall_s": round(time.monotonic() - started, 1),
        "link_cut": {"trials": len(cuts), "first_success_s": summary(first),
                     "failed_requests_per_trial": summary([c["failed_requests"] for c in cuts]),
                     "targets": {"p50_s": 1.0, "p99_s": 2.0},
                     "meets_targets": bool(first) and statistics.median(first) <= 1.0 and nearest_rank(first, 99) <= 2.0,
                     "per_trial": cuts},
        "restart_sigterm": {"trials": len(term), "requests": sum(t["requests"] for t in term),
                            "failed_requests": sum(t["failed_requests"] for t in term),
                            "agent_back_s": summary([t["agent_back_s"] for t in term]), "per_trial": term},
        "restart_sigkill": {"trials": len(kill), "requests": sum(t["requests"] for t in kill),
                            "failed_requests": sum(t["failed_requests"] for t in kill),
                            "agent_back_s": summary([t["agent_back_s"] for t in kill]),
                            "takeover_by_other_node_s": summary([t["takeover_by_other_node_s"] for t in kill
                                                                 if t["takeover_by_other_node_s"] is not None]),
                            "per_trial": kill},
        "membership_sim": mem,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")

    fs = res["link_cut"]["first_success_s"]
    if fs["n"]:
        print(f"\nlink cut ({fs['n']} trials): first successful request after p50 {fs['p50']:.3f} s, "
              f"p99 {fs['p99']:.3f} s (min {fs['min']:.3f}, max {fs['max']:.3f}, stdev {fs['stdev']:.3f}); "
              f"targets 1 s / 2 s: {'met' if res['link_cut']['meets_targets'] else 'NOT met'}")
    for key in ("restart_sigterm", "restart_sigkill"):
        r = res[key]
        ab = r["agent_back_s"]
        print(f"{key}: {r['failed_requests']} failed of {r['requests']} requests across {r['trials']} restarts"
              + (f"; agent back after p50 {ab['p50']:.2f} s (min {ab['min']:.2f}, max {ab['max']:.2f})" if ab.get("n") else ""))
    tk = res["restart_sigkill"]["takeover_by_other_node_s"]
    if kill:
        print(f"SIGKILL: another node announced the VIP in {tk.get('n', 0)} of {len(kill)} trials "
              "(crash hold: 0 expected)")
    if tk.get("n"):
        print(f"SIGKILL: another node announced after p50 {tk['p50']:.3f} s (max {tk['max']:.3f}) "
              f"in {tk['n']} of {len(kill)} trials (liveness window 0.4 s)")
    for r in mem.get("results", []):
        d = r["detection_s"] or {}
        print(f"membership {r['scenario']}: n={r['nodes']} detection p50 {d.get('p50')} s p99 {d.get('p99')} s, "
              f"msgs/s/node {r['msgs_per_s_per_node']}, false deaths {r['false_deaths']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
