"""What the API-server benchmarks share: a fresh etcd + kube-apiserver with the metallb.io CRDs."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from metalxdp.kube import api_client
from metalxdp.lab.cluster import CRD_DIR, kubectl
from metalxdp.rig.apiserver import start_control_plane


@contextmanager
def api_server_with_crds(prefix: str) -> Iterator[tuple[Path, str, object]]:
    """(work dir, kubeconfig path, API client) of a new control plane whose CRDs are Established;
    stopped on exit."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    cp = start_control_plane(work / "cp", controller_manager=False)
    try:
        kc = str(cp.kubeconfig)
        kubectl(kc, "apply", "-f", str(CRD_DIR))
        kubectl(kc, "wait", "--for=condition=Established", "crd", "--all")
        yield work, kc, api_client(kc)
    finally:
        cp.stop()
