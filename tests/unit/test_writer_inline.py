"""ServiceWriter: a lone Service's status is written on the caller's thread (no hand-over to a
writer thread); anything else, and every retry, on the writer threads, newest state last."""
from __future__ import annotations

import threading

import pytest

import controller.writer as writer_mod
from controller.writer import ServiceWriter
from metalxdp.kube import ApiError


class Resp:
    def read(self):
        return b"{}"


class FakeAPI:
    """Stands in for metalxdp.kube.request: records (thread, path, body); ``fail`` answers
    that many requests with HTTP 500; ``hold`` blocks the first request until set."""

    def __init__(self, fail: int = 0, hold: threading.Event | None = None):
        self.calls: list[tuple[str, str, dict]] = []
        self.fail, self.hold = fail, hold
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, api, method, path, *, body=None, content_type=None, **kw):
        with self.lock:
            first = not self.calls
            self.calls.append((threading.current_thread().name, path, body))
        self.entered.set()
        if first and self.hold is not None:
            assert self.hold.wait(10)
        if self.fail > 0:
            self.fail -= 1
            raise ApiError(500, "Internal Server Error")
        return Resp()


@pytest.fixture
def fake(monkeypatch):
    def make(**kw):
        f = FakeAPI(**kw)
        monkeypatch.setattr(writer_mod, "request", f)
        monkeypatch.setattr(writer_mod.time, "sleep", lambda s: None)
        return f
    return make


def ingress(call):
    return [i["ip"] for i in call[2]["status"]["loadBalancer"]["ingress"]]


def test_a_lone_service_is_written_on_the_callers_thread(fake):
    f = fake()
    w = ServiceWriter(api=None)
    w.update("ns/a", ("192.0.2.10",), "p", inline=True)
    assert [c[0] for c in f.calls] == [threading.current_thread().name]
    assert w.pending() == 0 and w.flush(5)


def test_not_inline_goes_to_a_writer_thread(fake):
    f = fake()
    w = ServiceWriter(api=None)
    w.update("ns/a", ("192.0.2.10",), "p")
    assert w.flush(5)
    assert f.calls[0][0].startswith("writer")


def test_inline_while_another_write_is_in_flight_goes_to_a_writer_thread(fake):
    hold = threading.Event()
    f = fake(hold=hold)
    w = ServiceWriter(api=None)
    w.update("ns/a", ("192.0.2.10",), "p")          # held on a writer thread
    assert f.entered.wait(5)
    w.update("ns/b", ("192.0.2.11",), "p", inline=True)
    hold.set()
    assert w.flush(5)
    assert all(name.startswith("writer") for name, _p, _b in f.calls), f.calls


def test_a_failed_inline_attempt_is_retried_on_a_writer_thread(fake):
    f = fake(fail=2)
    w = ServiceWriter(api=None)
    w.update("ns/a", ("192.0.2.10",), "p", inline=True)
    assert w.flush(5)
    names = [c[0] for c in f.calls]
    assert names[0] == threading.current_thread().name
    assert len(names) == 3 and all(n.startswith("writer") for n in names[1:]), names


def test_a_newer_state_queued_during_an_inline_write_is_written_after_it(fake):
    hold = threading.Event()
    f = fake(hold=hold)
    w = ServiceWriter(api=None)
    t = threading.Thread(target=w.update, args=("ns/a", ("192.0.2.10",), "p"), kwargs={"inline": True},
                         name="reconcile")
    t.start()
    assert f.entered.wait(5)
    w.update("ns/a", ("192.0.2.20",), "p", inline=True)   # in flight: queued, not inline
    hold.set()
    t.join(5)
    assert w.flush(5)
    assert [c[0] for c in f.calls][0] == "reconcile"
    assert ingress(f.calls[-1]) == ["192.0.2.20"] and len(f.calls) == 2
