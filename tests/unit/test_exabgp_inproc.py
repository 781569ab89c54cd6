"""ExaBGP's reactor on a thread (agent/bgp/exabgp_inproc.py), started and stopped for real.

Each case runs in its own Python process: the reactor changes ExaBGP's module globals (its
signals, loggers, process table), which other tests in pytest's process check as shipped. The
neighbour is passive and nothing is bound, so no packet leaves: what is exercised is the
reactor's life (start, API attached, stop, a raise), not BGP (test_bgp_frr.py does that).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = textwrap.dedent('''
    import json, logging, socket, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from agent.bgp import exabgp_inproc
    from agent.bgp.config_render import exabgp_env
    from agent.bgp.exabgp_inproc import InProcessExaBGP
    w = Path({work!r})
    sock = w / "api.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock)); listener.listen(2); listener.settimeout(20)
    conf = w / "exabgp.conf"
    conf.write_text(
        "process ctl {{ run /bin/true " + str(sock) + "; encoder json; }}\\n"
        "neighbor 198.51.100.9 {{ router-id 198.51.100.2; local-address 198.51.100.2;"
        " local-as 64513; peer-as 64512; passive true; api {{ processes [ ctl ]; neighbor-changes; }} }}\\n")
    logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="ROOT %(message)s")
    logging.getLogger("asyncio").setLevel(logging.INFO)   # its selector line, once per asyncio.run
    def start():
        return InProcessExaBGP(conf, exabgp_env([]), timers_path=w / "timers.json",
                               api_socket=sock, log_path=w / "exabgp.log")
    def eof(conn):
        """True once the reactor closed its end of the API (everything before it read), else why."""
        try:
            while conn.recv(4096):
                pass
            return True
        except OSError as e:
            return repr(e)
    out = {{}}
''')


def run(tmp_path: Path, body: str) -> tuple[dict, str]:
    script = PRELUDE.format(root=str(ROOT), work=str(tmp_path)) + textwrap.dedent(body) + \
        "\nprint('RESULT ' + json.dumps(out))\n"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, r.stdout + r.stderr
    return json.loads(lines[-1][7:]), r.stdout + r.stderr


def test_the_api_attaches_commands_are_answered_and_stop_ends_it(tmp_path):
    out, logs = run(tmp_path, '''
        h = start()
        conn, _ = listener.accept(); conn.settimeout(10)
        conn.sendall(b"show neighbor summary\\n")
        buf = b""
        while b"done" not in buf:
            buf += conn.recv(4096)
        out["answer"] = buf.decode()
        out["running"] = h.poll()
        t = time.monotonic(); out["stopped"] = h.stop(5.0); out["stop_s"] = time.monotonic() - t
        out["code"] = h.returncode
        out["eof"] = eof(conn)
    ''')
    assert "198.51.100.9" in out["answer"] and out["running"] is None
    assert out["stopped"] and out["code"] == 0 and out["stop_s"] < 5
    assert out["eof"] is True, out["eof"]
    # ExaBGP's own lines went to exabgp.log, not to the root logger (the agent's JSON log)
    assert "ROOT" not in logs, logs
    assert "performing shutdown" in (tmp_path / "exabgp.log").read_text()


def test_a_stop_while_the_reactor_is_still_starting_is_not_lost(tmp_path):
    """Found by tests/e2e: a peer added 0.3 s after the first start stopped a reactor that was
    still importing ExaBGP; the stop was dropped, the reactor kept port 179, and every process
    started after it failed to bind."""
    out, _ = run(tmp_path, '''
        h = start()
        out["stopped"] = h.stop(10.0)
        out["code"] = h.returncode
        out["free"] = exabgp_inproc.wait_for_previous(0)
        h2 = start()                      # one reactor per process: the first is gone
        conn, _ = listener.accept()
        out["second"] = h2.poll() is None and h2.stop(5.0)
    ''')
    assert out == {"stopped": True, "code": 0, "free": True, "second": True}


def test_a_second_reactor_while_one_runs_is_refused(tmp_path):
    out, _ = run(tmp_path, '''
        h = start(); listener.accept()
        try:
            start(); out["second"] = "started"
        except RuntimeError as e:
            out["second"] = str(e)
        h.stop(5.0)
    ''')
    assert "already runs" in out["second"]


def test_a_reactor_that_raises_exits_70_with_the_traceback_and_closes_its_api(tmp_path):
    out, _ = run(tmp_path, '''
        h = start()
        conn, _ = listener.accept(); conn.settimeout(10)
        def boom():
            raise RuntimeError("injected by the test")
        while h._reactor is None or h._reactor.processes is None:
            time.sleep(0.01)
        h._reactor.processes.received = boom
        out["code"] = h.wait(10)
        out["eof"] = eof(conn)
    ''')
    assert out == {"code": 70, "eof": True}
    log = (tmp_path / "exabgp.log").read_text()
    assert "ExaBGP's reactor raised" in log and "injected by the test" in log


def test_a_stuck_reactor_is_reported_its_sockets_closed_and_its_slot_freed(tmp_path):
    """A reactor that does not come back to its loop (blocked in a call): stop() gives up after
    its timeout, logs where the thread was, closes the API connection and lets a new one start."""
    out, _ = run(tmp_path, '''
        h = start()
        conn, _ = listener.accept(); conn.settimeout(10)
        while h._reactor is None or h._reactor.processes is None:
            time.sleep(0.01)
        def stuck():
            time.sleep(60)
            return iter(())
        h._reactor.processes.received = stuck
        time.sleep(0.2)
        out["stopped"] = h.stop(1.0)
        out["eof"] = eof(conn)
        h2 = start()
        listener.accept()
        out["second"] = h2.poll() is None and h2.stop(5.0)
    ''')
    assert out == {"stopped": False, "eof": True, "second": True}
    log = (tmp_path / "exabgp.log").read_text()
    assert "did not stop within 1s" in log and "in stuck" in log
