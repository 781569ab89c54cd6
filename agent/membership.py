"""Agent membership: which agents are alive, found by a SWIM-style protocol over UDP.

PURE state machine: no sockets, no clocks, no threads. The caller passes the time (``now``,
seconds, any monotonic origin) and carries the bytes; ``membership_udp`` does it with a real
socket, ``bench/membership_sim.py`` with a simulated network in virtual time. Same code.

    m = Membership("node1", ("192.0.2.11", 7946), derive_key(secret), seeds=[("192.0.2.12", 7946)])
    for addr, data in m.tick(now): sock.sendto(data, addr)                # timers
    for addr, data in m.receive(now, src, packet): sock.sendto(data, addr)  # replies
    m.members(now)  -> frozenset of alive names (incl. suspects and self); m.version bumps on change
    m.drain_events() -> [("joined", "node2"), ("left", "node3"), ...]

Protocol (SWIM, Das et al. 2002, as hashicorp/memberlist does it):
- every ``probe_interval`` a node PINGs ONE member, round-robin over a shuffled list; no ACK
  within ``probe_timeout`` -> PING-REQ to ``indirect_checks`` other members, who ping the target
  for it (a single lost packet or one bad path does not make a node suspect), and, as
  memberlist's TCP fallback probe, the same PING once more over a stream (``drain_stream``:
  the transport sends those over TCP and feeds the answers back). A network that drops the
  gossip port's UDP but not its TCP (a firewall rule, a security group) so does not split the
  cluster into two announcers per VIP;
- still no ACK at the end of the interval -> the target is *suspect*; a suspect that hears of
  it refutes with a higher incarnation; unrefuted after ``suspicion_mult * max(1, log10(n)) *
  probe_interval`` it is *dead* (``member_left``). Death is always decided locally: a DEAD
  heard from others only makes the member suspect here (a node back from a partition gossips
  its stale view; the live members refute it instead of flapping), except from the member
  itself (graceful leave);
- a planned restart (the agent's pod replaced by a rollout, its node staying) leaves with
  RESTARTING instead of DEAD: members keep counting it, without probing it, for
  ``restart_hold`` (its pinned XDP program answers meanwhile), so no VIP moves away and back;
  its next process refutes the claim at once (it hears it in the seeds' SYNC); not back within
  the hold, it is dead. MetalLB's speaker always leaves, and its VIPs move twice per rollout;
- state changes (alive/suspect/dead + incarnation) ride piggybacked on every packet, fewest
  transmissions first, each ``retransmit_mult * ceil(log10(n+1))`` times, plus GOSSIP packets to
  ``gossip_fanout`` random members every ``gossip_interval`` while there is something to tell;
- a packet addressed to a node we hold suspect/dead carries that state, so it refutes at once;
- join: SYNC (full state, push-pull) with up to ``join_fanout`` seeds; every ``sync_interval``
  a SYNC with one random member repairs any divergence; every ``rejoin_interval`` a PING to one
  dead member or unanswered seed lets partitioned nodes find each other again.
Per node and second this sends ~2/probe_interval packets (ping + ack) plus gossip while
updates are pending: bounded, independent of the cluster size.

Packets are authenticated with HMAC-SHA256 (key derived from the shared Secret value, like
MetalLB's memberlist ``secretkey``); each carries the sender's epoch (start time, ms) and a
sequence number, checked against a 64-packet sliding window per sender (as IPsec/DTLS do):
a replayed or older-epoch packet is dropped. Bad, truncated, replayed or unknown packets are
counted in ``stats`` and otherwise ignored; ``receive`` never raises on input bytes.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import math
import random
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

Addr = tuple[str, int]             # (ip, port)
Outgoing = tuple[Addr, bytes]

DEFAULT_PORT = 7946                # memberlist's port
ALIVE, SUSPECT, DEAD, RESTARTING = 0, 1, 2, 3
STATE_NAMES = {ALIVE: "alive", SUSPECT: "suspect", DEAD: "dead", RESTARTING: "restarting"}

MAGIC = b"MX"
VERSION = 1
PING, ACK, PING_REQ, GOSSIP, SYNC = 1, 2, 3, 4, 5
_TYPES = {PING, ACK, PING_REQ, GOSSIP, SYNC}
MAC_LEN = 32
# magic, version, type, epoch_ms, seq, sender incarnation, sender port
_HDR = struct.Struct("!2sBBQQQH")
_ENTRY = struct.Struct("!BQH")     # state, incarnation, port (then ip, name)
_U32 = struct.Struct("!I")
REPLAY_WINDOW = 64                 # packets a sender's stream may be reordered by


def derive_key(secret: bytes | str) -> bytes:
    """The HMAC key from the Secret's value (MetalLB: secret ``memberlist``, key ``secretkey``).
    Hashed with a label so the same secret never serves as a key elsewhere verbatim."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret:
        raise ValueError("empty membership secret")
    return hashlib.sha256(b"metalxdp-membership-v1\x00" + secret).digest()


@dataclass(frozen=True)
class MembershipConfig:
    """Timers in seconds. The defaults are the lab profile: a dead node is declared in ~0.5 s
    on a 3-node cluster (see bench/membership_sim.py for measured figures)."""
    probe_interval: float = 0.1    # one direct probe per node per interval
    probe_timeout: float = 0.05    # no ACK by then -> indirect probes; must be < probe_interval
    indirect_checks: int = 3       # members asked to probe on our behalf
    suspicion_mult: float = 3.0    # suspect -> dead after mult * max(1, log10(n)) * probe_interval
    gossip_interval: float = 0.05  # push pending updates this often...
    gossip_fanout: int = 3         # ...to this many random members
    retransmit_mult: int = 4       # each update is sent mult * ceil(log10(n+1)) times
    max_piggyback: int = 8         # updates per packet (also bounded by max_packet)
    max_packet: int = 1400         # bytes: stays under a 1500 MTU with IP/UDP headers
    join_fanout: int = 3           # seeds contacted at once when we know nobody
    rejoin_interval: float = 0.5   # ping one dead member / unanswered seed this often
    stream_fallback: bool = True   # memberlist's TCP fallback probe (see drain_stream)
    sync_interval: float = 10.0    # full-state exchange with one random member (scaled up
    #                                beyond 32 members, see sync_interval_for)
    dead_retention: float = 300.0  # forget dead members after this (seeds are kept)
    restart_hold: float = 15.0     # a member restarting (planned) counts this long, unprobed
    crash_hold: float = 15.0       # a member whose node refuses the TCP probe (agent down, kernel
    #                                up: a crash) counts this long, still probed; 0: off

    def __post_init__(self):
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")

    def sync_interval_for(self, n_members: int) -> float:
        """memberlist's pushPullScale: one more multiple per doubling beyond 32 members, so a
        full table (1,000 members = ~25 packets) is exchanged about once a minute, not flooded."""
        if n_members <= 32:
            return self.sync_interval
        return self.sync_interval * (math.ceil(math.log2(n_members) - 5) + 1)

    def suspicion_timeout(self, n_members: int) -> float:
        return self.suspicion_mult * max(1.0, math.log10(max(n_members, 1))) * self.probe_interval


@dataclass
class Member:
    name: str
    addr: Addr
    state: int
    incarnation: int
    since: float                   # when this state began (local time)
    suspect_deadline: float = 0.0  # SUSPECT -> DEAD at this time; RESTARTING too (restart_hold)
    crashed: bool = False          # RESTARTING because its node refused our TCP probe (crash
    #                                hold); stays set until a new incarnation, so one hold per life


@dataclass
class _Probe:
    target: str
    probe_id: int
    sent: float
    indirect_sent: bool = False
    acked: bool = False
    refused: bool = False          # the TCP fallback probe was refused (RST): the kernel is up


@dataclass
class _Replay:
    epoch: int
    max_seq: int
    window: int                    # bit i set = max_seq - i was seen


@dataclass
class _Update:
    state: int
    incarnation: int
    addr: Addr
    transmits: int = 0


class Malformed(ValueError):
    pass


# ---- wire format ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=65536)
def _pack_ip(ip: str) -> bytes:
    b = ipaddress.ip_address(ip).packed
    return bytes([len(b)]) + b


def _pack_name(name: str) -> bytes:
    b = name.encode()
    if len(b) > 255:
        raise ValueError(f"member name too long: {name!r}")
    return bytes([len(b)]) + b


@functools.lru_cache(maxsize=65536)   # the same few thousand entries are sent again and again
def _pack_entry(state: int, inc: int, addr: Addr, name: str) -> bytes:
    return _ENTRY.pack(state, inc, addr[1]) + _pack_ip(addr[0]) + _pack_name(name)


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Malformed("truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, s: struct.Struct):
        return s.unpack(self.take(s.size))

    def u8(self) -> int:
        return self.take(1)[0]

    def ip(self) -> str:
        n = self.u8()
        if n == 4:
            return socket.inet_ntop(socket.AF_INET, self.take(4))
        if n == 16:
            return str(ipaddress.IPv6Address(self.take(16)))   # canonical text, like ip_address()
        raise Malformed("bad address length")

    def name(self) -> str:
        return self.take(self.u8()).decode()

    def entry(self) -> tuple[int, int, Addr, str]:
        d, start = self.data, self.pos
        if start + _ENTRY.size + 2 > len(d):
            raise Malformed("truncated")
        n = d[start + _ENTRY.size]
        end_ip = start + _ENTRY.size + 1 + n
        if end_ip >= len(d):
            raise Malformed("truncated")
        end = end_ip + 1 + d[end_ip]
        if end > len(d):
            raise Malformed("truncated")
        self.pos = end
        return _decode_entry(d[start:end])


@functools.lru_cache(maxsize=65536)   # gossip repeats the same entries: decode each once
def _decode_entry(raw: bytes) -> tuple[int, int, Addr, str]:
    r = _Reader(raw)
    state, inc, port = r.unpack(_ENTRY)
    if state not in STATE_NAMES:
        raise Malformed("bad state")
    ip = r.ip()
    return state, inc, (ip, port), r.name()


@dataclass
class Packet:
    """A decoded, authenticated packet (the unit tests and the simulation look inside)."""
    type: int
    epoch: int
    seq: int
    sender: str
    incarnation: int
    addr: Addr
    body: tuple                    # PING: (id, target); ACK: (id,); PING_REQ: (id, target, addr);
    #                                GOSSIP: (); SYNC: (want_reply,)
    updates: list[tuple[int, int, Addr, str]]


def decode(key: bytes, data: bytes) -> Packet:
    """Verify and decode one packet. Raises ``PermissionError`` (bad MAC) or ``Malformed``."""
    if len(data) < _HDR.size + MAC_LEN or data[:2] != MAGIC:
        raise Malformed("not a membership packet")
    body, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), mac):
        raise PermissionError("bad MAC")
    try:
        r = _Reader(body)
        magic, version, typ, epoch, seq, inc, port = r.unpack(_HDR)
        if version != VERSION or typ not in _TYPES:
            raise Malformed(f"unknown version/type {version}/{typ}")
        ip = r.ip()
        sender = r.name()
        if typ == PING:
            b: tuple = (r.unpack(_U32)[0], r.name())
        elif typ == ACK:
            b = (r.unpack(_U32)[0],)
        elif typ == PING_REQ:
            pid = r.unpack(_U32)[0]
            tname = r.name()
            tip = r.ip()
            b = (pid, tname, (tip, struct.unpack("!H", r.take(2))[0]))
        elif typ == SYNC:
            b = (bool(r.u8()),)
        else:
            b = ()
        updates = [r.entry() for _ in range(r.u8())]
        if r.pos != len(body):
            raise Malformed("trailing bytes")
        if not sender:
            raise Malformed("empty sender")
        return Packet(typ, epoch, seq, sender, inc, (ip, port), b, updates)
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        raise Malformed(str(e)) from None


# ---- the state machine ---------------------------------------------------------------------

class Membership:
    """One agent's view of the cluster. Not thread-safe: one caller (the runner) drives it."""

    def __init__(self, name: str, addr: Addr, key: bytes, seeds: Iterable[Addr] = (),
                 config: MembershipConfig = MembershipConfig(), rng: Optional[random.Random] = None,
                 epoch: int = 0, incarnation: int = 0,
                 on_join: Optional[Callable[[str], None]] = None,
                 on_leave: Optional[Callable[[str], None]] = None):
        """epoch: this process's start time in ms (wall clock); must grow across restarts so
        peers' replay windows accept the new stream. rng: injected for deterministic tests."""
        _pack_name(name)
        self.name, self.addr, self.key, self.cfg = name, (addr[0], int(addr[1])), key, config
        self.seeds: set[Addr] = {(s[0], int(s[1])) for s in seeds} - {self.addr}
        self.rng = rng or random.Random()
        self.epoch, self.incarnation = epoch, incarnation
        self.on_join, self.on_leave = on_join, on_leave
        self._members: dict[str, Member] = {}
        # indexes kept in step with _members by _set_state, so no timer or packet scans the
        # whole table (1,000 members): live (alive+suspect) names with O(1) removal, suspects, dead
        self._live: list[str] = []
        self._live_pos: dict[str, int] = {}
        self._suspects: set[str] = set()      # SUSPECT and RESTARTING: both expire at suspect_deadline
        self._dead: set[str] = set()
        self._seq = 0
        self._probe_id = self.rng.randrange(1 << 32)
        self._probe: Optional[_Probe] = None
        self._order: list[str] = []
        self._relays: dict[int, tuple[Addr, int, float]] = {}   # our ping id -> (requester, its id, expiry)
        self._replay: dict[str, _Replay] = {}
        # name -> pending broadcast; the least-sent updates sit at the front (new ones are put
        # there, sent ones move to the back), so picking them is O(k), not a sort per packet
        self._queue: OrderedDict[str, _Update] = OrderedDict()
        self._events: list[tuple[str, str]] = []
        self._stream: list[Outgoing] = []
        self._next_probe = self._next_gossip = self._next_rejoin = None  # type: Optional[float]
        self._next_sync: Optional[float] = None
        self._joined_seeds = False
        self._left = False
        self.version = 0
        self.stats: dict[str, int] = {k: 0 for k in (
            "tx", "rx", "rx_bad_auth", "rx_malformed", "rx_replayed", "rx_self", "suspected",
            "declared_dead", "refuted", "stream_probes", "restart_expired", "crash_held",
            "crash_hold_ended", "crash_hold_expired")}

    # ---- queries --------------------------------------------------------------------------
    def members(self, now: Optional[float] = None) -> frozenset[str]:
        """Alive names (suspects count, as in memberlist; ones whose suspicion expired before
        ``now`` do not) including ourselves."""
        out = set(self._live)
        if now is not None:
            out.difference_update(n for n in self._suspects
                                  if now >= self._members[n].suspect_deadline)
        if not self._left:
            out.add(self.name)
        return frozenset(out)

    def crash_held(self) -> frozenset[str]:
        """The members being crash-held (see ``refused``): counted, but nobody answers for them."""
        return frozenset(n for n in self._suspects
                         if self._members[n].state == RESTARTING and self._members[n].crashed)

    def member(self, name: str) -> Optional[Member]:
        return self._members.get(name)

    def states(self) -> dict[str, str]:
        return {m.name: STATE_NAMES[m.state] for m in self._members.values()}

    @property
    def pending_updates(self) -> int:
        """State changes still being disseminated (0 in a quiet steady state)."""
        return len(self._queue)

    def drain_events(self) -> list[tuple[str, str]]:
        ev, self._events = self._events, []
        return ev

    def drain_stream(self) -> list[Outgoing]:
        """Packets to send over a stream (TCP) instead of a datagram: the fallback probes. The
        transport delivers each on its own connection and passes what comes back on it to
        ``receive`` (the target answers the PING there: ``receive`` addresses the ACK to the
        connection's source)."""
        out, self._stream = self._stream, []
        return out

    def next_deadline(self) -> float:
        """The latest time ``tick`` must run next (earlier is harmless)."""
        times = [t for t in (self._next_probe, self._next_gossip, self._next_rejoin,
                             self._next_sync) if t is not None]
        if self._probe and not self._probe.acked and not self._probe.indirect_sent:
            times.append(self._probe.sent + self.cfg.probe_timeout)
        times += [self._members[n].suspect_deadline for n in self._suspects]
        return min(times) if times else 0.0

    def _n(self) -> int:
        return 1 + len(self._live)

    # ---- encoding -------------------------------------------------------------------------
    def _encode(self, typ: int, body: bytes, to: Optional[str] = None,
                entries: Optional[list[bytes]] = None) -> bytes:
        self._seq += 1
        head = (_HDR.pack(MAGIC, VERSION, typ, self.epoch, self._seq, self.incarnation,
                          self.addr[1]) + _pack_ip(self.addr[0]) + _pack_name(self.name) + body)
        budget = self.cfg.max_packet - len(head) - 1 - MAC_LEN
        if entries is None:
            entries = self._piggyback(to, budget)
        data = head + bytes([len(entries)]) + b"".join(entries)
        self.stats["tx"] += 1
        return data + hmac.new(self.key, data, hashlib.sha256).digest()

    def _piggyback(self, to: Optional[str], budget: int) -> list[bytes]:
        out: list[bytes] = []
        m = self._members.get(to) if to else None
        if m is not None and m.state != ALIVE:
            # tell a node we think is suspect/dead so, so it can refute right away
            e = _pack_entry(m.state, m.incarnation, m.addr, m.name)
            out.append(e)
            budget -= len(e)
        if not self._queue:
            return out
        limit = self.cfg.retransmit_mult * math.ceil(math.log10(self._n() + 1))
        picked = []
        for name, u in self._queue.items():
            if len(out) >= self.cfg.max_piggyback:
                break
            e = _pack_entry(u.state, u.incarnation, u.addr, name)
            if len(e) > budget:
                break
            out.append(e)
            budget -= len(e)
            picked.append((name, u))
        for name, u in picked:
            u.transmits += 1
            if u.transmits >= limit:
                del self._queue[name]
            else:
                self._queue.move_to_end(name)
        return out

    def _broadcast(self, name: str, state: int, inc: int, addr: Addr) -> None:
        self._queue[name] = _Update(state, inc, addr)     # replaces an older claim about name
        self._queue.move_to_end(name, last=False)

    def _ping(self, to_addr: Addr, probe_id: int, target: str) -> Outgoing:
        return to_addr, self._encode(PING, _U32.pack(probe_id) + _pack_name(target), target or None)

    def _next_id(self) -> int:
        self._probe_id = (self._probe_id + 1) & 0xFFFFFFFF
        return self._probe_id

    def _sync_packets(self, to_addr: Addr, want_reply: bool) -> list[Outgoing]:
        """Our whole table (self included) in as few packets as fit ``max_packet``."""
        entries = [_pack_entry(ALIVE, self.incarnation, self.addr, self.name)]
        entries += [_pack_entry(m.state, m.incarnation, m.addr, m.name)
                    for m in self._members.values()]
        out, chunk, size = [], [], 0
        room = self.cfg.max_packet - MAC_LEN - _HDR.size - 300   # header + name upper bound
        for e in entries:
            if chunk and (size + len(e) > room or len(chunk) == 255):
                out.append((to_addr, self._encode(SYNC, bytes([want_reply]), entries=chunk)))
                chunk, size = [], 0
            chunk.append(e)
            size += len(e)
        if chunk:
            out.append((to_addr, self._encode(SYNC, bytes([want_reply]), entries=chunk)))
        return out

    # ---- state changes --------------------------------------------------------------------
    def _set_state(self, now: float, m: Member, state: int, inc: int,
                   hold: Optional[float] = None) -> None:
        was_member = m.state != DEAD
        was_held = m.state == RESTARTING and m.crashed
        if state == ALIVE or inc > m.incarnation:
            m.crashed = False          # a new life (or a refutation): it may be crash-held again
        m.state, m.incarnation, m.since = state, inc, now
        if state == SUSPECT:
            m.suspect_deadline = now + self.cfg.suspicion_timeout(self._n())
            self._suspects.add(m.name)
        elif state == RESTARTING:
            m.suspect_deadline = now + (self.cfg.restart_hold if hold is None else hold)
            self._suspects.add(m.name)
        else:
            self._suspects.discard(m.name)
        is_member = state != DEAD
        if is_member:
            self._dead.discard(m.name)
        else:
            self._dead.add(m.name)
        if was_member != is_member:
            if is_member:
                self._live_pos[m.name] = len(self._live)
                self._live.append(m.name)
            else:
                i = self._live_pos.pop(m.name)
                last = self._live.pop()
                if last != m.name:
                    self._live[i] = last
                    self._live_pos[last] = i
            self._event("joined" if is_member else "left", m.name)
        if was_held and state != RESTARTING:
            self._event("released", m.name)      # back (refuted), silent (suspect) or dead

    def _sample_live(self, k: int, exclude: str = "", alive_only: bool = False) -> list[Member]:
        """Up to k random live members (O(k), not O(n))."""
        picked = self.rng.sample(self._live, min(len(self._live), k + 1))
        out = [self._members[n] for n in picked if n != exclude
               and (not alive_only or self._members[n].state == ALIVE)]
        return out[:k]

    def _event(self, kind: str, name: str) -> None:
        self.version += 1
        self._events.append((kind, name))
        cb = {"joined": self.on_join, "left": self.on_leave}.get(kind)
        if cb:
            cb(name)

    def _apply(self, now: float, state: int, inc: int, addr: Addr, name: str,
               origin: Optional[str] = None) -> None:
        """One claim "name is <state> at incarnation inc", from gossip or a packet header;
        ``origin`` is the sender of the packet that carried it (None = our own decision)."""
        if name == self.name:
            if self._left:
                return
            if state != ALIVE and inc >= self.incarnation:
                self.incarnation = inc + 1          # refute: we are alive, with a newer number
                self.stats["refuted"] += 1
                self._broadcast(self.name, ALIVE, self.incarnation, self.addr)
            elif state == ALIVE and inc > self.incarnation:
                self.incarnation = inc              # a peer remembers our previous life
            return
        m = self._members.get(name)
        if m is None:
            m = Member(name, addr, DEAD, inc, now)
            self._members[name] = m
            if state == DEAD:
                self._dead.add(name)                # a dead stranger: remember its address only
                return
            self._set_state(now, m, state, inc)
            self._broadcast(name, state, inc, addr)
            return
        if state == ALIVE:
            # only a newer incarnation revives a suspect/dead node (SWIM): it must refute
            if inc > m.incarnation:
                if m.state == ALIVE and m.addr == addr:
                    m.incarnation = inc
                else:
                    m.addr = addr
                    self._set_state(now, m, ALIVE, inc)
                self._broadcast(name, ALIVE, inc, addr)
        elif state == SUSPECT:
            if m.state == RESTARTING and inc <= m.incarnation:
                return          # nobody probes a restarting member: a stale suspicion
            if (m.state == ALIVE and inc >= m.incarnation) or inc > m.incarnation:
                self._set_state(now, m, SUSPECT, inc)
                self._broadcast(name, SUSPECT, inc, m.addr)
        elif state == RESTARTING:
            # the member said so itself (leave(restarting=True)) or others relay it: it is
            # authenticated either way. Its next process refutes with a newer incarnation.
            if (m.state in (ALIVE, SUSPECT) and inc >= m.incarnation) or inc > m.incarnation:
                self._set_state(now, m, RESTARTING, inc)
                self._broadcast(name, RESTARTING, inc, m.addr)
        else:  # DEAD
            if origin is None or origin == name:
                # our own suspicion expired, or the member said goodbye itself
                if (m.state != DEAD and inc >= m.incarnation) or inc > m.incarnation:
                    self._set_state(now, m, DEAD, inc)
                    self._broadcast(name, DEAD, inc, m.addr)
            elif m.state == DEAD:
                m.incarnation = max(m.incarnation, inc)
            elif m.state == RESTARTING and inc <= m.incarnation:
                pass            # hearsay about the life before the restart: the hold decides
            elif inc > m.incarnation or (m.state == ALIVE and inc == m.incarnation):
                # Hearsay of a death: suspect it, and let OUR suspicion timer decide. A node back
                # from a partition gossips its stale "everybody died" view; the live members
                # refute the suspicion instead of flapping. A real death was already suspected
                # here through gossip, so this costs observers little.
                self._set_state(now, m, SUSPECT, inc)
                self._broadcast(name, SUSPECT, inc, m.addr)

    def _suspect(self, now: float, name: str) -> None:
        m = self._members.get(name)
        if m is not None and m.state == ALIVE:
            self.stats["suspected"] += 1
            self._apply(now, SUSPECT, m.incarnation, m.addr, name)

    # ---- inputs ---------------------------------------------------------------------------
    def refused(self, now: float, addr: Addr) -> None:
        """The transport's TCP fallback probe to ``addr`` was refused (a RST to our SYN): that
        node's kernel is up but nothing listens on the gossip port, i.e. its agent died (a crash,
        an OOM kill) and the kubelet will restart it. Its XDP program went quiet after the
        liveness window, but its kernel still forwards: the clients whose neighbour entries name
        it are served. Declaring it dead would move its VIPs to another node (gratuitous ARP)
        and back when the agent returns, and each switch resets the TCP connections in flight.
        So the member is *crash-held*: it keeps counting (it keeps its VIPs) for
        ``crash_hold``, probed as usual. Another refusal keeps the hold; a probe that gets
        neither an ACK nor a refusal (the kernel is gone too) ends it (suspect, then dead, as
        always); the new agent refutes it with a newer incarnation; not back in time, it is
        dead. A local decision, not gossiped: each member that probes it sees the refusal
        itself, and a DEAD from the holder reaches the others as hearsay (suspicion).

        A RST is not authenticated: a forged one can only delay the takeover of a node that
        stopped answering by at most ``crash_hold`` (once per incarnation), never move a VIP."""
        pr = self._probe
        if pr is not None:
            target = self._members.get(pr.target)
            if target is not None and target.addr == addr:
                pr.refused = True
        if self.cfg.crash_hold <= 0 or self._left:
            return
        for m in self._members.values():
            if m.addr == addr and m.state in (ALIVE, SUSPECT) and not m.crashed:
                self.stats["crash_held"] += 1
                self._set_state(now, m, RESTARTING, m.incarnation, hold=self.cfg.crash_hold)
                m.crashed = True
                self._event("held", m.name)

    def receive(self, now: float, src: Addr, data: bytes) -> list[Outgoing]:
        """Handle one datagram from ``src``; returns the packets to send right away (ACKs,
        relayed probes, SYNC replies). Never raises on bad input: it is counted and dropped."""
        try:
            p = decode(self.key, data)
        except PermissionError:
            self.stats["rx_bad_auth"] += 1
            return []
        except Malformed:
            self.stats["rx_malformed"] += 1
            return []
        if p.sender == self.name:
            self.stats["rx_self"] += 1
            return []
        if not self._replay_ok(p):
            self.stats["rx_replayed"] += 1
            return []
        self.stats["rx"] += 1
        if self._left:
            return []
        self._apply(now, ALIVE, p.incarnation, p.addr, p.sender)
        for state, inc, addr, name in p.updates:
            self._apply(now, state, inc, addr, name, origin=p.sender)
        out: list[Outgoing] = []
        if p.type == PING:
            out.append((src, self._encode(ACK, _U32.pack(p.body[0]), p.sender)))
        elif p.type == ACK:
            pid = p.body[0]
            if self._probe and self._probe.probe_id == pid:
                self._probe.acked = True
            elif pid in self._relays:
                requester, their_id, _ = self._relays.pop(pid)
                out.append((requester, self._encode(ACK, _U32.pack(their_id))))
        elif p.type == PING_REQ:
            their_id, target, taddr = p.body
            if target != self.name:
                mine = self._next_id()
                self._relays[mine] = (src, their_id, now + self.cfg.probe_interval)
                out.append(self._ping(taddr, mine, target))
        elif p.type == SYNC and p.body[0]:
            out += self._sync_packets(src, want_reply=False)
        return out

    def _replay_ok(self, p: Packet) -> bool:
        r = self._replay.get(p.sender)
        if r is None or p.epoch > r.epoch:
            self._replay[p.sender] = _Replay(p.epoch, p.seq, 1)
            return True
        if p.epoch < r.epoch:
            return False
        if p.seq > r.max_seq:
            shift = p.seq - r.max_seq
            r.window = ((r.window << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
            r.max_seq = p.seq
            return True
        age = r.max_seq - p.seq
        if age >= REPLAY_WINDOW or r.window >> age & 1:
            return False
        r.window |= 1 << age
        return True

    # ---- timers ---------------------------------------------------------------------------
    def tick(self, now: float) -> list[Outgoing]:
        """Run the timers due at ``now``; returns the packets to send."""
        if self._left:
            return []
        out: list[Outgoing] = []
        cfg = self.cfg
        if not self._joined_seeds:
            self._joined_seeds = True
            seeds = sorted(self.seeds)
            self.rng.shuffle(seeds)
            for s in seeds[:cfg.join_fanout]:
                out += self._sync_packets(s, want_reply=True)
            self._next_probe = now
            self._next_gossip = now + cfg.gossip_interval
            self._next_rejoin = now + cfg.rejoin_interval
            # jittered, or every node of a cluster started together would sync at once
            self._next_sync = now + cfg.sync_interval * self.rng.uniform(0.5, 1.0)

        # the current probe: indirect checks, then suspicion at the end of the interval
        pr = self._probe
        if pr is not None:
            target = self._members.get(pr.target)
            if (not pr.acked and not pr.indirect_sent and now >= pr.sent + cfg.probe_timeout
                    and target is not None):
                pr.indirect_sent = True
                for h in self._sample_live(cfg.indirect_checks, exclude=pr.target,
                                           alive_only=True):
                    body = (_U32.pack(pr.probe_id) + _pack_name(pr.target)
                            + _pack_ip(target.addr[0]) + struct.pack("!H", target.addr[1]))
                    out.append((h.addr, self._encode(PING_REQ, body, h.name)))
                if cfg.stream_fallback:
                    self.stats["stream_probes"] += 1
                    self._stream.append(self._ping(target.addr, pr.probe_id, pr.target))
            if now >= pr.sent + cfg.probe_interval:
                if not pr.acked:
                    m = self._members.get(pr.target)
                    if m is not None and m.state == RESTARTING and m.crashed:
                        if not pr.refused:
                            # silence, not a refusal: the node itself is gone now
                            self.stats["crash_hold_ended"] += 1
                            self._set_state(now, m, SUSPECT, m.incarnation)
                            m.crashed = True
                    else:
                        self._suspect(now, pr.target)
                self._probe = None

        if self._probe is None and now >= self._next_probe:
            self._next_probe = now + cfg.probe_interval
            name = self._next_target()
            if name is not None:
                pid = self._next_id()
                self._probe = _Probe(name, pid, now)
                out.append(self._ping(self._members[name].addr, pid, name))

        for name in [n for n in self._suspects if now >= self._members[n].suspect_deadline]:
            m = self._members[name]
            self.stats["declared_dead" if m.state == SUSPECT else
                       "crash_hold_expired" if m.crashed else "restart_expired"] += 1
            self._apply(now, DEAD, m.incarnation, m.addr, m.name)

        if now >= self._next_gossip:
            self._next_gossip = now + cfg.gossip_interval
            if self._queue:
                for h in self._sample_live(cfg.gossip_fanout):
                    out.append((h.addr, self._encode(GOSSIP, b"", h.name)))

        if now >= self._next_rejoin:
            self._next_rejoin = now + cfg.rejoin_interval
            for name in [n for n in self._dead if now - self._members[n].since > cfg.dead_retention]:
                del self._members[name]
                self._dead.discard(name)
                self._queue.pop(name, None)
                self._replay.pop(name, None)
            dead = {self._members[n].addr: n for n in self._dead}
            lost = set(dead)
            if self.seeds:
                lost |= self.seeds - {self._members[n].addr for n in self._live}
            if lost:
                a = self.rng.choice(sorted(lost))
                out.append(self._ping(a, self._next_id(), dead.get(a, "")))

        if now >= self._next_sync:
            self._next_sync = now + cfg.sync_interval_for(self._n())
            peers = self._sample_live(1, alive_only=True)
            if peers:
                out += self._sync_packets(peers[0].addr, want_reply=True)

        for pid in [k for k, v in self._relays.items() if now >= v[2]]:
            del self._relays[pid]
        return out

    def _next_target(self) -> Optional[str]:
        while True:
            while self._order:
                name = self._order.pop()
                m = self._members.get(name)
                if m is not None and self._probed(m):
                    return name
            candidates = sorted(n for n, m in self._members.items() if self._probed(m))
            if not candidates:
                return None
            self.rng.shuffle(candidates)
            self._order = candidates

    @staticmethod
    def _probed(m: Member) -> bool:
        """Nobody probes the dead or a member restarting by plan; a crash-held one is probed."""
        return m.state != DEAD and (m.state != RESTARTING or m.crashed)

    def leave(self, now: float, restarting: bool = False) -> list[Outgoing]:
        """Graceful shutdown: tell a few members we are dead, so nobody waits for a timeout;
        ``restarting``: that we come back (a planned restart), so they keep counting us for
        ``restart_hold`` instead."""
        self.incarnation += 1
        self._queue.clear()
        self._broadcast(self.name, RESTARTING if restarting else DEAD, self.incarnation, self.addr)
        out = [(h.addr, self._encode(GOSSIP, b"", h.name))
               for h in self._sample_live(3 * self.cfg.gossip_fanout)]
        self._left = True
        return out
