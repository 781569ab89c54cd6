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

Standalone on purpose: it runs under ExaBGP's Python, not the agent's packages.
"""
from __future__ import annotations

import json
import os
import sys
import time

ENV = "METALXDP_EXABGP_TIMERS"


def timers_for(address: str) -> dict:
    path = os.environ.get(ENV)
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
    try:
        from exabgp.reactor import peer as peer_mod
        orig_ka, orig_init, orig_delay = peer_mod.KA, peer_mod.Peer.__init__, peer_mod.Delay
    except (ImportError, AttributeError) as e:
        print(f"metalxdp: ExaBGP internals not found ({e}); keepaliveTime and connectTime "
              f"are not applied", file=sys.stderr)
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
    return True


if __name__ == "__main__":
    # this file's directory holds the agent's exabgp.py: it must not shadow ExaBGP itself
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    install()
    from exabgp.application.main import main
    sys.argv[0] = "exabgp"
    sys.exit(main())
