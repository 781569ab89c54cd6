"""Validation parity with MetalLB (issues 16 and 17): every case of the validation table sent to
MetalLB's own admission webhook and to metalxdp's, with the same objects stored before it.

Real parts: etcd + kube-apiserver; the real MetalLB controller (`make metallb`) in
``--webhook-mode onlywebhook`` with ``METALLB_BGP_TYPE=frr`` (the FRR-mode validator, the one
whose features metalxdp matches), serving HTTPS on 9443 with a throw-away certificate; metalxdp's
side is ``metalxdp.config.admission.review`` (what its webhook answers). For each case of
``tests/data/config/cases.py``: the metallb-system namespace is emptied, ``resources[:-1]`` are
stored through the API server (Nodes and Secrets too), MetalLB's cache is given a moment, and
``resources[-1]`` goes to both as a CREATE review. Cases the CRD schema refuses before any
webhook (level ``schema``) are not sent.

A disagreement is expected where metalxdp refuses a field on purpose (the table's "C.1 gate"
rows: vrf) or checks more than MetalLB (listed in
the output as ``stricter``); any other one is printed with both answers. Exit 1 on an
unexplained disagreement.

Usage (root; nothing else may listen on 9443): python bench/peer_validation.py
"""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "config"))

from bench.benchrig import api_server_with_crds  # noqa: E402
from bench.benchstats import arg_parser, write_json  # noqa: E402
from bench.peer_controller import metallb_bin  # noqa: E402
from cases import CASES  # noqa: E402
from controller.webhook import BY_KIND  # noqa: E402
from metalxdp.config.admission import review  # noqa: E402
from metalxdp.config.bgppeer_conversion import convert_bgppeer  # noqa: E402
from metalxdp.kube import ApiException, client  # noqa: E402
from metalxdp.rig.procs import start, wait_for  # noqa: E402

NS = "metallb-system"
# Rules where metalxdp follows MetalLB's main branch, not the pinned release (which cannot be
# built here: see scripts/metallb/build.sh): case id -> what changed
NEWER_METALLB = {
    "frr-same-address-disjoint-nodes-ok": "the same peer address is allowed on disjoint nodeSelectors "
                                          "(DiscardNativeOnly after v0.15)",
    "peer-my-asn-router-id-differ-disjoint-nodes-ok": "myASN and routerID may differ on disjoint "
                                                      "nodeSelectors (v0.16 checkFRRPeersCompatible)",
}
PLURALS = {"IPAddressPool": "ipaddresspools", "AddressPool": "addresspools", "L2Advertisement": "l2advertisements",
           "BGPAdvertisement": "bgpadvertisements", "BGPPeer": "bgppeers", "BFDProfile": "bfdprofiles",
           "Community": "communities", "MetalLB": "metallbs"}


def metallb_review(ctx: ssl.SSLContext, obj: dict) -> Optional[tuple[bool, str]]:
    kind = obj["kind"]
    ep = BY_KIND[kind]
    group, version = obj["apiVersion"].split("/")
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": ep.plural},
        "name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace", NS),
        "operation": "CREATE", "userInfo": {"username": "bench"}, "object": obj, "dryRun": False}}
    # MetalLB serves its paths for the version it validates (BGPPeer: v1beta2, the others v1beta1)
    req = urllib.request.Request(f"https://127.0.0.1:9443{ep.path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            resp = json.loads(r.read())["response"]
    except urllib.error.HTTPError as e:
        if e.code == 404:      # a kind MetalLB's controller has no webhook for
            return None
        raise
    return bool(resp.get("allowed")), (resp.get("status") or {}).get("message", "")


def store(api, o: dict) -> None:
    if o.get("apiVersion") == "v1" and o["kind"] == "Node":
        client.CoreV1Api(api).create_node(o)
    elif o.get("apiVersion") == "v1" and o["kind"] == "Secret":
        client.CoreV1Api(api).create_namespaced_secret(o["metadata"].get("namespace", NS), o)
    else:
        g, v = o["apiVersion"].split("/")
        client.CustomObjectsApi(api).create_namespaced_custom_object(g, v, NS, PLURALS[o["kind"]], o)


def empty(api) -> None:
    co, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    for kind, plural in PLURALS.items():
        version = "v1beta2" if kind == "BGPPeer" else "v1beta1"
        for o in co.list_namespaced_custom_object("metallb.io", version, NS, plural)["items"]:
            co.delete_namespaced_custom_object("metallb.io", version, NS, plural, o["metadata"]["name"])
    for n in core.list_node().items:
        core.delete_node(n.metadata.name)
    for s in core.list_namespaced_secret(NS).items:
        if s.type != "kubernetes.io/service-account-token":
            core.delete_namespaced_secret(s.metadata.name, NS)


def main() -> None:
    ap = arg_parser(__doc__, "peer_validation")
    ap.add_argument("--settle-s", type=float, default=1.0, help="wait for MetalLB's cache after storing")
    a = ap.parse_args()
    mlb = metallb_bin()
    version = (ROOT / "scripts" / "metallb" / "VERSION").read_text().strip()
    # MetalLB 0.15's k8s.Config.CertDir is never read: its webhook server takes controller-
    # runtime's default directory whatever --cert-dir says, so the certificate goes there
    certs = Path("/tmp/k8s-webhook-server/serving-certs")
    certs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(certs / "tls.key"), "-out", str(certs / "tls.crt"), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    proc = None
    with ExitStack() as stack:
        work, kc, api = stack.enter_context(api_server_with_crds("mx-peerval-"))
        stack.callback(lambda: [(certs / f).unlink(missing_ok=True) for f in ("tls.crt", "tls.key")])
        stack.callback(lambda: proc and proc.stop())
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        env = {**os.environ, "METALLB_BGP_TYPE": "frr"}
        proc = start("metallb-webhook", [str(mlb / "controller"), "--kubeconfig", kc, "--namespace", NS,
                                         "--webhook-mode", "onlywebhook", "--disable-cert-rotation",
                                         "--cert-dir", str(certs), "--port", "17474", "--log-level", "error"],
                     work / "logs", env=env)
        ctx = ssl.create_default_context(cafile=str(certs / "tls.crt"))

        def serving() -> bool:
            try:
                metallb_review(ctx, {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                                     "metadata": {"name": "probe", "namespace": NS},
                                     "spec": {"addresses": ["192.0.2.0/28"]}})
                return True
            except OSError:
                return False
        wait_for("MetalLB's webhook on 9443", serving, 60, proc=proc)

        rows, skipped = [], []
        for case in CASES:
            last = case.resources[-1]
            if case.level == "schema" or last.get("kind") not in BY_KIND:
                skipped.append(case.id)
                continue
            empty(api)
            stored = []
            for o in case.resources[:-1]:
                try:
                    store(api, o)
                except ApiException as e:
                    raise SystemExit(f"{case.id}: storing {o.get('kind')} failed: {e.status} {e.body[:200]}")
                if o.get("apiVersion") != "v1":
                    stored.append(o)
            time.sleep(a.settle_s if case.resources[:-1] else 0)
            sent = last
            if last["kind"] == "BGPPeer" and last["apiVersion"] == "metallb.io/v1beta1":
                # the API server converts (matchPolicy Equivalent) before calling MetalLB's
                # v1beta2 webhook; MetalLB's own conversion is not running here, ours stands in
                sent = convert_bgppeer(last, "v1beta2")
            answer = metallb_review(ctx, sent)
            if answer is None:
                skipped.append(f"{case.id} (MetalLB serves no webhook for {last['kind']})")
                continue
            m_ok, m_msg = answer
            x_ok, x_msg, _ = review(last["kind"], "CREATE", last, None, stored, nodes=case.nodes)
            gate = case.rule.startswith("C.1 gate") or "is not supported" in x_msg
            newer = case.id in NEWER_METALLB
            verdict = ("agree" if m_ok == x_ok else "expected: metalxdp refuses the field" if gate and not x_ok
                       else f"newer MetalLB: {NEWER_METALLB[case.id]}" if newer
                       else "stricter" if m_ok and not x_ok else "DISAGREE")
            rows.append({"case": case.id, "rule": case.rule, "metallb_allowed": m_ok, "metalxdp_allowed": x_ok,
                         "verdict": verdict, "metallb_message": m_msg[:300], "metalxdp_message": x_msg[:300]})
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        print(f"\nMetalLB {version} (FRR-mode validator) vs metalxdp on {len(rows)} cases "
              f"({len(skipped)} schema-level cases not sent): {counts}")
        for r in rows:
            if r["verdict"] != "agree":
                print(f"  {r['verdict']:38} {r['case']}: MetalLB {'allows' if r['metallb_allowed'] else 'denies'}"
                      f" ({r['metallb_message'][:110]!r}); metalxdp "
                      f"{'allows' if r['metalxdp_allowed'] else 'denies'} ({r['metalxdp_message'][:110]!r})")
        write_json(Path(a.out), {"metallb_version": version, "validator": "frr", "counts": counts,
                                 "skipped_schema_cases": skipped, "cases": rows})
        if counts.get("DISAGREE"):
            sys.exit(1)


if __name__ == "__main__":
    main()
