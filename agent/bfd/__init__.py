"""BFD (RFC 5880 / 5881 single hop / 5883 multi hop) for the agent's BGP peers.

``packet`` and ``session`` are pure (wire format, state machine); ``transport`` owns the UDP
sockets; ``runner.BFDManager`` runs every session on its own thread so timers never wait for the
agent's event loop; ``metrics`` exports MetalLB's ``metallb_bfd_*`` series. See docs/bfd.md.
"""
