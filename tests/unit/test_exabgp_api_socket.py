"""ExaBGP's API attached in ExaBGP's own process (agent/bgp/exabgp_timers.py): the object that
stands in for the forked relay, over a real Unix socket pair (no ExaBGP here; the real ExaBGP
through the wrapper is tests/integration/test_exabgp_api_socket.py)."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import subprocess

import pytest

from agent.bgp import exabgp_timers
from agent.bgp.exabgp import read_hello
from agent.bgp.exabgp_timers import SocketHelper, _SubprocessFor


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "api.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    yield path, s
    s.close()


def test_commands_and_events_cross_the_socket_as_through_the_relay(listener):
    path, ls = listener
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    # ExaBGP makes the read side non-blocking, as it does a pipe
    fd = helper.stdout.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
    agent.sendall(b"neighbor 192.0.2.1 announce route 203.0.113.7/32 next-hop self\n")
    assert os.read(fd, 16384) == b"neighbor 192.0.2.1 announce route 203.0.113.7/32 next-hop self\n"
    helper.stdin.write(b"done\n")
    helper.stdin.flush()
    assert agent.recv(100) == b"done\n"
    assert helper.poll() is None
    agent.close()


def test_a_large_event_waits_for_room_instead_of_failing(listener):
    """The descriptor is non-blocking (ExaBGP set it for reading): a write larger than the
    socket buffer must wait for the agent to read, not raise or drop bytes."""
    path, ls = listener
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    fcntl.fcntl(helper.stdout.fileno(), fcntl.F_SETFL, os.O_NONBLOCK)
    big = b"x" * (4 << 20) + b"\n"
    import threading
    got = bytearray()

    def read():
        while len(got) < len(big):
            got.extend(agent.recv(1 << 16))
    t = threading.Thread(target=read)
    t.start()
    assert helper.stdin.write(big) == len(big)
    t.join(10)
    assert bytes(got) == big


def test_poll_reports_an_exit_once_the_agent_closed_its_end(listener):
    path, ls = listener
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    assert helper.poll() is None
    agent.close()
    assert helper.poll() == 0
    assert os.read(helper.stdout.fileno(), 100) == b""   # what ExaBGP reads next: EOF


def test_pending_data_is_not_an_exit(listener):
    path, ls = listener
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    agent.sendall(b"x\n")
    assert helper.poll() is None
    assert os.read(helper.stdout.fileno(), 100) == b"x\n"   # the peek left it there
    agent.close()


def test_terminate_closes_and_the_agent_sees_eof(listener):
    path, ls = listener
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    helper.terminate()
    assert helper.poll() is not None and helper.wait(timeout=2) is not None
    agent.settimeout(2)
    assert agent.recv(10) == b""
    helper.kill()          # ExaBGP may kill after terminate: harmless


def test_writing_after_the_agent_went_away_is_a_broken_pipe(listener):
    """ExaBGP's write() turns EPIPE into 'the helper is broken'; any other OSError it retries
    forever, so the stand-in must say EPIPE."""
    path, ls = listener
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    agent.close()
    with pytest.raises(BrokenPipeError) as e:
        for _ in range(100):
            helper.stdin.write(b"event\n")
    assert e.value.errno == errno.EPIPE


def test_no_listener_fails_at_once_with_the_os_error(tmp_path):
    with pytest.raises(OSError):
        SocketHelper(str(tmp_path / "absent.sock"), timeout=0.5)


@pytest.mark.parametrize("argv,attached", [
    (["/usr/bin/python3", "-I", "-S", "/opt/metalxdp/agent/bgp/api_relay.py", "SOCK"], True),
    ("/usr/bin/python3 /opt/metalxdp/agent/bgp/api_relay.py SOCK", True),
    (["/usr/bin/env", "true"], False),                 # any other helper: really forked
    (["/bin/echo", "SOCK", "more"], False),            # the path, but not as the last word
])
def test_only_the_command_ending_with_the_socket_is_attached(listener, argv, attached):
    path, ls = listener
    argv = argv.replace("SOCK", path) if isinstance(argv, str) else [a.replace("SOCK", path) for a in argv]
    sub = _SubprocessFor(subprocess, path)
    assert sub.PIPE is subprocess.PIPE       # the rest of the module is the real one
    p = sub.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert isinstance(p, SocketHelper) is attached
        if attached:
            ls.accept()[0].close()
    finally:
        p.kill()
        p.wait(timeout=2)


def test_the_pinned_exabgp_forks_helpers_through_the_module_reference_we_replace():
    """install_api_socket replaces ``exabgp.reactor.api.processes.subprocess``: if a new
    ExaBGP stopped calling ``subprocess.Popen`` there, the relay would quietly be forked again
    (still working, ~10 MB more per node). This fails first."""
    import inspect
    from exabgp.reactor.api import processes
    src = inspect.getsource(processes.Processes._start)
    assert "subprocess.Popen(" in src and processes.subprocess is subprocess
    assert "os.read(proc.stdout.fileno()" in inspect.getsource(processes.Processes.received)


def test_the_hello_names_the_reactor_threads_start_before_the_environments(listener, monkeypatch):
    """In the agent a stopping reactor and a starting one share the environment (which holds the
    newest token): the token of the reactor's own thread wins."""
    import threading
    path, ls = listener
    monkeypatch.setenv(exabgp_timers.API_TOKEN_ENV, "newest")
    SocketHelper(path)
    agent, _ = ls.accept()
    assert agent.recv(100) == b"metalxdp-hello newest\n"

    def on_a_reactor_thread():
        exabgp_timers.thread_state.token = "older"
        SocketHelper(path)
    t = threading.Thread(target=on_a_reactor_thread)
    t.start()
    t.join(5)
    agent2, _ = ls.accept()
    assert agent2.recv(100) == b"metalxdp-hello older\n"


def test_no_token_no_hello(listener, monkeypatch):
    path, ls = listener
    monkeypatch.delenv(exabgp_timers.API_TOKEN_ENV, raising=False)
    helper = SocketHelper(path)
    agent, _ = ls.accept()
    helper.stdin.write(b"done\n")
    assert agent.recv(100) == b"done\n"


@pytest.mark.parametrize("sent, close, token, rest, then", [
    (b"metalxdp-hello 0a1b\ndone\n", False, "0a1b", "", b"done\n"),
    (b"metalxdp-hello 0a1b\n", True, "0a1b", "", b""),
    (b"done\n{\"type\": \"state\"}\n", False, None, "done\n", b'{"type": "state"}\n'),
    (b"metalxdp-hello \n", True, None, "", b""),           # no token in it
    (b"metalxdp-hello 0a1b", True, None, "metalxdp-hello 0a1b", b""),   # cut short: not a hello
    (b"", True, None, "", b""),                              # closed at once
    (b"neighbor 192.0.2.1", False, None, "neighbor 192.0.2.1", b""),    # no line within the wait
])
def test_read_hello(sent, close, token, rest, then):
    a, b = socket.socketpair()
    a.sendall(sent)
    if close:
        a.close()
    assert read_hello(b, wait=0.3) == (token, rest)
    b.settimeout(0.3)
    try:
        got = b.recv(100)
    except socket.timeout:
        got = b""
    assert got == then
    b.close()
