"""Interpreter settings the long-running daemons (agent, controller) share.

``tune_interpreter()``: the GIL's switch interval goes from CPython's 5 ms to 1 ms. The agent
hands an announcement across threads (watch -> reconcile pass -> BGP speaker -> ExaBGP's
reactor) and the controller a decision to a writer thread; a thread woken for that waits for
the GIL until the running one blocks or the interval ends. On a busy node (cluster lab: 2
cores shared by the API server, etcd and three nodes) each hand-over cost up to the interval,
which was part of every BGP announce (issue 16's create -> route row). Python code in these
daemons is short bursts between I/O, so the extra switches cost nothing measurable.
"""
from __future__ import annotations

import sys

SWITCH_INTERVAL_S = 0.001


def tune_interpreter() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
