"""Allocator throughput and latency: how fast the controller can hand out LoadBalancer IPs.

Scenarios (each on a fresh Allocator):
  sequential_slash16  N services, one fallback pool 198.18.0.0/16
  selectors_10_pools  N services spread over 3 namespaces and 2 app labels; 10 pools, 9 of them
                      with serviceAllocation (namespaces / namespace selectors / service
                      selectors / priorities) plus one fallback pool; each pool a /19 (ten
                      fit in the lab range 198.18.0.0/15): the busiest, team-b, takes a third
                      of the services, so N up to 24,576
  sharing             N services, 8 per sharing key with distinct ports (they co-locate)
  sharing_one_key_same_port  N services, one sharing key, all on TCP/80 (none can co-locate)
  ipv6_slash64        N single-stack IPv6 services in a 2001:db8::/64
  churn_slash16       fill half a /16, then release-and-allocate at random (lowest-free reuse)

Prints allocations/s and p50/p99 per allocation, writes bench/results/allocator.json.
Usage: python bench/allocator_bench.py [--n 20000]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.allocator import Allocator  # noqa: E402
from metalxdp.config.types import LabelSelector, Pool, ServiceAllocation  # noqa: E402
from metalxdp.service import ServiceSpec  # noqa: E402


def _pool(name, *cidrs, **kw):
    return Pool(name=name, cidrs=tuple(ipaddress.ip_network(c) for c in cidrs), **kw)


def _sel(**labels):
    return LabelSelector(match_labels=tuple(sorted(labels.items())))


def _measure(alloc: Allocator, specs: list[ServiceSpec]) -> dict:
    lat = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for s in specs:
        t0 = clock()
        alloc.allocate(s)
        lat.append(clock() - t0)
    total = time.perf_counter() - start
    lat.sort()
    return {
        "allocations": len(specs),
        "seconds": round(total, 4),
        "allocations_per_s": round(len(specs) / total),
        "p50_us": round(lat[len(lat) // 2] / 1000, 2),
        "p99_us": round(lat[int(len(lat) * 0.99)] / 1000, 2),
        "max_us": round(lat[-1] / 1000, 2),
        "mean_us": round(statistics.fmean(lat) / 1000, 2),
    }


def sequential_slash16(n: int) -> dict:
    a = Allocator({"p": _pool("p", "198.18.0.0/16")})
    return _measure(a, [ServiceSpec(key=f"ns/s{i}", ports=frozenset({("TCP", 80)}))
                        for i in range(n)])


def selectors_10_pools(n: int) -> dict:
    pools = [
        _pool("fallback", "198.18.0.0/19"),
        _pool("team-a", "198.18.32.0/19",
              service_allocation=ServiceAllocation(namespaces=frozenset({"team-a"}))),
        _pool("team-b", "198.18.64.0/19",
              service_allocation=ServiceAllocation(priority=5, namespaces=frozenset({"team-b"}))),
        _pool("prod", "198.18.96.0/19",
              service_allocation=ServiceAllocation(priority=20, namespace_selectors=(_sel(env="prod"),))),
        _pool("web", "198.18.128.0/19",
              service_allocation=ServiceAllocation(priority=10, service_selectors=(_sel(app="web"),))),
        _pool("db", "198.18.160.0/19",
              service_allocation=ServiceAllocation(priority=10, service_selectors=(_sel(app="db"),))),
        _pool("manual", "198.18.192.0/19", auto_assign=False),
        _pool("staging", "198.18.224.0/19",
              service_allocation=ServiceAllocation(priority=3, namespace_selectors=(_sel(env="staging"),))),
        _pool("nowhere", "198.19.0.0/19",
              service_allocation=ServiceAllocation(priority=1, namespaces=frozenset({"nowhere"}))),
        _pool("web-prod", "198.19.32.0/19",
              service_allocation=ServiceAllocation(priority=2, namespaces=frozenset({"team-a"}),
                                                   service_selectors=(_sel(app="web"),))),
    ]
    a = Allocator({p.name: p for p in pools})
    namespaces = [("team-a", {"env": "prod"}), ("team-b", {"env": "dev"}), ("other", {})]
    apps = ["web", "db", "cache"]
    specs = []
    for i in range(n):
        ns, ns_labels = namespaces[i % 3]
        specs.append(ServiceSpec(key=f"{ns}/s{i}", labels={"app": apps[(i // 3) % 3]},
                                 namespace_labels=ns_labels, ports=frozenset({("TCP", 80)})))
    return _measure(a, specs)


def sharing(n: int) -> dict:
    a = Allocator({"p": _pool("p", "198.18.0.0/16")})
    specs = [ServiceSpec(key=f"ns/s{i}", sharing_key=f"k{i // 8}",
                         ports=frozenset({("TCP", 8000 + i % 8)})) for i in range(n)]
    res = _measure(a, specs)
    res["distinct_ips"] = a.counters("p").addresses_in_use_total
    return res


def sharing_one_key_same_port(n: int) -> dict:
    """Worst case for co-location: every service has the same key and port, so none can join
    another; without the skip index each allocation would rescan all shared addresses."""
    a = Allocator({"p": _pool("p", "198.18.0.0/16")})
    return _measure(a, [ServiceSpec(key=f"ns/s{i}", sharing_key="k",
                                    ports=frozenset({("TCP", 80)})) for i in range(n)])


def ipv6_slash64(n: int) -> dict:
    a = Allocator({"v6": _pool("v6", "2001:db8::/64")})
    return _measure(a, [ServiceSpec(key=f"ns/s{i}", ip_families=(6,)) for i in range(n)])


def churn_slash16(n: int) -> dict:
    a = Allocator({"p": _pool("p", "198.18.0.0/16")})
    live = [f"ns/s{i}" for i in range(32768)]
    for k in live:
        a.allocate(ServiceSpec(key=k))
    rng = random.Random(42)
    lat = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for i in range(n):
        j = rng.randrange(len(live))
        a.release(live[j])
        live[j] = f"ns/c{i}"
        t0 = clock()
        a.allocate(ServiceSpec(key=live[j]))
        lat.append(clock() - t0)
    total = time.perf_counter() - start
    lat.sort()
    return {"allocations": n, "seconds": round(total, 4),
            "release_plus_allocations_per_s": round(n / total),
            "p50_us": round(lat[len(lat) // 2] / 1000, 2),
            "p99_us": round(lat[int(len(lat) * 0.99)] / 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="allocations per scenario")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "allocator.json"))
    args = ap.parse_args()

    results = {}
    for name, fn in [("sequential_slash16", sequential_slash16),
                     ("selectors_10_pools", selectors_10_pools),
                     ("sharing", sharing),
                     ("sharing_one_key_same_port", sharing_one_key_same_port),
                     ("ipv6_slash64", ipv6_slash64),
                     ("churn_slash16", churn_slash16)]:
        results[name] = r = fn(args.n)
        rate = r.get("allocations_per_s") or r.get("release_plus_allocations_per_s")
        print(f"{name:27s} {rate:>9,d} allocations/s  p50 {r['p50_us']:7.2f} us  "
              f"p99 {r['p99_us']:7.2f} us")

    doc = {"benchmark": "allocator", "n": args.n, "python": platform.python_version(),
           "machine": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
