"""BFD control packet encoding and the stateless receive checks of RFC 5880 §6.8.6."""
import struct

import pytest
from hypothesis import given, strategies as st

from agent.bfd.packet import ControlPacket, Diag, PacketError, State, decode

# A Down packet as tcpdump shows FRR's first one: vers 1, diag 0, state Down, mult 3,
# my discr 0x01020304, your discr 0, 1 s / 300 ms / 50 ms
FRR_DOWN = bytes.fromhex("20 40 03 18 01020304 00000000 000f4240 000493e0 0000c350".replace(" ", ""))


def good(**over) -> bytes:
    fields = dict(state=State.UP, detect_mult=3, my_discr=9, your_discr=7,
                  desired_min_tx_us=300_000, required_min_rx_us=300_000)
    fields.update(over)
    return ControlPacket(**fields).encode()


def patch(data: bytes, offset: int, value: int) -> bytes:
    b = bytearray(data)
    b[offset] = value
    return bytes(b)


def test_decode_known_bytes():
    p = decode(FRR_DOWN)
    assert p == ControlPacket(state=State.DOWN, detect_mult=3, my_discr=0x01020304, your_discr=0,
                              desired_min_tx_us=1_000_000, required_min_rx_us=300_000,
                              required_min_echo_rx_us=50_000)
    assert p.encode() == FRR_DOWN


def test_flags_on_the_wire():
    wire = good(poll=True, diag=Diag.NEIGHBOR_DOWN, state=State.INIT)
    assert wire[0] == (1 << 5) | 3            # version 1, diag 3
    assert wire[1] == (2 << 6) | 0x20         # Init, P
    assert good(final=True)[1] == (3 << 6) | 0x10
    assert len(wire) == 24 and wire[3] == 24


def test_poll_and_final_together_cannot_be_encoded():
    with pytest.raises(ValueError):
        good(poll=True, final=True)


BAD = [  # (description, bytes, expected words in the error)
    ("too short", good()[:23], "shorter"),
    ("version 0", patch(good(), 0, 0x00), "version 0"),
    ("version 2", patch(good(), 0, 0x40), "version 2"),
    ("auth bit", patch(good(), 1, (3 << 6) | 0x04), "authentication"),
    ("length field too small", patch(good(), 3, 20), "length field 20"),
    ("length field beyond payload", patch(good(), 3, 26), "> payload"),
    ("detect mult 0", patch(good(), 2, 0), "detect multiplier"),
    ("multipoint", patch(good(), 1, (3 << 6) | 0x01), "multipoint"),
    ("my discr 0", good(my_discr=0), "my discriminator"),
    ("your discr 0 in Up", good(your_discr=0), "your discriminator is 0 in state Up"),
    ("your discr 0 in Init", good(your_discr=0, state=State.INIT), "state Init"),
    ("poll and final", patch(good(), 1, (3 << 6) | 0x30), "poll and final"),
]


@pytest.mark.parametrize("desc,data,words", BAD, ids=[b[0] for b in BAD])
def test_invalid_packets_are_rejected(desc, data, words):
    with pytest.raises(PacketError, match=words):
        decode(data)


@pytest.mark.parametrize("state", [State.DOWN, State.ADMIN_DOWN])
def test_your_discr_zero_is_fine_in_down_and_admindown(state):
    assert decode(good(your_discr=0, state=state)).your_discr == 0


def test_trailing_bytes_beyond_length_are_ignored():
    assert decode(good() + b"\0\0\0\0").my_discr == 9


def test_reserved_diag_is_tolerated():
    assert decode(patch(good(), 0, (1 << 5) | 31)).diag == Diag.NONE


u32 = st.integers(1, 2 ** 32 - 1)


@given(state=st.sampled_from(list(State)), mult=st.integers(1, 255), my=u32,
       your=st.integers(0, 2 ** 32 - 1), tx=u32, rx=st.integers(0, 2 ** 32 - 1),
       diag=st.sampled_from(list(Diag)), pf=st.sampled_from([(False, False), (True, False), (False, True)]))
def test_round_trip(state, mult, my, your, tx, rx, diag, pf):
    if your == 0 and state in (State.INIT, State.UP):
        your = 1
    p = ControlPacket(state=state, detect_mult=mult, my_discr=my, your_discr=your,
                      desired_min_tx_us=tx, required_min_rx_us=rx, diag=diag, poll=pf[0], final=pf[1])
    assert decode(p.encode()) == p


@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data):
    try:
        decode(data)
    except PacketError:
        pass
