"""The echo function (RFC 5880 §6.4, §6.8.5, §6.8.9) in the pure session and the echo packet
codec: when echo runs, at which interval, what an echo that never comes back does, and which
returning packets count."""
import random

import pytest

from agent.bfd.packet import ECHO_LEN, Diag, EchoPacket, PacketError, State, decode_echo
from agent.bfd.session import Session, SessionConfig

from .test_bfd_session import LOCAL, peer

MS = 1000
ECHO = SessionConfig(300 * MS, 300 * MS, 3, echo_tx_us=50 * MS, echo_rx_us=50 * MS)


def up(cfg=ECHO, echo_rx=50 * MS, now=0.0) -> Session:
    s = Session(LOCAL, cfg, now, random.Random(1))
    s.receive(peer(State.DOWN, your=0, required_min_echo_rx_us=echo_rx), now)
    s.receive(peer(State.UP, required_min_echo_rx_us=echo_rx), now)
    s.receive(peer(State.UP, final=True, required_min_echo_rx_us=echo_rx), now)
    assert s.state == State.UP
    return s


def echoes_until(s: Session, t_end: float, step=0.001, returned=True, t0=0.0, control=True):
    """Drive the timers from t0 to t_end; every echo sent comes back 1 ms later if ``returned``;
    the peer's control packets arrive every 300 ms if ``control``."""
    sent, t, pending = [], t0, []
    while t < t_end:
        if control and round(t * 1000) % 300 == 0:
            s.receive(peer(State.UP, required_min_echo_rx_us=s.remote_min_echo_rx_us), t)
        for pkt in [p for at, p in pending if at <= t]:
            s.echo_returned(pkt, t)
        pending = [(at, p) for at, p in pending if at > t]
        acts = s.on_timer(t)
        for e in acts.echo:
            sent.append((t, e))
            if returned:
                pending.append((t + 0.001, e))
        t = round(t + step, 6)
    return sent


WHEN = [  # (our echo tx, our echo rx, peer's Required Min Echo RX, echo runs, interval ms)
    (50 * MS, 50 * MS, 50 * MS, True, 50),
    (50 * MS, 50 * MS, 200 * MS, True, 200),      # never faster than the peer asks (§6.8.9)
    (100 * MS, 100 * MS, 20 * MS, True, 100),
    (50 * MS, 50 * MS, 0, False, 0),              # the peer does not loop echo: none sent
    (0, 0, 50 * MS, False, 0),                    # echo mode off here
    (0, 50 * MS, 50 * MS, False, 0),              # we loop theirs but send none
]


@pytest.mark.parametrize("tx,rx,remote,runs,interval", WHEN)
def test_when_echo_runs_and_how_fast(tx, rx, remote, runs, interval):
    s = up(SessionConfig(300 * MS, 300 * MS, 3, echo_tx_us=tx, echo_rx_us=rx), echo_rx=remote)
    assert s.echo_active is runs
    assert s.echo_interval_us() == interval * MS
    sent = echoes_until(s, 1.0)
    if not runs:
        assert sent == []
        return
    gaps = [round((b[0] - a[0]) * 1000) for a, b in zip(sent, sent[1:])]
    # never faster than the interval; +1 ms is the 1 ms step of this simulated clock
    assert gaps and set(gaps) <= {interval, interval + 1} and interval in gaps
    assert [e.seq for _, e in sent] == list(range(1, len(sent) + 1))
    assert s.state == State.UP


def test_advertises_echo_rx_only_when_it_loops_echo():
    s = up(SessionConfig(300 * MS, 300 * MS, 3, echo_tx_us=50 * MS, echo_rx_us=0))
    pkt = s.on_timer(10.0).send[0]
    assert pkt.required_min_echo_rx_us == 0
    s = up()
    assert s.on_timer(10.0).send[0].required_min_echo_rx_us == 50 * MS


def test_echo_not_before_up():
    s = Session(LOCAL, ECHO, 0.0, random.Random(1))
    acts = s.receive(peer(State.DOWN, your=0, required_min_echo_rx_us=50 * MS), 0.0)
    assert s.state == State.INIT and not s.echo_active and acts.echo == []
    assert echoes_until(s, 0.5, control=False) == []


def test_echo_starts_with_up_and_reports_it():
    s = Session(LOCAL, ECHO, 0.0, random.Random(1))
    s.receive(peer(State.DOWN, your=0, required_min_echo_rx_us=50 * MS), 0.0)
    acts = s.receive(peer(State.UP, required_min_echo_rx_us=50 * MS), 0.1)
    assert s.state == State.UP and acts.echo_started and s.echo_active


def test_lost_echo_takes_the_session_down_with_echo_failed():
    s = up()
    sent = echoes_until(s, 0.5)                     # echoes come back: stays Up
    assert s.state == State.UP and s.counters.echo_packet_input == len(sent) > 5
    # from now on the path drops echoes; control packets still arrive every 300 ms
    t, changes = 0.5, []
    while t < 1.0:
        if round(t * 1000) % 300 == 0:
            s.receive(peer(State.UP, required_min_echo_rx_us=50 * MS), t)
        acts = s.on_timer(t)
        changes += [(t, c) for c in acts.changes]
        t = round(t + 0.001, 6)
    assert changes, "the session stayed Up although no echo came back"
    at, (old, new, diag) = changes[0]
    assert (old, new, diag) == (State.UP, State.DOWN, Diag.ECHO_FAILED)
    # the last echo came back at ~0.451 s; detection = 3 x 50 ms later
    assert 0.59 <= at <= 0.61
    assert not s.echo_active and s.echo_tx_deadline is None
    assert s.local_diag == Diag.ECHO_FAILED


def test_peer_stops_asking_for_echo_stops_it():
    s = up()
    echoes_until(s, 0.2)
    s.receive(peer(State.UP, required_min_echo_rx_us=0), 0.2)
    assert not s.echo_active
    assert echoes_until(s, 1.5, t0=0.2) == [] and s.state == State.UP


def test_control_detection_still_applies_with_echo():
    s = up()
    echoes_until(s, 2.0, control=False)             # echoes return, control packets do not
    assert s.state == State.DOWN and s.local_diag == Diag.CONTROL_DETECTION_EXPIRED


BAD = [  # what comes back -> counted or not
    ("ours", lambda s, e: e, True),
    ("other discriminator", lambda s, e: EchoPacket(e.my_discr + 1, e.nonce, e.seq), False),
    ("wrong nonce", lambda s, e: EchoPacket(e.my_discr, e.nonce ^ 1, e.seq), False),
    ("never sent", lambda s, e: EchoPacket(e.my_discr, e.nonce, e.seq + 1), False),
    ("sequence 0", lambda s, e: EchoPacket(e.my_discr, e.nonce, 0), False),
]


@pytest.mark.parametrize("name,forge,counted", BAD, ids=[b[0] for b in BAD])
def test_only_our_recent_echoes_count(name, forge, counted):
    s = up()
    e = s.on_timer(0.0).echo[0]
    assert s.echo_returned(forge(s, e), 0.001) is counted
    assert s.counters.echo_packet_input == int(counted)
    assert s.counters.echo_bad == int(not counted)


def test_a_replayed_echo_does_not_keep_the_session_up():
    s = up()
    e = s.on_timer(0.0).echo[0]
    assert s.echo_returned(e, 0.001)
    t, down = 0.002, None
    while t < 1.0 and down is None:
        s.echo_returned(e, t)                      # the same packet, again and again
        if round(t * 1000) % 300 == 0:
            s.receive(peer(State.UP, required_min_echo_rx_us=50 * MS), t)
        for c in s.on_timer(t).changes:
            down = (t, c)
        t = round(t + 0.001, 6)
    assert down and down[1][2] == Diag.ECHO_FAILED and s.counters.echo_bad > 100


def test_echo_codec_round_trip_and_rejects():
    e = EchoPacket(7, 2 ** 64 - 1, 12345)
    wire = e.encode()
    assert len(wire) == ECHO_LEN and decode_echo(wire) == e
    for bad, why in [(wire[:10], "shorter"), (b"\x02" + wire[1:], "version"),
                     (wire[:1] + b"\x10" + wire[2:], "length"),
                     (wire[:4] + b"\0\0\0\0" + wire[8:], "discriminator is 0")]:
        with pytest.raises(PacketError, match=why):
            decode_echo(bad)


def test_from_profile_echo_switches():
    from metalxdp.config.types import BFDProfile
    p = BFDProfile("e", echo_mode=True, echo_interval_ms=80)
    c = SessionConfig.from_profile(p)
    assert (c.echo_tx_us, c.echo_rx_us) == (80 * MS, 80 * MS)
    assert SessionConfig.from_profile(p, echo=False).echo_tx_us == 0
    assert SessionConfig.from_profile(p, echo=False).echo_rx_us == 0
    c = SessionConfig.from_profile(p, loops_echo=False)
    assert (c.echo_tx_us, c.echo_rx_us) == (80 * MS, 0)
    c = SessionConfig.from_profile(BFDProfile("n", echo_interval_ms=80))
    assert (c.echo_tx_us, c.echo_rx_us) == (0, 0)
