"""Runs ExaBGP 5 with the two BGPPeer timers its configuration cannot express.

    python exabgp_timers.py server exabgp.conf        # then exactly as `exabgp server ...`

ExaBGP sends keepalives every negotiated-hold-time/3 and retries a failed connection with its
own back-off (1 s growing to 60 s). MetalLB (FRR) has ``keepaliveTime`` (``neighbor X timers
<keepalive> <hold>``) and ``connectTime`` (``timers connect N``). This wrapper reads, per peer
address, ``{"keepalive": s, "connect": s}`` from the JSON file named by
``$METALXDP_EXABGP_TIMERS`` (written by the agent next to exabgp.conf, read again whenever a
session starts or a neighbour is created), and then runs ExaBGP's own ``main``:

- keepalive: the interval of the keepalives we send, never longer than the negotiated
  hold time / 3 (RFC 4271 4.4: a keepalive rate is at most one per second and the hold time
  the peers agreed stays as negotiated);
- connect: a fixed wait between connection attempts, instead of the back-off.

Both are read when they are used (a session coming up, a connection attempt failing), so a
changed value applies from the next session or attempt without restarting ExaBGP.
It replaces two small ExaBGP objects (``reactor.peer.KA``'s send timer, ``Peer._delay``) at
start, for the pinned ExaBGP 5.0 line. If those internals are not there, it says so on stderr
and runs ExaBGP unchanged (the timers then behave as ExaBGP's defaults).

It also attaches ExaBGP's API process to the agent's Unix socket **inside ExaBGP's own
process** when ``$METALXDP_EXABGP_API_SOCKET`` names that socket: the ``process ctl`` whose
command line ends with that path (``api_relay.py <socket>``) is not forked; ExaBGP reads its
commands from, and writes its acks and events to, a connection to the socket instead
(``SocketHelper``). That is the same byte stream the relay would carry, without the relay's
process (~10 MB RSS per node) and one hop less on every announce. Without the variable, or if
ExaBGP's process table is not where the 5.0 line keeps it, the relay is forked as before.

Either way the connection's first line is ``metalxdp-hello <token>``, the token the agent gave
this start of ExaBGP (``$METALXDP_EXABGP_API_TOKEN``; on a thread of the agent, the reactor
thread's own): a connection made by an ExaBGP the agent has already stopped names an older
token and is refused, instead of being taken for the new one's and then, when it closes,
restarting the new one (an in-process restart loop, found by test_bfd_lab).

Standalone on purpose: it runs under ExaBGP's Python, not the agent's packages.
"""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
import threading
import time

ENV = "METALXDP_EXABGP_TIMERS"
API_SOCKET_ENV = "METALXDP_EXABGP_API_SOCKET"
API_TOKEN_ENV = "METALXDP_EXABGP_API_TOKEN"
HELLO = "metalxdp-hello"
# the token of the ExaBGP reactor running on this thread (exabgp_inproc.py): several reactors,
# one stopping and one starting, share this module and the environment, not a thread
thread_state = threading.local()
CONNECT_TIMEOUT = 1.0    # seconds ExaBGP's reactor may wait on the agent's socket
# ExaBGP on a thread of the agent (exabgp_inproc.py) names the file here, not in the
# environment, and sends these notes to ExaBGP's log rather than to the agent's stderr
TIMERS_PATH: "str | None" = None
_installed = False


def hello(token: str) -> bytes:
    """The first line on the agent's API socket: which start of ExaBGP this connection is."""
    return f"{HELLO} {token}\n".encode()


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timers_for(address: str) -> dict:
    path = TIMERS_PATH or os.environ.get(ENV)
    if not path:
        return {}
    try:
        with open(path) as f:
            return dict(json.load(f).get(str(address), {}))
    except (OSError, ValueError, AttributeError):
        return {}


def keepalive_interval(negotiated: int, configured) -> int:
    """The keepalive interval we use: ExaBGP's (hold/3, 0 = none), shortened to the configured
    keepaliveTime; never below 1 s, never keepalives when the hold time is 0."""
    if not negotiated or not configured:
        return negotiated
    return max(1, min(negotiated, int(configured)))


def install() -> bool:
    global _installed
    if _installed:     # once per process: a second call would wrap the wrappers
        return True
    try:
        from exabgp.reactor import peer as peer_mod
        orig_ka, orig_init, orig_delay = peer_mod.KA, peer_mod.Peer.__init__, peer_mod.Delay
    except (ImportError, AttributeError) as e:
        note(f"metalxdp: ExaBGP internals not found ({e}); keepaliveTime and connectTime "
             f"are not applied")
        return False

    class KA(orig_ka):
        def __init__(self, session, proto):
            super().__init__(session, proto)
            want = timers_for(proto.neighbor["peer-address"]).get("keepalive")
            self.send_timer.keepalive = keepalive_interval(self.send_timer.keepalive, want)

    class Delay(orig_delay):
        """ExaBGP's back-off, or a fixed wait when the peer has connectTime (read at each
        failed attempt, so a changed connectTime applies to the next one)."""

        def __init__(self, address: str):
            super().__init__()
            self.address = address

        def increase(self):
            connect = timers_for(self.address).get("connect")
            if not connect:
                return super().increase()
            self._time = time.time() + float(connect)

    def peer_init(self, neighbor, reactor):
        orig_init(self, neighbor, reactor)
        self._delay = Delay(str(neighbor["peer-address"]))

    peer_mod.KA = KA
    peer_mod.Peer.__init__ = peer_init
    _installed = True
    return True


class _Writer:
    """ExaBGP's pipe to the helper's stdin: acks and JSON events, sent whole. ExaBGP sets the
    descriptor non-blocking (it means the read side), so a full socket buffer waits here."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                select.select([], [self.sock], [], 1.0)
            except OSError as e:
                # ExaBGP gives a helper up on EPIPE only (anything else it retries forever)
                raise BrokenPipeError(errno.EPIPE, f"the agent's API socket: {e}") from None
        return len(data)

    def flush(self) -> None:
        pass


class _Reader:
    """ExaBGP's pipe from the helper's stdout: it polls ``fileno()`` and ``os.read``s it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


class SocketHelper:
    """What ExaBGP's ``Processes`` uses of a ``subprocess.Popen`` (stdin, stdout, poll,
    terminate, kill, wait), over a connection to the agent's API socket. ``poll()`` reports
    an exit once the agent closed its end, which is when a relay would have exited."""

    def __init__(self, path: str, timeout: float = CONNECT_TIMEOUT):
        # one attempt, bounded: this runs on ExaBGP's reactor thread (a relay may retry for
        # seconds in its own process, we may not). The agent listens before it starts ExaBGP,
        # so the attempt succeeds at once; if it fails ExaBGP logs "could not start process"
        # and the agent, with no API connection after RELAY_WAIT, starts ExaBGP again.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            note(f"metalxdp: ExaBGP's API could not connect to {path}: {e}")
            raise
        token = getattr(thread_state, "token", None) or os.environ.get(API_TOKEN_ENV)
        try:
            if token:
                sock.sendall(hello(token))
        except OSError as e:
            sock.close()
            note(f"metalxdp: ExaBGP's API could not greet {path}: {e}")
            raise
        sock.settimeout(None)
        self.sock, self.returncode, self.pid = sock, None, os.getpid()
        self.stdin, self.stdout = _Writer(sock), _Reader(sock)
        note(f"metalxdp: ExaBGP's API attached to {path} in process {self.pid} (no relay)")

    def poll(self):
        if self.returncode is None:
            try:
                if not self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    self.returncode = 0          # the agent closed its end
            except BlockingIOError:
                pass
            except OSError:
                self.returncode = 0
        return self.returncode

    def terminate(self) -> None:
        if self.returncode is None:
            self.returncode = -15
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    kill = terminate

    def wait(self, timeout=None):
        return self.returncode


class _SubprocessFor:
    """``subprocess`` as ExaBGP's process table sees it: Popen of the command ending with
    ``path`` is a ``SocketHelper``; every other command (and name) is the real module's."""

    def __init__(self, real, path: str):
        self._real, self._path = real, path

    def __getattr__(self, name):
        return getattr(self._real, name)

    def Popen(self, args, *a, **kw):  # noqa: N802 - subprocess's name
        argv = args.split() if isinstance(args, str) else list(args)
        if argv and argv[-1] == self._path:
            return SocketHelper(self._path)
        return self._real.Popen(args, *a, **kw)


def install_api_socket(path: "str | None" = None) -> bool:
    """Attach the ``process`` whose command ends with ``path`` (default: $METALXDP_EXABGP_API_SOCKET)
    to that socket instead of forking it. Called again with another path, the latest applies."""
    path = path or os.environ.get(API_SOCKET_ENV)
    if not path:
        return False
    try:
        from exabgp.reactor.api import processes
        real = processes.subprocess
        real = getattr(real, "_real", real)    # installed before: replace, do not stack
        real.Popen  # noqa: B018 - the 5.0 line forks helpers through this module reference
    except (ImportError, AttributeError) as e:
        note(f"metalxdp: ExaBGP's process table not found ({e}); the API relay is forked")
        return False
    processes.subprocess = _SubprocessFor(real, path)
    return True


if __name__ == "__main__":
    # this file's directory holds the agent's exabgp.py: it must not shadow ExaBGP itself
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    install()
    install_api_socket()
    from exabgp.application.main import main
    sys.argv[0] = "exabgp"
    sys.exit(main())
