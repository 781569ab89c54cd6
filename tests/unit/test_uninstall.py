"""agent.uninstall.decide: at SIGTERM, clean up (detach XDP, unpin) only when the DaemonSet is
gone or going; keep the program for a restart, above all when the API does not answer."""
from __future__ import annotations

import pytest

from agent.uninstall import LEAVE, RESTART, UNINSTALL, daemonset_owner, decide, stop_mode

POD = {"metadata": {"name": "speaker-x", "ownerReferences": [
    {"kind": "DaemonSet", "name": "speaker", "controller": True}]}}
DS = {"metadata": {"name": "speaker"}}
DS_DELETING = {"metadata": {"name": "speaker", "deletionTimestamp": "2026-12-03T12:00:00Z"}}


@pytest.mark.parametrize("pod,ds,want", [
    ((200, POD), (200, DS), False),             # a restart or a rollout: keep
    ((200, POD), (404, None), True),            # kubectl delete -k: the DaemonSet went first
    ((200, POD), (200, DS_DELETING), True),     # foreground deletion in progress
    ((200, POD), (403, None), True),            # the Role went first
    ((401, None), None, True),                  # the ServiceAccount (its token) went first
    ((403, None), None, True),
    ((0, None), None, False),                   # API unreachable: never clean up on a guess
    ((500, None), None, False),
    ((200, POD), (0, None), False),
    ((200, POD), (503, None), False),
    ((200, {"metadata": {"name": "p"}}), None, False),   # not run by a DaemonSet (the lab)
])
def test_decide(pod, ds, want):
    got, why = decide(pod, ds)
    assert got is want, why
    assert why


@pytest.mark.parametrize("ns,want", [
    ((200, {"metadata": {"name": "metallb-system", "deletionTimestamp": "2026-12-03T12:00:00Z"}}), True),
    ((200, {"metadata": {"name": "metallb-system"}, "status": {"phase": "Terminating"}}), True),
    ((200, {"metadata": {"name": "metallb-system"}, "status": {"phase": "Active"}}), False),
    ((0, None), False),
])
def test_decide_namespace_being_deleted(ns, want):
    """The namespace controller may end the pods while the DaemonSet still stands."""
    assert decide((200, POD), (200, DS), ns)[0] is want


def test_daemonset_owner():
    assert daemonset_owner(POD) == "speaker"
    assert daemonset_owner({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "r"}]}}) is None
    assert daemonset_owner({}) is None


POD_DELETING = {"metadata": {**POD["metadata"], "deletionTimestamp": "2026-12-03T12:00:00Z"}}
NODE = (200, {"metadata": {"name": "node1"}})


@pytest.mark.parametrize("pod,ds,node,want", [
    ((200, POD_DELETING), (200, DS), NODE, RESTART),          # a rollout / kubectl delete pod
    ((200, POD), (200, DS), NODE, LEAVE),                     # not deleted: node shutdown, container kill
    ((200, POD_DELETING), (200, DS), (0, None), LEAVE),       # node not readable: do not guess
    ((200, POD_DELETING), (200, DS), None, LEAVE),            # no node name known
    ((200, POD_DELETING), (200, DS), (200, {"metadata": {"name": "node1",
                                             "deletionTimestamp": "2026-12-03T12:00:00Z"}}), LEAVE),
    ((200, POD_DELETING), (0, None), NODE, LEAVE),            # DaemonSet not readable
    ((200, POD_DELETING), (404, None), NODE, UNINSTALL),      # uninstall wins
    ((0, None), None, NODE, LEAVE),
])
def test_stop_mode(pod, ds, node, want):
    got, why = stop_mode(pod, ds, None, node)
    assert got == want, why
    assert why

