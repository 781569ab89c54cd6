"""metallb_k8s_client_updates_total / ..._update_errors_total, counted as MetalLB counts them
(internal/k8s/controllers: ``updates.Inc()`` once per reconciled object update, ``updateErrors.Inc()``
when its handling fails), in the controller (one per work-queue key) and the agent (one per watch
event a reconcile pass consumed); plus metalxdp_speaker_announcement_changes_total."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from agent.metrics import AgentMetrics, announcement_changes, processed_updates
from controller.metrics import ControllerMetrics
from controller.reconcile import CONFIG_KEY, Controller


def value(reg: CollectorRegistry, name: str, **labels) -> float:
    return reg.get_sample_value(name, labels) or 0.0


# ---- the controller: one update per processed key ------------------------------------------

class NoWrites:
    """The writer seam (ServiceWriter's methods the Controller calls); these tests write nothing."""

    def update(self, *a, **kw): pass
    def keyed(self, *a, **kw): pass
    def event(self, *a, **kw): pass
    def pending(self): return 0
    def close(self): pass


def controller(reg: CollectorRegistry, fail: set) -> Controller:
    c = Controller(api=None, metrics=ControllerMetrics(reg), writer=NoWrites())
    c._learned = True

    def handled(key):
        if key in fail:
            raise RuntimeError(f"{key} broke")
    c._reload_config = lambda: handled(CONFIG_KEY)
    c.sync_service = handled
    return c


CONTROLLER = [  # (description, keys processed, keys whose handling raises, updates, errors)
    ("nothing processed", [], set(), 0, 0),
    ("config then two services", [CONFIG_KEY, "default/a", "default/b"], set(), 3, 0),
    ("one service fails", [CONFIG_KEY, "default/a", "default/b"], {"default/b"}, 3, 1),
    ("the same key twice counts twice (two updates)", ["default/a", "default/a"], {"default/a"}, 2, 2),
    ("a failing config reload", [CONFIG_KEY], {CONFIG_KEY}, 1, 1),
]


@pytest.mark.parametrize("desc,keys,fail,updates,errors", CONTROLLER, ids=[r[0] for r in CONTROLLER])
def test_controller_counts_processed_keys(desc, keys, fail, updates, errors):
    reg = CollectorRegistry()
    c = controller(reg, fail)
    for k in keys:
        c.process(k)
    assert value(reg, "metallb_k8s_client_updates_total") == updates
    assert value(reg, "metallb_k8s_client_update_errors_total") == errors


def test_full_resync_sets_last_sync_seconds():
    """metalxdp_controller_last_sync_seconds: how long the resync that just finished took."""
    import time
    reg = CollectorRegistry()
    c = Controller(api=None, metrics=ControllerMetrics(reg), writer=NoWrites())
    c._resync_t0 = time.monotonic() - 0.25
    c._resync_finished()
    assert 0.25 <= value(reg, "metalxdp_controller_last_sync_seconds") < 5
    assert c._resync_t0 is None


def test_agent_pass_is_timed():
    """Every agent pass lands in metalxdp_agent_reconcile_seconds, a failed one too."""
    import time
    from agent.node import Agent
    reg = CollectorRegistry()
    a = Agent.__new__(Agent)      # only what reconcile_counted touches
    import threading
    a._pending_lock, a._pending_updates, a._svc_info = threading.Lock(), 0, {}
    a.metrics = AgentMetrics(reg)
    a.reconcile = lambda: time.sleep(0.02)
    a.reconcile_counted()

    def broken():
        raise RuntimeError("boom")
    a.reconcile = broken
    a.reconcile_counted()
    assert value(reg, "metalxdp_agent_reconcile_seconds_count") == 2
    assert 0.02 <= value(reg, "metalxdp_agent_reconcile_seconds_sum") < 5
    assert value(reg, "metalxdp_agent_reconcile_seconds_bucket", le="0.01") == 1   # the failed one


# ---- the agent: a pass processes the events that arrived since the previous one ------------

PASSES = [  # (description, pending events, pass failed, (updates, errors))
    ("idle periodic pass", 0, False, (0, 0)),
    ("three events coalesced into one pass", 3, False, (3, 0)),
    ("a failed pass fails its events", 2, True, (2, 2)),
    ("a failed periodic pass still counts one error", 0, True, (0, 1)),
]


@pytest.mark.parametrize("desc,pending,failed,want", PASSES, ids=[r[0] for r in PASSES])
def test_processed_updates(desc, pending, failed, want):
    assert processed_updates(pending, failed) == want


def test_agent_metric_names():
    reg = CollectorRegistry()
    m = AgentMetrics(reg)
    m.updates_total.inc(2)
    m.update_errors_total.inc()
    m.announcement_changes.labels("layer2", "192.0.2.200", "gained").inc()
    assert value(reg, "metallb_k8s_client_updates_total") == 2
    assert value(reg, "metallb_k8s_client_update_errors_total") == 1
    assert value(reg, "metalxdp_speaker_announcement_changes_total", protocol="layer2",
                 ip="192.0.2.200", change="gained") == 1


# ---- announcement changes (the dashboard's failovers) ---------------------------------------

L2 = "layer2"
V1, V2, V6 = "192.0.2.200", "192.0.2.201", "2001:db8:0:1::200"
CHANGES = [  # rows build on each other: (description, announced after the pass, changes counted)
    ("first pass: nothing announced", set(), []),
    ("elected for two VIPs", {(L2, V1), (L2, V6)}, [(L2, V1, "gained"), (L2, V6, "gained")]),
    ("nothing moved", {(L2, V1), (L2, V6)}, []),
    ("V1 failed over to another node, V2 came here",
     {(L2, V2), (L2, V6)}, [(L2, V1, "lost"), (L2, V2, "gained")]),
    ("the same IP in BGP is its own pair", {(L2, V2), (L2, V6), ("bgp", V2)}, [("bgp", V2, "gained")]),
    ("everything withdrawn", set(), [("bgp", V2, "lost"), (L2, V2, "lost"), (L2, V6, "lost")]),
]


def test_announcement_changes_table():
    before: set = set()
    for desc, after, want in CHANGES:
        assert announcement_changes(before, after) == want, desc
        before = after
