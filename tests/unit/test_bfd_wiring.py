"""The pure parts of the BGP seam: which BFD sessions a node's BGPPeers need, and the callback
that turns BFD state changes into BGPSpeaker.peer_up / peer_down."""
import ipaddress

from agent.bfd.runner import SessionSpec, sessions_for_peers, up_down_callback
from metalxdp.config.types import BFDProfile, BGPPeer

FAST = BFDProfile("fast", receive_interval_ms=100, transmit_interval_ms=100)


def peer(name, addr, profile="", multihop=False, source=None):
    return BGPPeer(name=name, my_asn=64501, peer_asn=64500, peer_address=ipaddress.ip_address(addr),
                   source_address=ipaddress.ip_address(source) if source else None,
                   ebgp_multihop=multihop, bfd_profile=profile)


def test_sessions_for_peers():
    peers = [peer("a", "192.0.2.1", "fast"), peer("b", "2001:db8:0:1:0::1", "fast", source="2001:db8:0:1::11"),
             peer("c", "198.51.100.1", "fast", multihop=True), peer("d", "192.0.2.2"),
             peer("e", "192.0.2.3", "missing")]
    assert sessions_for_peers(peers, {"fast": FAST}) == {
        "192.0.2.1": SessionSpec(None, FAST, False),
        "2001:db8:0:1::1": SessionSpec("2001:db8:0:1::11", FAST, False),
        "198.51.100.1": SessionSpec(None, FAST, True),
    }


ROWS = [  # (old, new, expected call)
    ("Down", "Up", ("up", "peer-a")),
    ("Init", "Up", ("up", "peer-a")),
    ("Up", "Down", ("down", "peer-a")),
    ("Up", "AdminDown", ("down", "peer-a")),
    ("Down", "Init", None),            # never Up yet: BGP is not held down (as FRR does)
    ("Init", "Down", None),
    ("Down", "AdminDown", None),
]


def test_up_down_callback_table():
    for old, new, expected in ROWS:
        calls = []
        cb = up_down_callback(lambda n: calls.append(("up", n)), lambda n: calls.append(("down", n)),
                              key={"192.0.2.1": "peer-a"}.get)
        cb("192.0.2.1", old, new)
        cb("203.0.113.9", old, new)    # not one of ours: ignored
        assert calls == ([expected] if expected else []), (old, new)
