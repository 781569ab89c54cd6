"""One BFD session's state machine (RFC 5880 §6.2, §6.8), pure: no sockets, no clock, no threads.

The runner feeds it received packets and the current time and gets back ``Actions``: packets to
send now and state changes. Deadlines are attributes (``next_deadline()``) the runner sleeps on.

    s = Session(local_discr=7, config=SessionConfig(300_000, 300_000, 3), now=0.0)
    acts = s.on_timer(0.0)                 # first Down packet, at the slow 1 s rate
    acts = s.receive(peer_packet, now=0.2) # Down -> Init (or Init -> Up) + an immediate packet

What it implements: asynchronous mode with the echo function (§6.4, §6.8.9), no demand mode, no
authentication; the slow
1 s transmit rate until Up (§6.8.3); poll/final sequences for timer changes while Up, with the
interval rules of §6.8.3 (a larger transmit interval or a smaller receive interval only takes
effect when the Final arrives); detection time = remote detect mult x max(our required min RX,
remote desired min TX) (§6.8.4); jitter 75-100 % of the interval (90-100 % when our detect
mult is 1) (§6.8.7); passive role (§6.1: no packet until the peer has sent one); AdminDown with
diagnostic 7 (§6.8.16).

Echo: ``echo_rx_us`` is what we advertise as Required Min Echo RX Interval (non-zero only when
this node's forwarding plane loops the peer's echo packets back); ``echo_tx_us`` > 0 asks to send
our own. Echo runs only while the session is Up and the peer advertises a non-zero Required Min
Echo RX Interval (§6.8.9), at max(echo_tx_us, that interval). The runner sends the
``Actions.echo`` packets and reports the ones that come back (``echo_returned``); when none has
come back for detect mult x the echo interval, the session goes Down with diagnostic 2 (Echo
Function Failed, §6.8.5), while control packets go on at their own rate.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

from .packet import ControlPacket, Diag, EchoPacket, State

SLOW_TX_US = 1_000_000   # §6.8.3: desired min TX is at least 1 s while the session is not Up


@dataclass(frozen=True)
class SessionConfig:
    """What the local system asks for (a BFDProfile in microseconds)."""
    desired_min_tx_us: int = 300_000
    required_min_rx_us: int = 300_000
    detect_mult: int = 3
    passive: bool = False
    echo_tx_us: int = 0          # our echo packets' interval; 0 = we send none
    echo_rx_us: int = 0          # advertised Required Min Echo RX Interval; 0 = do not send us any

    def __post_init__(self) -> None:
        if not 1 <= self.detect_mult <= 255:
            raise ValueError(f"detect multiplier {self.detect_mult} outside 1..255")
        if self.desired_min_tx_us <= 0 or self.required_min_rx_us < 0:
            raise ValueError("intervals must be positive")
        if self.echo_tx_us < 0 or self.echo_rx_us < 0:
            raise ValueError("echo intervals must not be negative")

    @classmethod
    def from_profile(cls, profile, echo: bool = True, loops_echo: bool = True) -> "SessionConfig":
        """From ``metalxdp.config.types.BFDProfile`` (milliseconds). ``echo`` False: this session
        may not use the echo function (IPv6 or multi hop); ``loops_echo`` False: this node's
        forwarding plane does not send the peer's echo packets back, so we must not ask for them."""
        use = bool(profile.echo_mode and echo)
        echo_us = profile.echo_interval_ms * 1000 if use else 0
        return cls(profile.transmit_interval_ms * 1000, profile.receive_interval_ms * 1000,
                   profile.detect_multiplier, profile.passive_mode,
                   echo_tx_us=echo_us, echo_rx_us=echo_us if loops_echo else 0)


@dataclass
class Actions:
    """What the runner must do after one call: send ``send`` now, report ``changes``."""
    send: list[ControlPacket] = field(default_factory=list)
    changes: list[tuple[State, State, Diag]] = field(default_factory=list)  # (old, new, diag)
    echo: list[EchoPacket] = field(default_factory=list)     # echo packets to send now
    echo_started: bool = False        # the echo function became active (resolve the peer's MAC)

    def extend(self, other: "Actions") -> "Actions":
        self.send += other.send
        self.changes += other.changes
        self.echo += other.echo
        self.echo_started = self.echo_started or other.echo_started
        return self


@dataclass
class Counters:
    """Per-session counters, named after FRR's `show bfd peers counters`."""
    control_packet_input: int = 0
    control_packet_output: int = 0
    session_up: int = 0
    session_down: int = 0
    bad_packets: int = 0
    echo_packet_input: int = 0        # our echo packets that came back
    echo_packet_output: int = 0
    echo_bad: int = 0                 # echo packets that were not one we sent recently


class Session:
    def __init__(self, local_discr: int, config: SessionConfig, now: float,
                 rng: Optional[random.Random] = None):
        if not 0 < local_discr < 2 ** 32:
            raise ValueError("local discriminator must be 1..2^32-1")
        self.local_discr = local_discr
        self.config = config
        self.rng = rng or random.Random()
        self.state = State.DOWN
        self.local_diag = Diag.NONE
        # what we last learnt from the peer (§6.8.1)
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_min_rx_us = 1                 # initial value required by §6.8.1
        self.remote_desired_min_tx_us = 0
        self.remote_detect_mult = 0
        # advertised: what our packets carry; effective: what our own timers use (they differ
        # only during a poll sequence, §6.8.3)
        self.adv_tx_us = max(config.desired_min_tx_us, SLOW_TX_US)
        self.adv_rx_us = config.required_min_rx_us
        self.eff_tx_us, self.eff_rx_us = self.adv_tx_us, self.adv_rx_us
        self.poll_active = False
        self._poll_pending = False                # a change waits for the running poll (§6.5)
        self.tx_deadline: Optional[float] = None if config.passive else now
        self.detect_deadline: Optional[float] = None
        self.counters = Counters()
        # echo function (§6.4): active while Up and both sides want it
        self.remote_min_echo_rx_us = 0
        self.echo_active = False
        self.echo_nonce = self.rng.getrandbits(64)
        self.echo_seq = 0                         # last sequence number sent
        self.echo_seen = 0                        # last sequence number that came back
        self.echo_tx_deadline: Optional[float] = None
        self.echo_detect_deadline: Optional[float] = None

    # ---- timers -------------------------------------------------------------------------
    def next_deadline(self) -> Optional[float]:
        ds = [d for d in (self.tx_deadline, self.detect_deadline, self.echo_tx_deadline,
                          self.echo_detect_deadline) if d is not None]
        return min(ds) if ds else None

    def echo_interval_us(self) -> int:
        """max(our echo interval, the peer's Required Min Echo RX) (§6.8.9); 0 = no echo."""
        if not self.config.echo_tx_us or not self.remote_min_echo_rx_us:
            return 0
        return max(self.config.echo_tx_us, self.remote_min_echo_rx_us)

    def echo_detection_time_us(self) -> int:
        """Our detect mult x the echo interval (the echo detection time is a local matter)."""
        return self.config.detect_mult * self.echo_interval_us()

    def tx_interval_us(self) -> int:
        """max(our desired min TX, remote required min RX) before jitter; 0 = must not send."""
        if self.remote_min_rx_us == 0:
            return 0
        return max(self.eff_tx_us, self.remote_min_rx_us)

    def detection_time_us(self) -> int:
        """Async mode (§6.8.4): remote detect mult x max(our required RX, remote desired TX)."""
        return self.remote_detect_mult * max(self.eff_rx_us, self.remote_desired_min_tx_us)

    def _may_send_periodic(self) -> bool:
        # §6.1 passive role: silent until the peer has spoken (remote_discr is reset to 0
        # after a detection time of silence, so a passive session falls silent again)
        if self.config.passive and self.remote_discr == 0:
            return False
        return self.tx_interval_us() > 0

    def _jittered(self, now: float) -> float:
        lo = 0.9 if self.config.detect_mult == 1 else 0.75   # §6.8.7
        return now + self.tx_interval_us() / 1e6 * self.rng.uniform(lo, 1.0)

    def _schedule_tx(self, now: float) -> None:
        self.tx_deadline = self._jittered(now) if self._may_send_periodic() else None

    def on_timer(self, now: float) -> Actions:
        """Handle every deadline that is due at ``now``."""
        acts = Actions()
        if self.detect_deadline is not None and now >= self.detect_deadline:
            self.detect_deadline = None
            self.remote_discr = 0                # §6.8.1: forget the peer after detection time
            if self.state in (State.INIT, State.UP):
                self.local_diag = Diag.CONTROL_DETECTION_EXPIRED
                acts.extend(self._transition(State.DOWN, now, send_now=False))
            if not self._may_send_periodic():
                self.tx_deadline = None
        if self.echo_detect_deadline is not None and now >= self.echo_detect_deadline:
            self.echo_detect_deadline = None
            if self.state == State.UP:
                self.local_diag = Diag.ECHO_FAILED          # §6.8.5
                acts.extend(self._transition(State.DOWN, now))
        if self.tx_deadline is not None and now >= self.tx_deadline:
            acts.send.append(self._packet())
            self._schedule_tx(now)
        if self.echo_tx_deadline is not None and now >= self.echo_tx_deadline:
            self.echo_seq += 1
            self.counters.echo_packet_output += 1
            acts.echo.append(EchoPacket(self.local_discr, self.echo_nonce, self.echo_seq))
            self.echo_tx_deadline = now + self.echo_interval_us() / 1e6
        return acts

    def echo_returned(self, pkt: EchoPacket, now: float) -> bool:
        """One of our echo packets came back. False (and counted as bad) unless it is one this
        session sent and newer than the last one that came back."""
        if (not self.echo_active or pkt.my_discr != self.local_discr or pkt.nonce != self.echo_nonce
                or not self.echo_seen < pkt.seq <= self.echo_seq):
            self.counters.echo_bad += 1
            return False
        self.echo_seen = pkt.seq
        self.counters.echo_packet_input += 1
        self.echo_detect_deadline = now + self.echo_detection_time_us() / 1e6
        return True

    def _update_echo(self, now: float, acts: "Actions") -> None:
        """Start, retime or stop the echo function after anything that can change it."""
        interval = self.echo_interval_us() if self.state == State.UP else 0
        if interval and not self.echo_active:
            self.echo_active = True
            acts.echo_started = True
            self.echo_tx_deadline = now
            # the first echo gets a whole detection time to come back
            self.echo_detect_deadline = now + self.config.detect_mult * interval / 1e6
        elif not interval and self.echo_active:
            self.echo_active = False
            self.echo_tx_deadline = self.echo_detect_deadline = None
        elif interval and self.echo_tx_deadline is not None \
                and self.echo_tx_deadline > now + interval / 1e6:
            self.echo_tx_deadline = now + interval / 1e6   # the peer allows a faster rate now

    # ---- packets ------------------------------------------------------------------------
    def _packet(self, final: bool = False) -> ControlPacket:
        self.counters.control_packet_output += 1
        return ControlPacket(state=self.state, detect_mult=self.config.detect_mult,
                             my_discr=self.local_discr, your_discr=self.remote_discr,
                             desired_min_tx_us=self.adv_tx_us, required_min_rx_us=self.adv_rx_us,
                             required_min_echo_rx_us=self.config.echo_rx_us, diag=self.local_diag,
                             poll=self.poll_active and not final, final=final)

    def receive(self, pkt: ControlPacket, now: float) -> Actions:
        """§6.8.6 for a packet that ``packet.decode`` accepted and that was routed here."""
        acts = Actions()
        if pkt.your_discr not in (0, self.local_discr):
            self.counters.bad_packets += 1
            return acts
        self.counters.control_packet_input += 1
        if self.state == State.ADMIN_DOWN:
            return acts                          # §6.8.6: discard while AdminDown
        first_contact = self.remote_discr == 0
        self.remote_discr = pkt.my_discr
        self.remote_state = pkt.state
        self.remote_min_rx_us = pkt.required_min_rx_us
        self.remote_desired_min_tx_us = pkt.desired_min_tx_us
        self.remote_detect_mult = pkt.detect_mult
        self.remote_min_echo_rx_us = pkt.required_min_echo_rx_us
        if pkt.final and self.poll_active:
            self._end_poll()
        self.detect_deadline = now + self.detection_time_us() / 1e6

        old = self.state
        if pkt.state == State.ADMIN_DOWN:
            if self.state != State.DOWN:
                self.local_diag = Diag.NEIGHBOR_DOWN
                acts.extend(self._transition(State.DOWN, now))
        elif self.state == State.DOWN:
            if pkt.state == State.DOWN:
                acts.extend(self._transition(State.INIT, now))
            elif pkt.state == State.INIT:
                acts.extend(self._transition(State.UP, now))
        elif self.state == State.INIT:
            if pkt.state in (State.INIT, State.UP):
                acts.extend(self._transition(State.UP, now))
        elif pkt.state == State.DOWN:            # we are Up
            self.local_diag = Diag.NEIGHBOR_DOWN
            acts.extend(self._transition(State.DOWN, now))

        if pkt.poll:                             # §6.8.6: answer a Poll at once with a Final
            acts.send.append(self._packet(final=True))
        if self.state == old:
            if first_contact and self.config.passive and self._may_send_periodic():
                acts.send.append(self._packet())     # a passive session answers at once
                self._schedule_tx(now)
            elif self.tx_deadline is None:
                self._schedule_tx(now)
            elif self.tx_deadline > now + self.tx_interval_us() / 1e6:
                self._schedule_tx(now)               # the peer asked for a faster rate
        self._update_echo(now, acts)
        return acts

    def _transition(self, new: State, now: float, send_now: bool = True) -> Actions:
        old = self.state
        acts = Actions(changes=[(old, new, self.local_diag)])
        self.state = new
        if new == State.UP:
            self.counters.session_up += 1
            self.local_diag = Diag.NONE
            acts.changes[-1] = (old, new, Diag.NONE)
            if self.adv_tx_us != self.config.desired_min_tx_us:
                # leave the 1 s slow rate: a timer change while Up needs a poll (§6.8.3)
                self._set_advertised(self.config.desired_min_tx_us, self.config.required_min_rx_us)
        elif old == State.UP:
            self.counters.session_down += 1
        if new in (State.DOWN, State.ADMIN_DOWN):
            self.poll_active = self._poll_pending = False
        if new == State.DOWN:
            # back to the slow rate; no poll: the peer is not Up with us any more. (AdminDown
            # keeps the current rate so the peer hears it before its detection timer fires.)
            self.adv_tx_us = self.eff_tx_us = max(self.config.desired_min_tx_us, SLOW_TX_US)
            self.adv_rx_us = self.eff_rx_us = self.config.required_min_rx_us
        if send_now and (self._may_send_periodic() or new == State.ADMIN_DOWN):
            # §6.8.7: send at once when the packet's contents change, to speed things up
            acts.send.append(self._packet())
            self._schedule_tx(now)
        elif not self._may_send_periodic():
            self.tx_deadline = None
        self._update_echo(now, acts)
        return acts

    # ---- poll sequences -----------------------------------------------------------------
    def _set_advertised(self, tx_us: int, rx_us: int) -> None:
        """Change the advertised intervals while Up and start (or queue) a poll sequence."""
        if self.poll_active:
            self._poll_pending = True            # §6.5: one poll at a time; apply after Final
            return
        old_tx, old_rx = self.eff_tx_us, self.eff_rx_us
        self.adv_tx_us, self.adv_rx_us = tx_us, rx_us
        if (tx_us, rx_us) == (old_tx, old_rx):
            return
        # §6.8.3: a slower TX and a faster RX wait for the Final; the other directions are safe now
        self.eff_tx_us = min(old_tx, tx_us)
        self.eff_rx_us = max(old_rx, rx_us)
        self.poll_active = True

    def _end_poll(self) -> None:
        self.poll_active = False
        self.eff_tx_us, self.eff_rx_us = self.adv_tx_us, self.adv_rx_us
        if self._poll_pending:
            self._poll_pending = False
            self._set_advertised(self.config.desired_min_tx_us, self.config.required_min_rx_us)

    def set_config(self, config: SessionConfig, now: float) -> Actions:
        """New profile values. While Up this runs a poll sequence (no flap); otherwise the new
        values are simply used from the next packet on."""
        acts = Actions()
        was_passive = self.config.passive
        self.config = config
        if self.state == State.UP:
            self._set_advertised(config.desired_min_tx_us, config.required_min_rx_us)
            if self.poll_active:
                acts.send.append(self._packet())   # the first Poll goes out now
                self._schedule_tx(now)
        elif self.state != State.ADMIN_DOWN:
            self.adv_tx_us = self.eff_tx_us = max(config.desired_min_tx_us, SLOW_TX_US)
            self.adv_rx_us = self.eff_rx_us = config.required_min_rx_us
        if was_passive != config.passive or self.tx_deadline is None:
            if self._may_send_periodic():
                if self.tx_deadline is None:
                    self.tx_deadline = now
            else:
                self.tx_deadline = None
        self._update_echo(now, acts)
        return acts

    # ---- administrative control ---------------------------------------------------------
    def admin_down(self, now: float) -> Actions:
        """§6.8.16: AdminDown with diagnostic 7; the packet saying so goes out now and the
        periodic ones continue (the runner stops them after a detection time)."""
        if self.state == State.ADMIN_DOWN:
            return Actions()
        self.local_diag = Diag.ADMIN_DOWN
        self.detect_deadline = None
        return self._transition(State.ADMIN_DOWN, now)
