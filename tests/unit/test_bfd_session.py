"""The BFD session state machine (RFC 5880 §6.2, §6.8) driven with explicit time: tables of
(state, received packet) -> (new state, diagnostic, packets), then timers, poll/final, passive
role, AdminDown, detection timeout and jitter bounds."""
import random

import pytest

from agent.bfd.packet import ControlPacket, Diag, State
from agent.bfd.session import SLOW_TX_US, Session, SessionConfig

MS = 1000
LOCAL, REMOTE = 7, 99
CFG = SessionConfig(300 * MS, 300 * MS, 3)


def peer(state: State, your: int = LOCAL, tx=300 * MS, rx=300 * MS, mult=3, **kw) -> ControlPacket:
    return ControlPacket(state=state, detect_mult=mult, my_discr=REMOTE,
                         your_discr=your if state in (State.INIT, State.UP) or your else 0,
                         desired_min_tx_us=tx, required_min_rx_us=rx, **kw)


def session_in(state: State, cfg: SessionConfig = CFG, now: float = 0.0) -> Session:
    """A session brought to ``state`` through the real transitions."""
    s = Session(LOCAL, cfg, now, random.Random(1))
    if state == State.ADMIN_DOWN:
        s.admin_down(now)
    if state in (State.INIT, State.UP):
        s.receive(peer(State.DOWN, your=0), now)
    if state == State.UP:
        s.receive(peer(State.UP), now)
        s.receive(peer(State.UP, final=True), now)    # end the poll that leaving 1 s started
    assert s.state == state
    return s


TRANSITIONS = [  # (our state, received state, new state, diag after, packet sent at once)
    (State.DOWN, State.ADMIN_DOWN, State.DOWN, Diag.NONE, False),
    (State.DOWN, State.DOWN, State.INIT, Diag.NONE, True),
    (State.DOWN, State.INIT, State.UP, Diag.NONE, True),
    (State.DOWN, State.UP, State.DOWN, Diag.NONE, False),
    (State.INIT, State.ADMIN_DOWN, State.DOWN, Diag.NEIGHBOR_DOWN, True),
    (State.INIT, State.DOWN, State.INIT, Diag.NONE, False),
    (State.INIT, State.INIT, State.UP, Diag.NONE, True),
    (State.INIT, State.UP, State.UP, Diag.NONE, True),
    (State.UP, State.ADMIN_DOWN, State.DOWN, Diag.NEIGHBOR_DOWN, True),
    (State.UP, State.DOWN, State.DOWN, Diag.NEIGHBOR_DOWN, True),
    (State.UP, State.INIT, State.UP, Diag.NONE, False),
    (State.UP, State.UP, State.UP, Diag.NONE, False),
    (State.ADMIN_DOWN, State.DOWN, State.ADMIN_DOWN, Diag.ADMIN_DOWN, False),
    (State.ADMIN_DOWN, State.UP, State.ADMIN_DOWN, Diag.ADMIN_DOWN, False),
]


@pytest.mark.parametrize("ours,theirs,new,diag,sends", TRANSITIONS,
                         ids=[f"{a.label}+{b.label}->{c.label}" for a, b, c, _, _ in TRANSITIONS])
def test_state_table(ours, theirs, new, diag, sends):
    s = session_in(ours)
    acts = s.receive(peer(theirs), now=1.0)
    assert s.state == new
    assert s.local_diag == diag
    assert acts.changes == ([(ours, new, diag)] if new != ours else [])
    assert bool(acts.send) == sends
    for p in acts.send:
        assert p.state == new and p.my_discr == LOCAL and p.your_discr == REMOTE


def test_handshake_from_nothing_to_up_and_events():
    s = Session(LOCAL, CFG, 0.0, random.Random(1))
    first = s.on_timer(0.0).send
    assert [p.state for p in first] == [State.DOWN] and first[0].your_discr == 0
    assert first[0].desired_min_tx_us == SLOW_TX_US     # slow rate until Up (§6.8.3)
    assert first[0].required_min_rx_us == 300 * MS
    s.receive(peer(State.DOWN, your=0), 0.1)
    acts = s.receive(peer(State.UP), 0.2)
    assert acts.changes == [(State.INIT, State.UP, Diag.NONE)]
    up_pkt = acts.send[0]
    assert up_pkt.poll and up_pkt.desired_min_tx_us == 300 * MS   # leaving 1 s needs a poll
    assert (s.counters.session_up, s.counters.session_down) == (1, 0)
    s.receive(peer(State.DOWN), 0.3)
    assert (s.counters.session_up, s.counters.session_down) == (1, 1)


def test_packets_with_someone_elses_discriminator_are_ignored():
    s = session_in(State.UP)
    acts = s.receive(peer(State.DOWN, your=12345), 1.0)
    assert s.state == State.UP and not acts.send and not acts.changes
    assert s.counters.bad_packets == 1


# ---- timers ------------------------------------------------------------------------------
def sends_between(s: Session, start: float, end: float, step: float = 0.001) -> list[float]:
    """Drive the timers from ``start`` to ``end`` and return when packets went out."""
    out, t = [], start
    for _ in range(int((end - start) / step) + 2):
        if t > end:
            break
        d = s.next_deadline()
        if d is None or d > end:
            break
        t = max(t, d)
        if s.on_timer(t).send:
            out.append(t)
    return out


def gaps(ts):
    return [b - a for a, b in zip(ts, ts[1:])]


def test_slow_rate_while_down():
    s = Session(LOCAL, CFG, 0.0, random.Random(2))
    s.remote_min_rx_us = 1
    g = gaps(sends_between(s, 0.0, 30.0))
    assert len(g) > 25 and all(0.75 - 1e-9 <= x <= 1.0 for x in g)


def test_up_rate_is_max_of_our_tx_and_their_rx():
    s = session_in(State.UP)
    g = gaps(sends_between(s, 0.0, 0.8))     # peer keeps answering? detection is 0.9 s
    assert g and all(0.225 - 1e-9 <= x <= 0.3 for x in g)
    s = session_in(State.UP)
    s.receive(peer(State.UP, rx=2000 * MS), 0.0)   # they want packets at most every 2 s
    for t in (0.5, 1.0, 1.4):                       # keep the session alive
        s.receive(peer(State.UP, rx=2000 * MS), t)
    g = gaps(sends_between(s, 0.0, 1.45))
    assert all(x >= 1.5 - 1e-9 for x in g)


@pytest.mark.parametrize("mult,lo", [(3, 0.75), (1, 0.9), (2, 0.75)])
def test_jitter_bounds(mult, lo):
    s = session_in(State.UP, SessionConfig(100 * MS, 100 * MS, mult))
    s.receive(peer(State.UP, tx=100 * MS, rx=100 * MS, mult=50), 0.0)   # detection 5 s
    g = gaps(sends_between(s, 0.0, 4.9, step=0.0005))
    assert len(g) > 40
    assert min(g) >= lo * 0.1 - 1e-9 and max(g) <= 0.1 + 1e-9
    assert max(g) - min(g) > (1 - lo) * 0.1 * 0.5     # it really is jittered


def test_remote_min_rx_zero_stops_periodic_packets():
    s = session_in(State.UP)
    s.receive(peer(State.UP, rx=0), 0.0)
    assert s.tx_deadline is None and sends_between(s, 0.0, 0.5) == []


@pytest.mark.parametrize("remote_mult,remote_tx,our_rx,expected", [
    (3, 300 * MS, 300 * MS, 0.9),
    (5, 200 * MS, 300 * MS, 1.5),      # our RX is the larger
    (3, 500 * MS, 100 * MS, 1.5),      # their TX is the larger
    (1, 100 * MS, 100 * MS, 0.1),
])
def test_detection_time(remote_mult, remote_tx, our_rx, expected):
    s = session_in(State.UP, SessionConfig(300 * MS, our_rx, 3))
    s.receive(peer(State.UP, tx=remote_tx, mult=remote_mult), 10.0)
    assert s.detection_time_us() / 1e6 == pytest.approx(expected)
    assert s.on_timer(10.0 + expected - 0.001).changes == []
    acts = s.on_timer(10.0 + expected)
    assert acts.changes == [(State.UP, State.DOWN, Diag.CONTROL_DETECTION_EXPIRED)]
    assert s.remote_discr == 0 and s.counters.session_down == 1
    nxt = s.on_timer(s.tx_deadline).send[0]                  # back to the slow rate
    assert nxt.state == State.DOWN and nxt.diag == Diag.CONTROL_DETECTION_EXPIRED
    assert nxt.your_discr == 0 and nxt.desired_min_tx_us == SLOW_TX_US


def test_init_times_out_too():
    s = session_in(State.INIT)
    d = s.detect_deadline
    assert s.on_timer(d).changes == [(State.INIT, State.DOWN, Diag.CONTROL_DETECTION_EXPIRED)]


# ---- poll / final --------------------------------------------------------------------------
def test_received_poll_is_answered_with_final_at_once():
    s = session_in(State.UP)
    acts = s.receive(peer(State.UP, poll=True, tx=100 * MS), 1.0)
    assert len(acts.send) == 1 and acts.send[0].final and not acts.send[0].poll


def test_timer_increase_waits_for_final():
    s = session_in(State.UP, now=0.9)
    acts = s.set_config(SessionConfig(500 * MS, 600 * MS, 3), 1.0)
    p = acts.send[0]
    assert p.poll and (p.desired_min_tx_us, p.required_min_rx_us) == (500 * MS, 600 * MS)
    assert s.state == State.UP and not acts.changes                    # no flap
    assert s.tx_interval_us() == 300 * MS                              # slower TX waits (§6.8.3)
    assert s.detection_time_us() == 3 * 600 * MS                       # larger RX is safe now
    later = s.on_timer(s.tx_deadline).send[0]
    assert later.poll                                                  # repeated until Final
    s.receive(peer(State.UP, final=True), 1.2)
    assert not s.poll_active and s.tx_interval_us() == 500 * MS
    assert not s.on_timer(s.tx_deadline).send[0].poll


def test_rx_decrease_keeps_old_detection_time_until_final():
    s = session_in(State.UP)
    s.set_config(SessionConfig(100 * MS, 100 * MS, 3), 1.0)
    assert s.tx_interval_us() == 300 * MS          # remote still asks for 300 ms RX
    assert s.detection_time_us() == 900 * MS       # smaller RX waits for the Final
    s.receive(peer(State.UP, final=True, tx=100 * MS, rx=100 * MS), 1.1)
    assert s.detection_time_us() == 300 * MS and s.tx_interval_us() == 100 * MS


def test_second_change_during_poll_is_queued():
    s = session_in(State.UP)
    s.set_config(SessionConfig(500 * MS, 300 * MS, 3), 1.0)
    s.set_config(SessionConfig(700 * MS, 300 * MS, 3), 1.05)
    assert s.adv_tx_us == 500 * MS                       # one poll at a time
    s.receive(peer(State.UP, final=True), 1.1)
    assert s.poll_active and s.adv_tx_us == 700 * MS     # the queued one starts
    s.receive(peer(State.UP, final=True), 1.2)
    assert not s.poll_active and s.tx_interval_us() == 700 * MS


def test_change_while_down_needs_no_poll():
    s = session_in(State.DOWN)
    acts = s.set_config(SessionConfig(100 * MS, 100 * MS, 5), 1.0)
    assert not s.poll_active and not acts.send
    assert s.adv_tx_us == SLOW_TX_US and s.adv_rx_us == 100 * MS


# ---- passive role ------------------------------------------------------------------------
def test_passive_sends_nothing_until_the_peer_speaks():
    s = Session(LOCAL, SessionConfig(300 * MS, 300 * MS, 3, passive=True), 0.0, random.Random(3))
    assert s.next_deadline() is None
    assert s.on_timer(100.0).send == []
    acts = s.receive(peer(State.DOWN, your=0), 100.0)
    assert [p.state for p in acts.send] == [State.INIT]      # answers at once
    assert s.tx_deadline is not None


def test_passive_falls_silent_when_the_peer_goes_away():
    s = Session(LOCAL, SessionConfig(300 * MS, 300 * MS, 3, passive=True), 0.0, random.Random(3))
    s.receive(peer(State.DOWN, your=0), 0.0)
    s.on_timer(s.detect_deadline)                            # 3 s (peer at slow rate)
    assert s.state == State.DOWN and s.tx_deadline is None


# ---- AdminDown ---------------------------------------------------------------------------
def test_admin_down():
    s = session_in(State.UP)
    acts = s.admin_down(2.0)
    assert acts.changes == [(State.UP, State.ADMIN_DOWN, Diag.ADMIN_DOWN)]
    p = acts.send[0]
    assert p.state == State.ADMIN_DOWN and p.diag == Diag.ADMIN_DOWN and p.your_discr == REMOTE
    t = s.tx_deadline
    assert t - 2.0 <= 0.3                                   # at the Up rate, not the slow one
    again = s.on_timer(t).send[0]                           # keeps telling the peer
    assert again.state == State.ADMIN_DOWN
    assert s.detect_deadline is None                        # no detection while AdminDown
    assert s.admin_down(3.0).send == []


def test_config_validation():
    with pytest.raises(ValueError):
        SessionConfig(300 * MS, 300 * MS, 0)
    with pytest.raises(ValueError):
        Session(0, CFG, 0.0)
