"""metalxdp.health: the monitoring port answers /metrics, /healthz and /readyz from the process's
own checks (not every path with the metrics, as prometheus_client's server did), and 404 else."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge

from metalxdp.health import MonitoringServer, loop_live


@pytest.mark.parametrize("started,last,now,ok", [
    (False, None, 100.0, True),      # starting: not yet judged
    (True, None, 100.0, True),       # started, first pass still running
    (True, 99.0, 100.0, True),
    (True, 40.0, 100.0, True),       # 60 s: the limit itself
    (True, 39.0, 100.0, False),      # silent 61 s: wedged
])
def test_loop_live(started, last, now, ok):
    assert loop_live(started, last, now)[0] is ok


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_paths_answer_from_the_checks():
    reg = CollectorRegistry()
    Gauge("metalxdp_probe_test", "a gauge", registry=reg).set(7)
    state = {"live": (True, "ok"), "ready": (False, "no reconcile pass has completed yet")}
    srv = MonitoringServer(0, "127.0.0.1", reg, live=lambda: state["live"], ready=lambda: state["ready"]).start()
    try:
        code, body = get(srv.port, "/metrics")
        assert code == 200 and "metalxdp_probe_test 7.0" in body
        assert get(srv.port, "/healthz") == (200, "ok\n")
        assert get(srv.port, "/readyz") == (503, "no reconcile pass has completed yet\n")
        state["ready"] = (True, "ok")
        assert get(srv.port, "/readyz?verbose") == (200, "ok\n")
        state["live"] = (False, "the reconcile loop has not completed a pass for 61s")
        assert get(srv.port, "/healthz")[0] == 503
        code, body = get(srv.port, "/anything")
        assert code == 404 and "/readyz" in body
    finally:
        srv.stop()


def test_a_check_that_raises_fails_the_probe():
    def boom():
        raise RuntimeError("informer gone")
    srv = MonitoringServer(0, "127.0.0.1", CollectorRegistry(), ready=boom).start()
    try:
        code, body = get(srv.port, "/readyz")
        assert code == 503 and "informer gone" in body
    finally:
        srv.stop()


def test_counters_have_no_created_series():
    """prometheus_client adds `<counter>_created` unless disabled; metalxdp.health disables it
    for the whole process, so neither component exposes them."""
    from prometheus_client import Counter

    from controller.allocator import PoolCounters
    from controller.metrics import ControllerMetrics
    reg = CollectorRegistry()
    m = ControllerMetrics(reg)
    m.updates_total.inc()
    m.set_pool("lab-l2", PoolCounters(addresses_total=4, addresses_in_use_total=1, services_allocated_total=1))
    Counter("metalxdp_probe_events", "a labelled counter", ["peer"], registry=reg).labels("192.0.2.1").inc()
    srv = MonitoringServer(0, "127.0.0.1", reg).start()
    try:
        code, body = get(srv.port, "/metrics")
    finally:
        srv.stop()
    assert code == 200
    assert "metallb_k8s_client_updates_total 1.0" in body
    assert 'metalxdp_probe_events_total{peer="192.0.2.1"} 1.0' in body
    assert 'metallb_allocator_services_allocated_total{pool="lab-l2"} 1.0' in body
    assert "_created" not in body
