"""Shared pytest fixtures: the real parts (API server, namespaces, FRR) from metalxdp.rig.

Nothing here is a mock: a fixture whose component cannot start fails the test with the reason.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest

from metalxdp.rig.apiserver import BIN, ControlPlane, start_control_plane
from metalxdp.rig.frr import FRRRouter
from metalxdp.rig.netns import Topology

REPO = Path(__file__).resolve().parent.parent
# every `kubectl` a test runs is the one built with the pinned server (same minor), not whatever
# an image ships on PATH (a 1.32 kubectl against a 1.36 server is outside the version skew)
os.environ["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("the metalxdp tests need root (network namespaces, XDP, FRR): "
                                "run `sudo make test`")


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory) -> ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, once per test session."""
    cp = start_control_plane(tmp_path_factory.mktemp("controlplane"))
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def kube_api(apiserver):
    from metalxdp.kube import api_client
    return api_client(str(apiserver.kubeconfig))


@pytest.fixture(scope="session")
def crds_installed(apiserver):
    """The metallb.io CRDs applied to the session's API server (and established)."""
    from metalxdp.lab.cluster import CRD_DIR, kubectl
    kubectl(str(apiserver.kubeconfig), "apply", "-f", str(CRD_DIR))
    kubectl(str(apiserver.kubeconfig), "wait", "--for=condition=Established", "--timeout=60s",
            "crd", "--all")
    return CRD_DIR


@pytest.fixture
def k8s_namespace(kube_api) -> str:
    """A fresh Kubernetes namespace for one test, deleted afterwards."""
    from metalxdp.kube import client
    name = "t-" + secrets.token_hex(4)
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    # Services go first and synchronously: a later test's controller must not see them
    for svc in core.list_namespaced_service(name).items:
        core.delete_namespaced_service(svc.metadata.name, name)
    core.delete_namespace(name)


@pytest.fixture
def topology() -> Topology:
    """An empty topology (uniquely named namespaces + bridge); destroyed even if the test fails."""
    t = Topology()
    try:
        yield t
    finally:
        t.destroy()


@pytest.fixture
def frr_router(topology):
    """An FRR router in a 'router' namespace on the topology's segment (not started: call
    ``router.start(conf)``)."""
    host = topology.add_host("router", ipv4=["192.0.2.1/24"], ipv6=["2001:db8:0:1::1/64"],
                             forwarding=True)
    r = FRRRouter(host, Path(tempfile.mkdtemp(prefix="metalxdp-frr-")))
    yield r
    r.stop()
