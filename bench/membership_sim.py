"""Membership at scale, in virtual time: the SAME agent.membership code on a simulated network.

Every node is a real ``Membership``; every packet is really encoded, HMAC-signed, verified and
decoded. The network only adds latency (base + exponential jitter) and random loss; time is
virtual (an event heap), so 1,000 nodes run on one core without sleeping.

Per scenario:
  1. join: every node knows only a few seed addresses; measure the time until every node sees
     every other one (gossip + push-pull);
  2. steady state: packets sent per node per second, false deaths;
  3. failure: kill K nodes at once (they go silent); for every (observer, victim) pair the
     time until the observer reports the victim left -> p50/p99/max detection time;
     packets per node per second during detection.
Scenarios: the 3-node lab (many trials), the lab with 5 % loss, 1,000 nodes with 1 % loss.

Prints the figures, writes bench/results/membership_sim.json.
Usage: python bench/membership_sim.py [--quick]
"""
from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.membership import Membership, MembershipConfig, derive_key  # noqa: E402

KEY = derive_key("bench-secret")
DELIVER, TICK = 0, 1


@dataclass
class Scenario:
    name: str
    n: int
    kill: int
    trials: int = 1
    loss: float = 0.0
    latency_s: float = 0.0002          # one-way base latency
    jitter_s: float = 0.0002           # mean of the exponential jitter added to it
    seeds_per_node: int = 5
    steady_s: float = 10.0
    settle_s: float = 10.0
    detect_limit_s: float = 30.0
    join_limit_s: float = 120.0
    config: MembershipConfig = field(default_factory=MembershipConfig)


class SimNet:
    def __init__(self, sc: Scenario, seed: int):
        self.sc, self.rng = sc, random.Random(seed)
        base = int(ipaddress.ip_address("198.18.0.1"))
        self.addrs = [(str(ipaddress.ip_address(base + i)), 7946) for i in range(sc.n)]
        self.index = {a: i for i, a in enumerate(self.addrs)}
        self.names = [f"node{i:04d}" for i in range(sc.n)]
        self.nodes: list[Membership] = []
        for i in range(sc.n):
            others = [j for j in range(sc.n) if j != i]
            seeds = [self.addrs[j] for j in self.rng.sample(others, min(sc.seeds_per_node, len(others)))]
            self.nodes.append(Membership(self.names[i], self.addrs[i], KEY, seeds=seeds,
                                         config=sc.config, rng=random.Random(seed * 100003 + i),
                                         epoch=1))
        self.heap: list = []
        self.seq = 0
        self.now = 0.0
        self.dead: set[int] = set()
        self.sent = [0] * sc.n
        self.bytes = [0] * sc.n
        self.known = [0] * sc.n                   # members each node currently sees (others)
        self.left_at: dict[tuple[int, str], float] = {}   # (observer, victim) -> time
        self.false_left = 0
        self.victims: set[str] = set()
        for i in range(sc.n):                     # staggered start, like real pods
            self._push(self.rng.uniform(0, sc.config.probe_interval), TICK, i, None)

    def _push(self, t: float, kind: int, node: int, payload) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, node, payload))

    def _send(self, src: int, out) -> None:
        sc = self.sc
        for addr, data in out:
            self.sent[src] += 1
            self.bytes[src] += len(data)
            dst = self.index.get(addr)
            if dst is None or dst in self.dead or self.rng.random() < sc.loss:
                continue
            delay = sc.latency_s + self.rng.expovariate(1 / sc.jitter_s)
            self._push(self.now + delay, DELIVER, dst, (self.addrs[src], data))

    def _events(self, i: int) -> None:
        for kind, who in self.nodes[i].drain_events():
            if kind == "joined":
                self.known[i] += 1
            else:
                self.known[i] -= 1
                if who in self.victims:
                    self.left_at.setdefault((i, who), self.now)
                else:
                    self.false_left += 1

    def run_until(self, t_end: float, stop=None) -> bool:
        """Process events up to ``t_end``; stop early (True) when ``stop()`` holds (checked every
        10 ms of virtual time)."""
        next_check = self.now
        while self.heap and self.heap[0][0] <= t_end:
            t, _, kind, i, payload = heapq.heappop(self.heap)
            self.now = t
            if i in self.dead:
                continue
            m = self.nodes[i]
            if kind == DELIVER:
                self._send(i, m.receive(t, payload[0], payload[1]))
            else:
                self._send(i, m.tick(t))
                self._push(max(m.next_deadline(), t + 0.001), TICK, i, None)
            self._events(i)
            if stop is not None and t >= next_check:
                next_check = t + 0.01
                if stop():
                    return True
        self.now = max(self.now, t_end) if stop is None else self.now
        return stop() if stop else False

    def kill(self, k: int) -> list[int]:
        victims = self.rng.sample(range(self.sc.n), k)
        self.dead.update(victims)
        self.victims = {self.names[v] for v in victims}
        return victims


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def run_scenario(sc: Scenario) -> dict:
    wall = time.perf_counter()
    detections: list[float] = []
    first_detections: list[float] = []
    joins: list[float] = []
    steady_rates: list[float] = []
    steady_max: list[float] = []
    detect_rates: list[float] = []
    pkt_sizes: list[float] = []
    pending: list[float] = []
    false_left = 0
    undetected = 0
    for trial in range(sc.trials):
        net = SimNet(sc, seed=trial + 1)
        full = sc.n - 1
        ok = net.run_until(sc.join_limit_s, stop=lambda: all(k == full for k in net.known))
        if not ok:
            raise SystemExit(f"{sc.name}: no convergence within {sc.join_limit_s}s of virtual time")
        joins.append(net.now)
        # steady state, once the join's gossip has drained and the first (jittered) push-pull
        # round is over; later push-pulls fall in the window as they come (~1/min at 1,000)
        net.run_until(net.now + sc.settle_s)
        pending.append(sum(m.pending_updates for m in net.nodes) / sc.n)
        s0, b0, t0 = list(net.sent), list(net.bytes), net.now
        net.run_until(t0 + sc.steady_s)
        per_node = [(net.sent[i] - s0[i]) / sc.steady_s for i in range(sc.n)]
        steady_rates.append(statistics.mean(per_node))
        steady_max.append(max(per_node))
        tot_b = sum(net.bytes) - sum(b0)
        tot_p = sum(net.sent) - sum(s0)
        pkt_sizes.append(tot_b / max(tot_p, 1))
        # failure: a random phase inside the probe interval, so trials do not all line up
        net.run_until(net.now + net.rng.uniform(0, sc.config.probe_interval))
        t_kill = net.now
        victims = net.kill(sc.kill)
        s1 = list(net.sent)
        observers = [i for i in range(sc.n) if i not in net.dead]
        want = len(observers) * len(victims)
        net.run_until(t_kill + sc.detect_limit_s, stop=lambda: len(net.left_at) >= want)
        span = max(net.now - t_kill, 1e-9)
        detect_rates.append(statistics.mean((net.sent[i] - s1[i]) / span for i in observers))
        got = [t - t_kill for t in net.left_at.values()]
        undetected += want - len(got)
        detections += got
        for v in net.victims:
            ts = [t for (o, who), t in net.left_at.items() if who == v]
            if ts:
                first_detections.append(min(ts) - t_kill)
        false_left += net.false_left
    c = sc.config
    res = {
        "scenario": sc.name, "nodes": sc.n, "killed": sc.kill, "trials": sc.trials,
        "loss": sc.loss, "one_way_latency_ms": round((sc.latency_s + sc.jitter_s) * 1000, 3),
        "config": asdict(c),
        "suspicion_timeout_s": round(c.suspicion_timeout(sc.n), 3),
        "join_converged_s": {"p50": round(statistics.median(joins), 3), "max": round(max(joins), 3)},
        "detection_s": {"samples": len(detections), "p50": round(pct(detections, 50), 3),
                        "p99": round(pct(detections, 99), 3),
                        "max": round(max(detections), 3) if detections else None},
        "first_detection_s": {"p50": round(pct(first_detections, 50), 3),
                              "max": round(max(first_detections), 3)},
        "undetected_pairs": undetected,
        "false_deaths": false_left,
        "msgs_per_s_per_node": {"steady_mean": round(statistics.mean(steady_rates), 2),
                                "steady_max_node": round(max(steady_max), 2),
                                "during_detection_mean": round(statistics.mean(detect_rates), 2)},
        "mean_packet_bytes": round(statistics.mean(pkt_sizes), 1),
        "settle_s": sc.settle_s,
        "pending_updates_per_node_at_steady_start": round(statistics.mean(pending), 1),
        "wall_s": round(time.perf_counter() - wall, 2),
    }
    return res


def scenarios(quick: bool) -> list[Scenario]:
    lab = MembershipConfig()
    return [
        Scenario("lab-3-nodes", n=3, kill=1, trials=20 if quick else 200, config=lab,
                 settle_s=2.0),
        Scenario("lab-3-nodes-5pct-loss", n=3, kill=1, trials=10 if quick else 100, loss=0.05,
                 config=lab, settle_s=2.0),
        Scenario("1000-nodes-lab-timers-1pct-loss", n=1000 if not quick else 200, kill=10,
                 loss=0.01, latency_s=0.0005, jitter_s=0.0005, steady_s=5.0 if quick else 10.0,
                 settle_s=10.0 if quick else 40.0, config=lab),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials, 200 instead of 1,000 nodes")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "membership_sim.json"))
    a = ap.parse_args()
    results = []
    for sc in scenarios(a.quick):
        r = run_scenario(sc)
        results.append(r)
        d, m = r["detection_s"], r["msgs_per_s_per_node"]
        print(f"{r['scenario']:34s} n={r['nodes']:5d} kill={r['killed']:2d} trials={r['trials']:3d} "
              f"loss={r['loss']:.0%}  join={r['join_converged_s']['p50']:.2f}s  "
              f"detect p50={d['p50']:.3f}s p99={d['p99']:.3f}s max={d['max']:.3f}s "
              f"(first p50={r['first_detection_s']['p50']:.3f}s, suspicion={r['suspicion_timeout_s']}s)  "
              f"msgs/s/node steady={m['steady_mean']} (max node {m['steady_max_node']}) "
              f"detecting={m['during_detection_mean']}  pkt={r['mean_packet_bytes']}B  "
              f"false_deaths={r['false_deaths']} undetected={r['undetected_pairs']}  "
              f"backlog@steady={r['pending_updates_per_node_at_steady_start']}  "
              f"[{r['wall_s']}s wall]", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "membership_sim", "virtual_time": True,
                               "python": platform.python_version(), "quick": a.quick,
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
