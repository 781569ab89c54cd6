"""BFD control packets (RFC 5880 §4.1): pure encode/decode and the receive-side validity checks of
§6.8.6 that need no session state. No sockets, no clocks.

    pkt = ControlPacket(state=State.DOWN, detect_mult=3, my_discr=7, your_discr=0,
                        desired_min_tx_us=1_000_000, required_min_rx_us=300_000)
    wire = pkt.encode()
    assert decode(wire) == pkt

Authentication is not supported: a packet with the A bit is rejected (``PacketError``), which is
what §6.8.6 requires of a session that has no authentication configured.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
HEADER_LEN = 24                       # mandatory section; authentication would follow
_FMT = struct.Struct("!BBBBIIIII")    # vers|diag, sta|flags, mult, len, 2 discrs, 3 intervals

# flag bits in the second byte, after the 2-bit state
FLAG_POLL = 0x20
FLAG_FINAL = 0x10
FLAG_CPI = 0x08           # control plane independent
FLAG_AUTH = 0x04
FLAG_DEMAND = 0x02
FLAG_MULTIPOINT = 0x01


class State(enum.IntEnum):
    """bfd.SessionState values as carried on the wire (§4.1)."""
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3

    @property
    def label(self) -> str:
        """The name FRR and the RFC use ("AdminDown", "Down", "Init", "Up")."""
        return ("AdminDown", "Down", "Init", "Up")[self]


class Diag(enum.IntEnum):
    """Diagnostic codes (§4.1): why the session last left Up."""
    NONE = 0
    CONTROL_DETECTION_EXPIRED = 1
    ECHO_FAILED = 2
    NEIGHBOR_DOWN = 3
    FORWARDING_RESET = 4
    PATH_DOWN = 5
    CONCAT_PATH_DOWN = 6
    ADMIN_DOWN = 7
    REVERSE_CONCAT_PATH_DOWN = 8


class PacketError(ValueError):
    """The packet must be discarded (§6.8.6); the message says which rule it broke."""


@dataclass(frozen=True)
class ControlPacket:
    state: State
    detect_mult: int
    my_discr: int
    your_discr: int
    desired_min_tx_us: int
    required_min_rx_us: int
    required_min_echo_rx_us: int = 0   # 0: we do not take part in the echo function
    diag: Diag = Diag.NONE
    poll: bool = False
    final: bool = False
    cpi: bool = False                  # our forwarding does not share fate with this process
    demand: bool = False

    def encode(self) -> bytes:
        if self.poll and self.final:
            raise ValueError("a control packet must not carry both Poll and Final (§6.5)")
        flags = ((int(self.state) << 6) | (FLAG_POLL if self.poll else 0)
                 | (FLAG_FINAL if self.final else 0) | (FLAG_CPI if self.cpi else 0)
                 | (FLAG_DEMAND if self.demand else 0))
        return _FMT.pack((VERSION << 5) | int(self.diag), flags, self.detect_mult, HEADER_LEN,
                         self.my_discr, self.your_discr, self.desired_min_tx_us,
                         self.required_min_rx_us, self.required_min_echo_rx_us)


def decode(data: bytes) -> ControlPacket:
    """Parse and check one received packet (the stateless rules of §6.8.6).

    Raises ``PacketError`` for: short packet, version != 1, length field < 24 or larger than
    the payload, authentication present (unsupported), detect mult 0, multipoint set, my
    discriminator 0, your discriminator 0 while the state is Init or Up. The remaining rule
    (a non-zero your discriminator must name one of our sessions) is the caller's: it needs
    the session table.
    """
    if len(data) < HEADER_LEN:
        raise PacketError(f"packet of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    vd, sf, mult, length, my_d, your_d, tx, rx, echo = _FMT.unpack_from(data)
    version = vd >> 5
    if version != VERSION:
        raise PacketError(f"version {version}, expected {VERSION}")
    if sf & FLAG_AUTH:
        # §6.8.6: A bit set and no authentication in use -> discard (we support none)
        raise PacketError("authentication present, but BFD authentication is not supported")
    if length < HEADER_LEN:
        raise PacketError(f"length field {length} < {HEADER_LEN}")
    if length > len(data):
        raise PacketError(f"length field {length} > payload {len(data)}")
    if mult == 0:
        raise PacketError("detect multiplier is 0")
    if sf & FLAG_MULTIPOINT:
        raise PacketError("multipoint bit set")
    if my_d == 0:
        raise PacketError("my discriminator is 0")
    state = State(sf >> 6)
    if your_d == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        raise PacketError(f"your discriminator is 0 in state {state.label}")
    if (sf & FLAG_POLL) and (sf & FLAG_FINAL):
        raise PacketError("poll and final both set")
    diag_code = vd & 0x1F
    try:
        diag = Diag(diag_code)
    except ValueError:            # reserved codes: keep the packet, the code is informational
        diag = Diag.NONE
    return ControlPacket(state=state, detect_mult=mult, my_discr=my_d, your_discr=your_d,
                         desired_min_tx_us=tx, required_min_rx_us=rx, required_min_echo_rx_us=echo,
                         diag=diag, poll=bool(sf & FLAG_POLL), final=bool(sf & FLAG_FINAL),
                         cpi=bool(sf & FLAG_CPI), demand=bool(sf & FLAG_DEMAND))


# ---- echo packets (RFC 5880 §6.4, RFC 5881 §4) ------------------------------------------------
# The payload of an echo packet is a local matter (§6.4): only the system that sent it reads it.
# Ours: version 1, length 24, two reserved bytes, our discriminator, a per-session random nonce
# and a sequence number. A returning packet counts only if its (discriminator, nonce, sequence)
# is one the session sent recently, so a forged or replayed echo cannot keep a dead path Up.
ECHO_PORT = 3785
ECHO_VERSION = 1
ECHO_LEN = 24
_ECHO_FMT = struct.Struct("!BBHIQQ")


@dataclass(frozen=True)
class EchoPacket:
    my_discr: int
    nonce: int
    seq: int

    def encode(self) -> bytes:
        return _ECHO_FMT.pack(ECHO_VERSION, ECHO_LEN, 0, self.my_discr, self.nonce, self.seq)


def decode_echo(data: bytes) -> EchoPacket:
    """Parse one of our own echo packets that came back; ``PacketError`` if it is not one."""
    if len(data) < ECHO_LEN:
        raise PacketError(f"echo packet of {len(data)} bytes is shorter than {ECHO_LEN}")
    ver, length, _res, discr, nonce, seq = _ECHO_FMT.unpack_from(data)
    if ver != ECHO_VERSION or length != ECHO_LEN:
        raise PacketError(f"echo packet version {ver} length {length}, expected 1 and {ECHO_LEN}")
    if discr == 0:
        raise PacketError("echo packet discriminator is 0")
    return EchoPacket(discr, nonce, seq)
