"""Webhook pool-overlap cost: how long admitting an IPAddressPool of many CIDRs takes.

The API server gives a webhook 10 s (timeoutSeconds). With the old pairwise overlap scan a
3,000-CIDR pool took 10.5 s and could never be admitted; the parser's checks are now sorted
intervals per family (metalxdp/config/overlaps.py).

Scenarios, each for N in --sizes (disjoint /32s from 198.18.0.0/15):
  create            admission.review of CREATE for one pool of N CIDRs, nothing stored
  create_overlap    the same pool plus a last entry overlapping its first CIDR (the error path:
                    the message must name the earliest overlapping CIDR)
  beside_stored     CREATE of a one-CIDR pool next to a stored pool of N CIDRs
  https_3_parallel  three concurrent CREATEs of the N-CIDR pool through the real HTTPS server
                    (JSON decode, depth bound, decision; the API server's lists come from memory)

"after" runs this tree; "before" runs ``create`` for the tree at --before-ref (default: the
last commit with the pairwise scan), exported with ``git archive`` into a temporary directory and
run in a subprocess. Prints seconds per case, writes bench/results/webhook_overlap.json.
Usage: python bench/webhook_overlap.py [--sizes 3000,10000] [--before-ref REF] [--no-before]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "webhook_overlap.json"
# the last commit whose parser compared every CIDR with every CIDR before it
PAIRWISE_REF = "867ef387b04d8cca6b269625d30c254a89138128"
# the review's figures for the pairwise scan (issue 19), kept when "before" is not run
REVIEW_BEFORE = {"create": {"3000": 10.5, "10000": 115.0}, "https_3_parallel": {"10000": 80.0}}

# Runs in a subprocess with PYTHONPATH at the tree under test, so "before" and "after" are timed
# the same way. Only metalxdp.config.admission.review is used: it exists in both trees.
TIMER = r'''
import ipaddress, json, sys, time
from metalxdp.config.admission import review
scenario, n, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = int(ipaddress.ip_address("198.18.0.0"))
cidrs = [f"{ipaddress.ip_address(base + i)}/32" for i in range(n)]
def pool(name, addresses):
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": {"addresses": addresses}}
if scenario == "create":
    args, want = (pool("big", cidrs), []), True
elif scenario == "create_overlap":
    args, want = (pool("big", cidrs + ["198.18.0.0/24"]), []), False
elif scenario == "beside_stored":
    args, want = (pool("small", ["203.0.113.0/24"]), [pool("big", cidrs)]), True
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    allowed, message, _ = review("IPAddressPool", "CREATE", args[0], None, args[1])
    times.append(time.perf_counter() - t0)
    assert allowed is want, message
print(json.dumps({"seconds": min(times), "runs": times}))
'''


def time_review(tree: Path, scenario: str, n: int, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMER, scenario, str(n), str(repeat)], cwd=tree,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def time_https_parallel(n: int, parallel: int = 3) -> dict:
    """``parallel`` concurrent CREATEs of an n-CIDR pool through WebhookServer's HTTPS server."""
    import http.client
    import ipaddress
    import ssl
    import threading

    sys.path.insert(0, str(ROOT))
    from controller import certs
    from controller.webhook import BY_KIND, ClusterView, WebhookServer, _ssl_context
    from metalxdp.kube import client

    class StoredNothing:  # the API server's lists, from memory: this times our side only
        namespace = "metallb-system"

        def read(self, plan):
            return ClusterView([], None, {})

    bundle = certs.generate("metallb-system", ["127.0.0.1"])
    ws = WebhookServer(client.ApiClient(client.Configuration(host="http://127.0.0.1:1")),
                       "metallb-system", "127.0.0.1", 0)
    ws.ssl_context, ws.reader = _ssl_context(bundle), StoredNothing()
    threading.Thread(target=ws.httpd.serve_forever, daemon=True).start()
    base = int(ipaddress.ip_address("198.18.0.0"))
    obj = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
           "metadata": {"name": "big", "namespace": "metallb-system"},
           "spec": {"addresses": [f"{ipaddress.ip_address(base + i)}/32" for i in range(n)]}}
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "u", "operation": "CREATE", "object": obj,
                                   "kind": {"group": "metallb.io", "version": "v1beta1",
                                            "kind": "IPAddressPool"}}}).encode()
    ctx = ssl.create_default_context(cadata=bundle.ca_crt.decode())
    each: list[float] = []

    def one() -> None:
        t0 = time.perf_counter()
        conn = http.client.HTTPSConnection("127.0.0.1", ws.port, context=ctx, timeout=300)
        conn.request("POST", BY_KIND["IPAddressPool"].path, body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        answer = json.loads(r.read())
        conn.close()
        assert r.status == 200 and answer["response"]["allowed"] is True, answer
        each.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ws.httpd.shutdown()
    ws.httpd.server_close()
    return {"seconds": wall, "per_request": sorted(each), "body_bytes": len(body)}


def export_tree(ref: str, into: Path) -> str:
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "metalxdp"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return commit


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="3000,10000", help="comma-separated CIDR counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per 'after' case (the minimum is reported)")
    ap.add_argument("--before-ref", default=PAIRWISE_REF, help="git ref of the 'before' tree")
    ap.add_argument("--no-before", action="store_true",
                    help="skip timing the old tree (115 s for 10,000); the review's figures are kept")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    after: dict[str, dict[str, float]] = {}
    for scenario in ("create", "create_overlap", "beside_stored"):
        for n in sizes:
            r = time_review(ROOT, scenario, n, args.repeat)
            after.setdefault(scenario, {})[str(n)] = round(r["seconds"], 4)
            print(f"after   {scenario:<16} {n:>6} CIDRs  {r['seconds']:8.3f} s", flush=True)
    for n in sizes:
        r = time_https_parallel(n)
        after.setdefault("https_3_parallel", {})[str(n)] = round(r["seconds"], 4)
        print(f"after   {'https_3_parallel':<16} {n:>6} CIDRs  {r['seconds']:8.3f} s "
              f"(each {', '.join(f'{s:.3f}' for s in r['per_request'])} s; body {r['body_bytes']} B)", flush=True)

    before: dict[str, dict[str, float]] = {}
    before_source = "issue 19 review (not re-run)"
    before_commit = None
    if not args.no_before:
        with tempfile.TemporaryDirectory(prefix="metalxdp-bench-before-") as d:
            before_commit = export_tree(args.before_ref, Path(d))
            for n in sizes:
                r = time_review(Path(d), "create", n, 1)
                before.setdefault("create", {})[str(n)] = round(r["seconds"], 3)
                print(f"before  {'create':<16} {n:>6} CIDRs  {r['seconds']:8.3f} s  ({before_commit[:10]})",
                      flush=True)
        before_source = f"measured: git archive {before_commit}"
    for scenario, figures in REVIEW_BEFORE.items():
        for n, seconds in figures.items():
            if n not in before.get(scenario, {}):
                print(f"before  {scenario:<16} {int(n):>6} CIDRs  {seconds:8.3f} s  (issue 19 review)")

    result = {
        "benchmark": "webhook_overlap",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": load_average(),
        "webhook_timeout_seconds": 10,
        "after": after,
        "before": before,
        "before_source": before_source,
        "before_from_review": REVIEW_BEFORE,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
