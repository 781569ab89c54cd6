"""ExaBGP's API helper: relays between ExaBGP's pipes and the driver's Unix socket.

ExaBGP runs this as its ``process ctl`` (``python api_relay.py <socket>``): our stdout is read
by ExaBGP as commands, our stdin receives its acks ("done"/"error") and JSON events. The driver
(``agent.bgp.exabgp``) owns the listening socket, so it survives ExaBGP restarts: each new
ExaBGP starts a new relay, which connects, and the driver then replays every route.

Standard library only: it runs under whatever Python ExaBGP was started with.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 10.0   # seconds to wait for the driver's socket before giving up
# the first line the driver reads: which start of ExaBGP this relay belongs to (the driver
# refuses a relay of an ExaBGP it has already stopped); same line as exabgp_timers.hello
TOKEN_ENV, HELLO = "METALXDP_EXABGP_API_TOKEN", "metalxdp-hello"


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stdin_to_socket(sock: socket.socket) -> None:
    """ExaBGP -> driver. EOF on stdin means ExaBGP is gone: close so the driver notices."""
    try:
        for line in sys.stdin.buffer:
            sock.sendall(line)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        os._exit(0)


def _say(what: str) -> None:
    # stderr reaches ExaBGP's log (exabgp.log): enough to tell a relay that never started from
    # one that could not connect
    try:
        sys.stderr.write(f"metalxdp api relay pid {os.getpid()}: {what}\n")
        sys.stderr.flush()
    except OSError:
        pass


def main() -> None:
    _say(f"started, connecting to {sys.argv[1]}")
    try:
        sock = _connect(sys.argv[1])
    except OSError as e:
        _say(f"could not connect: {e}")
        raise
    _say("connected")
    if os.environ.get(TOKEN_ENV):
        sock.sendall(f"{HELLO} {os.environ[TOKEN_ENV]}\n".encode())
    threading.Thread(target=_stdin_to_socket, args=(sock,), daemon=True).start()
    out = sys.stdout.buffer
    # driver -> ExaBGP, line by line, flushed at once: ExaBGP reads commands as they arrive
    with sock.makefile("rb") as f:
        for line in f:
            out.write(line)
            out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
