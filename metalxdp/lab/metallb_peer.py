"""MetalLB itself in the process lab, for side-by-side runs (issue 16): ``metalxdp lab up --lb
metallb`` runs MetalLB's controller and one speaker per node where metalxdp's controller and
agents would run, on the same API server, nodes, router and client, with the same metallb.io
resources (``LabSpec.metallb_resources``).

A test-rig peer, never part of the product: the binaries are the pinned release
(scripts/metallb/VERSION) built from Go modules by scripts/metallb/build.sh (cached); the CRDs
and the webhook rules are read from that release's own module (config/crd/bases and the
ValidatingWebhookConfiguration of config/manifests/metallb-native.yaml), nothing of MetalLB is
copied into the repo. As MetalLB's manifest sets them:

* the speaker: ``--node-name``, ``--pod-name``, ``--host`` and ``--ml-bindaddr`` (the node's
  IPv4: hostNetwork), ``--ml-labels app=metallb,component=speaker``, the memberlist key as a file
  in a directory (the Secret's mount); native BGP mode;
* speaker Pod objects with those labels and ``status.podIP``: memberlist finds the other
  speakers by listing them, as in a cluster;
* the controller: ``--ml-secret-name memberlist``, its webhook on 127.0.0.1:9443 registered with
  the manifest's rules (clientConfig ``url`` instead of the in-cluster Service).

One CRD is not MetalLB's: its BGPPeer CRD declares ``myASN``/``peerASN`` ``format: int32``
with ``maximum: 4294967295``, and a current kube-apiserver refuses every BGPPeer against that
schema ("Maximum boundary value must be of type integer with format int32 in spec.myASN");
``bgppeer_crd_fix`` puts metalxdp's BGPPeer CRD (same group, kinds and versions; int64) in its
place, without the conversion webhook (only v1beta2 objects are used). docs/compatibility.md.

Limits, by construction: MetalLB 0.15 serves its webhook on port 9443 with the certificate in
controller-runtime's default directory (it ignores ``--cert-dir``), both fixed per machine, so
one MetalLB lab runs at a time (and not beside bench/peer_validation.py). FRR mode (an FRR per
node) is not built: BFD profiles are refused with ``--lb metallb``.
"""
from __future__ import annotations

import base64
import copy
import os
import socket
import subprocess
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
VERSION_FILE = REPO / "scripts" / "metallb" / "VERSION"
CACHE = Path(os.environ.get("METALXDP_CACHE", "/var/cache/metalxdp"))
WEBHOOK_PORT = 9443
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")   # MetalLB 0.15 reads only this one
SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
WEBHOOK_NAME = "metallb-webhook-configuration"


def version() -> str:
    return VERSION_FILE.read_text().strip()


def binaries() -> Path:
    """The directory with MetalLB's ``controller`` and ``speaker`` (built once, then cached)."""
    from ..rig.procs import RigError
    # build.sh's progress (and on a first run: "building ... (first run only)", ~7 min) goes to
    # our stderr; its last stdout line is the directory
    r = subprocess.run(["bash", str(REPO / "scripts" / "metallb" / "build.sh")], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RigError(f"building MetalLB {version()} failed (scripts/metallb/build.sh said why, above)")
    return Path(r.stdout.strip().splitlines()[-1])


def module_dir() -> Path:
    """MetalLB's module source in the Go module cache (downloaded by the build)."""
    from ..rig.procs import RigError
    d = Path(os.environ.get("GOMODCACHE", CACHE / "gomod")) / "go.universe.tf" / f"metallb@{version()}"
    if not (d / "config" / "crd" / "bases").is_dir():
        raise RigError(f"MetalLB's module is not in the Go module cache ({d}): run `make metallb`")
    return d


def crd_dir() -> Path:
    return module_dir() / "config" / "crd" / "bases"


def manifest_docs() -> Iterator[dict]:
    import yaml
    with open(module_dir() / "config" / "manifests" / "metallb-native.yaml") as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                yield doc


def webhook_configuration(ca_pem: bytes, port: int = WEBHOOK_PORT) -> dict:
    """The release's own ValidatingWebhookConfiguration, each webhook pointed at the controller
    process on 127.0.0.1 (the in-cluster Service does not exist in the process lab)."""
    from ..rig.procs import RigError
    for doc in manifest_docs():
        if doc.get("kind") == "ValidatingWebhookConfiguration":
            vwc = copy.deepcopy(doc)
            break
    else:
        raise RigError("MetalLB's manifest has no ValidatingWebhookConfiguration")
    vwc["metadata"] = {"name": WEBHOOK_NAME}
    for w in vwc["webhooks"]:
        path = w["clientConfig"]["service"]["path"]
        w["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                             "caBundle": base64.b64encode(ca_pem).decode()}
    return vwc


def serving_certificate() -> bytes:
    """A self-signed certificate for 127.0.0.1 where MetalLB's webhook server reads it; returns
    the PEM (the webhook configuration's caBundle)."""
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                    "-keyout", str(CERT_DIR / "tls.key"), "-out", str(CERT_DIR / "tls.crt"),
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return (CERT_DIR / "tls.crt").read_bytes()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def controller_argv(bin_dir: Path, kubeconfig: str, namespace: str, metrics_port: int) -> list[str]:
    return [str(bin_dir / "controller"), "--kubeconfig", kubeconfig, "--namespace", namespace,
            "--ml-secret-name", "memberlist", "--deployment", "controller",
            "--webhook-mode", "enabled", "--disable-cert-rotation", "--cert-dir", str(CERT_DIR),
            "--port", str(metrics_port), "--log-level", "info"]


def speaker_pod_name(node: str) -> str:
    return f"speaker-{node}"


def speaker_argv(bin_dir: Path, kubeconfig: str, namespace: str, node: str, ip4: str,
                 key_dir: Path) -> list[str]:
    return [str(bin_dir / "speaker"), "--kubeconfig", kubeconfig, "--namespace", namespace,
            "--node-name", node, "--pod-name", speaker_pod_name(node), "--host", ip4,
            "--ml-bindaddr", ip4, "--ml-bindport", "7946",
            "--ml-labels", ",".join(f"{k}={v}" for k, v in SPEAKER_LABELS.items()),
            "--ml-secret-key-path", str(key_dir), "--port", "7472", "--log-level", "info"]


def speaker_pod(node: str, ip4: str, ip6: str) -> tuple[dict, dict]:
    """(Pod, status patch) standing for a hostNetwork speaker pod on ``node``."""
    pod = {"metadata": {"name": speaker_pod_name(node), "labels": dict(SPEAKER_LABELS)},
           "spec": {"nodeName": node, "hostNetwork": True,
                    "containers": [{"name": "speaker", "image": f"quay.io/metallb/speaker:{version()}"}]}}
    status = {"status": {"phase": "Running", "podIP": ip4, "podIPs": [{"ip": ip4}, {"ip": ip6}],
                         "hostIP": ip4, "conditions": [{"type": t, "status": "True"} for t in
                                                       ("Initialized", "Ready", "ContainersReady", "PodScheduled")]}}
    return pod, status


def bgppeer_crd_fix() -> dict:
    """metalxdp's BGPPeer CRD with conversion None, in place of MetalLB's unusable one."""
    import yaml
    crd = yaml.safe_load((REPO / "deploy" / "crds" / "metallb.io_bgppeers.yaml").read_text())
    crd["spec"].pop("conversion", None)
    return crd
