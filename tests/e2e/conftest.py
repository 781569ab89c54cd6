"""The e2e suite's cluster: real nodes (containerd + kubelet + kube-proxy), metalxdp installed
with `kubectl apply -k` from its own image (metalxdp.clusterlab). One cluster for the session;
tests make and remove their own Services and backends."""
from __future__ import annotations

import os

import pytest

from metalxdp.lab.kube_cluster import ClusterLab
from metalxdp.lab.kube_tools import Workload


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    lab = ClusterLab(tmp_path_factory.mktemp("cluster"))
    lab.up(progress=print)

    def sandboxes_now() -> set:
        return {ns for node in lab.cluster.nodes.values() for ns in node.sandbox_netns()}

    # noted at the start too: the last test (uninstall) may leave no pod at all by the end
    sandboxes = sandboxes_now()
    yield lab
    sandboxes |= sandboxes_now()
    lab.down()
    # the pods' network namespaces go with the nodes (they used to stay in /run/netns)
    assert sandboxes, "no pod sandbox namespaces found: sandbox_netns() is broken"
    left = sandboxes & set(os.listdir("/run/netns"))
    assert not left, f"pod sandbox namespaces left behind: {sorted(left)}"


@pytest.fixture
def workload(cluster):
    w = Workload(cluster)
    yield w
    w.close()
