"""Scenario tests for the pure membership state machine (agent.membership), in virtual time.

A tiny in-process network (below) carries the bytes between real ``Membership`` objects with a
fixed latency; a scenario can silence a node (its cable is cut) or drop chosen packets. Every
packet is encoded, authenticated and decoded exactly as on a real socket.
"""
from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings, strategies as st

from agent.membership import (
    ACK, ALIVE, DEAD, PING, RESTARTING, SUSPECT, Malformed, Membership, MembershipConfig, decode, derive_key)

KEY = derive_key("s3cret-value")
CFG = MembershipConfig()   # the lab profile


class Net:
    """Virtual time + packet delivery with latency; ``cut`` silences a node both ways. The
    fallback probes (``drain_stream``) are delivered only when ``streams`` is set (a TCP
    connection: request and answer at once, unaffected by ``drop``, which is for datagrams);
    otherwise they are discarded, so the other scenarios exercise the UDP protocol alone."""

    def __init__(self, latency: float = 0.001, step: float = 0.005):
        self.latency, self.step, self.now = latency, step, 0.0
        self.nodes: dict[str, Membership] = {}
        self.by_addr: dict[tuple, str] = {}
        self.cut: set[str] = set()
        self.drop = lambda src, dst, data: False     # extra filter for a scenario
        self.streams = False
        self.crashed: set[str] = set()               # process gone, kernel up: TCP is refused
        self.stream_drop = lambda src, dst: False    # a TCP connection that fails
        self.sent: dict[str, int] = {}
        self._q: list = []
        self._n = 0
        self.log: list[tuple[float, str, str, str]] = []   # (time, observer, event, name)

    def add(self, name: str, key: bytes = KEY, epoch: int = 1, cfg: MembershipConfig = CFG,
            seeds=None, **kw) -> Membership:
        ip = f"192.0.2.{10 + len(self.by_addr) + 1}"
        if seeds is None:
            seeds = [a for a in self.by_addr]
        m = Membership(name, (ip, 7946), key, seeds=seeds, config=cfg, rng=random.Random(name),
                       epoch=epoch, **kw)
        self.nodes[name] = m
        self.by_addr[(ip, 7946)] = name
        return m

    def _send(self, src: str, out) -> None:
        for addr, data in out:
            self.sent[src] = self.sent.get(src, 0) + 1
            dst = self.by_addr.get(addr)
            if (dst is None or src in self.cut or dst in self.cut or dst in self.crashed
                    or self.drop(src, dst, data)):
                continue
            self._n += 1
            heapq.heappush(self._q, (self.now + self.latency, self._n, dst, src, data))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + self.step, 9)
            while self._q and self._q[0][0] <= self.now:
                _, _, dst, src, data = heapq.heappop(self._q)
                self._send(dst, self.nodes[dst].receive(self.now, self.nodes[src].addr, data))
            for name, m in self.nodes.items():
                if name in self.crashed:
                    continue
                self._send(name, m.tick(self.now))
                for addr, data in m.drain_stream():
                    self._stream(name, addr, data)
                for kind, who in m.drain_events():
                    self.log.append((self.now, name, kind, who))

    def _stream(self, src: str, addr, data: bytes) -> None:
        dst = self.by_addr.get(addr)
        if (not self.streams or dst is None or src in self.cut or dst in self.cut
                or self.stream_drop(src, dst)):
            return
        if dst in self.crashed:                          # nothing listens: the kernel's RST
            self.nodes[src].refused(self.now, addr)
            return
        conn = (self.nodes[src].addr[0], 40000)         # the connection's ephemeral source
        out = self.nodes[dst].receive(self.now, conn, data)
        self._send(dst, [o for o in out if o[0] != conn])
        for _, reply in [o for o in out if o[0] == conn]:
            self._send(src, self.nodes[src].receive(self.now, addr, reply))

    def view(self, name: str) -> frozenset[str]:
        return self.nodes[name].members(self.now)

    def until(self, cond, limit: float) -> float:
        """Run until ``cond()`` holds; returns the virtual time it took (fails after limit)."""
        start = self.now
        while not cond():
            assert self.now - start < limit, f"not reached within {limit}s of virtual time"
            self.run(self.step)
        return self.now - start


def three() -> Net:
    net = Net()
    for n in ("node1", "node2", "node3"):
        net.add(n)
    return net


ALL3 = frozenset({"node1", "node2", "node3"})


# ---- join and steady state ---------------------------------------------------------------

def test_join_from_seeds_and_events():
    net = three()
    t = net.until(lambda: all(net.view(n) == ALL3 for n in ALL3), limit=2.0)
    assert t < 0.5
    joined = {(obs, who) for _, obs, kind, who in net.log if kind == "joined"}
    assert joined == {(a, b) for a in ALL3 for b in ALL3 if a != b}
    assert all(net.nodes[n].version == 2 for n in ALL3)


def test_steady_state_no_suspicion_and_bounded_rate():
    net = three()
    net.run(1.0)
    before = dict(net.sent)
    versions = {n: net.nodes[n].version for n in ALL3}
    net.run(10.0)
    assert {n: net.nodes[n].version for n in ALL3} == versions
    assert all(net.nodes[n].stats["suspected"] == 0 for n in ALL3)
    for n in ALL3:
        rate = (net.sent[n] - before[n]) / 10.0
        # one ping + one ack per probe interval, plus a SYNC every sync_interval
        assert rate <= 2 / CFG.probe_interval + 3, (n, rate)


def test_a_node_learns_members_it_has_no_seed_for():
    net = Net()
    net.add("node1", seeds=[])
    net.add("node2")            # seed: node1
    net.add("node3", seeds=[net.nodes["node2"].addr])
    net.until(lambda: all(net.view(n) == ALL3 for n in ALL3), limit=3.0)


# ---- failure, rejoin, leave ----------------------------------------------------------------

def test_silent_node_suspect_then_dead_within_configured_time():
    net = three()
    net.run(1.0)
    net.cut.add("node3")
    t0 = net.now
    states: dict[str, list[int]] = {"node1": [], "node2": []}

    def dead_everywhere():
        for obs in states:
            s = net.nodes[obs].member("node3").state
            if not states[obs] or states[obs][-1] != s:
                states[obs].append(s)
        return all(net.nodes[o].member("node3").state == DEAD for o in states)

    took = net.until(dead_everywhere, limit=3.0)
    # worst case: wait for a probe (2 intervals), the interval itself, then the suspicion time
    bound = 3 * CFG.probe_interval + CFG.suspicion_timeout(3) + 0.05
    assert took <= bound, (took, bound)
    assert any(s == [ALIVE, SUSPECT, DEAD] for s in states.values())   # suspect came first
    left = [(round(t - t0, 3), obs) for t, obs, kind, who in net.log
            if kind == "left" and who == "node3"]
    assert {obs for _, obs in left} == {"node1", "node2"}
    assert net.view("node1") == net.view("node2") == {"node1", "node2"}
    # the isolated node, for its part, sees everybody else dead
    net.run(1.0)
    assert net.view("node3") == {"node3"}


def test_rejoin_after_death():
    net = three()
    net.run(1.0)
    net.cut.add("node3")
    net.until(lambda: "node3" not in net.view("node1") and "node3" not in net.view("node2"), 3.0)
    net.run(1.0)
    net.cut.clear()
    mark = len(net.log)
    took = net.until(lambda: all(net.view(n) == ALL3 for n in ALL3), limit=3.0)
    net.run(2.0)
    # node3 comes back believing node1 and node2 dead: they must not flap because of it
    assert [e for e in net.log[mark:] if e[2] == "left"] == []
    assert all(net.view(n) == ALL3 for n in ALL3)
    assert took <= CFG.rejoin_interval * 2 + 0.2
    assert net.nodes["node3"].incarnation >= 1          # it refuted its death
    rejoined = [(obs, who) for _, obs, kind, who in net.log if kind == "joined"]
    assert ("node1", "node3") in rejoined[-6:] and ("node3", "node1") in rejoined[-6:]


def test_one_bad_path_does_not_kill_thanks_to_indirect_probes():
    net = three()
    net.run(1.0)
    # node1 -> node3 packets all vanish (a bad path), node2 relays for node1
    net.drop = lambda src, dst, data: (src, dst) in {("node1", "node3")}
    net.run(5.0)
    assert all(net.view(n) == ALL3 for n in ALL3)
    assert not [e for e in net.log if e[2] == "left"]


def udp_partition(net: Net, node: str) -> None:
    """The gossip port's UDP dropped between ``node`` and the rest; TCP still passes."""
    net.drop = lambda src, dst, data: node in (src, dst)
    net.streams = True


def test_udp_partition_is_bridged_by_the_tcp_fallback_probe():
    """memberlist's TCP fallback: with UDP between node3 and the others dropped (a firewall
    rule on the gossip port's UDP only), every node still sees all three, so the L2 election
    never runs in two halves (two announcers per VIP)."""
    net = three()
    net.run(1.0)
    udp_partition(net, "node3")
    mark = len(net.log)
    net.run(10.0)
    assert all(net.view(n) == ALL3 for n in ALL3)
    assert [e for e in net.log[mark:] if e[2] == "left"] == []
    assert all(net.nodes[n].stats["stream_probes"] > 0 for n in ALL3)


def test_without_the_fallback_a_udp_partition_splits_the_view():
    """The same partition with the fallback switched off: node3 ends alone and the others
    without it, which is the split the fallback exists to prevent."""
    net = Net()
    for n in ("node1", "node2", "node3"):
        net.add(n, cfg=MembershipConfig(stream_fallback=False))
    net.run(1.0)
    udp_partition(net, "node3")
    net.run(5.0)
    assert net.view("node3") == {"node3"}
    assert net.view("node1") == net.view("node2") == {"node1", "node2"}
    assert all(net.nodes[n].stats["stream_probes"] == 0 for n in ALL3)


def test_fallback_does_not_keep_a_dead_node_alive():
    """A node whose TCP fails too (it is really gone) is still declared dead in time."""
    net = three()
    net.run(1.0)
    udp_partition(net, "node3")
    net.stream_drop = lambda src, dst: "node3" in (src, dst)
    took = net.until(lambda: "node3" not in net.view("node1") | net.view("node2"), limit=3.0)
    assert took <= 3 * CFG.probe_interval + CFG.suspicion_timeout(3) + 0.05


def test_partition_healed_the_view_stays_whole():
    net = three()
    net.run(1.0)
    udp_partition(net, "node3")
    net.run(3.0)
    net.drop = lambda src, dst, data: False
    mark = len(net.log)
    net.run(3.0)
    assert all(net.view(n) == ALL3 for n in ALL3)
    assert [e for e in net.log[mark:] if e[2] == "left"] == []


def test_single_lost_ack_recovers_without_death():
    net = Net()
    for n in ("node1", "node2"):
        net.add(n)
    net.run(1.0)
    dropped = []

    def drop_first_ack(src, dst, data):
        if not dropped and src == "node2" and decode(KEY, data).type == ACK:
            dropped.append(1)
            return True
        return False

    net.drop = drop_first_ack
    net.run(3.0)
    # with 2 nodes there is nobody for indirect probes: node2 is suspected, hears it, refutes
    assert dropped and net.nodes["node1"].stats["suspected"] == 1
    assert net.nodes["node2"].stats["refuted"] == 1
    assert net.view("node1") == net.view("node2") == {"node1", "node2"}
    assert not [e for e in net.log if e[2] == "left"]


def test_graceful_leave_and_restart_with_new_epoch():
    net = three()
    net.run(1.0)
    out = net.nodes["node3"].leave(net.now)
    net._send("node3", out)
    net.run(0.05)
    assert net.view("node1") == net.view("node2") == {"node1", "node2"}
    # node3 restarts: a new process, incarnation 0, later epoch
    net.nodes["node3"] = Membership("node3", net.nodes["node3"].addr, KEY,
                                    seeds=[net.nodes["node1"].addr], config=CFG,
                                    rng=random.Random(3), epoch=2)
    net.until(lambda: all(net.view(n) == ALL3 for n in ALL3), limit=2.0)


def _restart_node3(net: Net, epoch: int = 2) -> Membership:
    """node3's next process: incarnation 0, a later epoch, node1 as its seed."""
    net.nodes["node3"] = Membership("node3", net.nodes["node3"].addr, KEY,
                                    seeds=[net.nodes["node1"].addr], config=CFG,
                                    rng=random.Random(3), epoch=epoch)
    return net.nodes["node3"]


def test_leave_as_restarting_keeps_the_member_counted_without_a_single_left_event():
    """A planned restart (the pod replaced on the same node): node3 leaves as RESTARTING; the
    others keep it in their views, do not probe it, and its next process (incarnation 0)
    refutes the claim. No observer ever logs "left" for node3, so no VIP moves away and back."""
    net = three()
    net.run(1.0)
    net.log.clear()
    net._send("node3", net.nodes["node3"].leave(net.now, restarting=True))
    net.cut.add("node3")                               # the old process is gone
    net.run(3.0)                                       # 10x the suspicion timeout
    for n in ("node1", "node2"):
        assert net.view(n) == ALL3
        assert net.nodes[n].states()["node3"] == "restarting"
    net.cut.discard("node3")
    _restart_node3(net)
    net.until(lambda: all(net.nodes[n].states().get("node3") == "alive" for n in ("node1", "node2"))
              and net.view("node3") == ALL3, limit=2.0)
    assert not [e for e in net.log if e[3] == "node3" and e[2] == "left"], net.log
    assert all(net.view(n) == ALL3 for n in ALL3)


def test_a_restarting_member_that_does_not_come_back_is_dead_after_the_hold():
    cfg = MembershipConfig(restart_hold=2.0)
    net = Net()
    for n in ("node1", "node2", "node3"):
        net.add(n, cfg=cfg)
    net.run(1.0)
    net._send("node3", net.nodes["node3"].leave(net.now, restarting=True))
    net.cut.add("node3")
    t0 = net.now
    net.run(1.5)
    assert net.view("node1") == ALL3
    took = net.until(lambda: net.view("node1") == net.view("node2") == {"node1", "node2"}, limit=2.0)
    assert 1.9 <= net.now - t0 <= 2.2, (took, net.now - t0)
    assert net.nodes["node1"].stats["restart_expired"] == 1
    assert net.nodes["node1"].states()["node3"] == "dead"


def test_stale_suspicion_or_death_hearsay_does_not_end_a_restart_hold():
    """Gossip of node3's previous life (SUSPECT / DEAD at the incarnation it restarted with,
    from a peer) does not cut the hold short: only node3's own next process or the hold does."""
    net = three()
    net.run(1.0)
    n1 = net.nodes["node1"]
    net._send("node3", net.nodes["node3"].leave(net.now, restarting=True))
    net.cut.add("node3")
    net.run(0.1)
    m = n1.member("node3")
    assert m.state == RESTARTING
    n1._apply(net.now, SUSPECT, m.incarnation, m.addr, "node3", origin="node2")
    n1._apply(net.now, DEAD, m.incarnation, m.addr, "node3", origin="node2")
    assert n1.member("node3").state == RESTARTING and "node3" in n1.members(net.now)
    # a newer claim still counts (node3 came back and died again)
    n1._apply(net.now, DEAD, m.incarnation + 1, m.addr, "node3", origin="node3")
    assert n1.member("node3").state == DEAD


def _crash_net(cfg: MembershipConfig = CFG) -> Net:
    net = Net()
    for n in ("node1", "node2", "node3"):
        net.add(n, cfg=cfg)
    net.streams = True
    net.run(1.0)
    net.log.clear()
    return net


def _restart_crashed_node3(net: Net) -> Membership:
    net.crashed.discard("node3")
    m = Membership("node3", net.nodes["node3"].addr, KEY, seeds=[net.nodes["node1"].addr],
                   config=net.nodes["node1"].cfg, rng=random.Random(3), epoch=2)
    net.nodes["node3"] = m
    return m


def test_a_crashed_agent_whose_node_refuses_tcp_is_held_and_refutes_on_restart():
    """SIGKILL of node3's agent: its UDP goes silent, its TCP port refuses (the kernel's RST).
    The others crash-hold it (it stays in every view, no "left" event, so no VIP moves away and
    back), and its next process 1.5 s later refutes the claim."""
    net = _crash_net()
    net.crashed.add("node3")
    net.run(1.5)
    for n in ("node1", "node2"):
        assert net.view(n) == ALL3
        assert net.nodes[n].states()["node3"] == "restarting"
        assert net.nodes[n].stats["crash_held"] == 1
    assert [e[1] for e in net.log if e[2] == "held"] and not [e for e in net.log if e[2] == "left"]
    assert net.nodes["node1"].crash_held() == {"node3"}      # the agent's stand-in election uses it
    _restart_crashed_node3(net)
    net.until(lambda: all(net.nodes[n].states().get("node3") == "alive" for n in ("node1", "node2"))
              and net.view("node3") == ALL3, limit=2.0)
    assert net.nodes["node1"].crash_held() == frozenset()
    assert {e[1] for e in net.log if e[2] == "released" and e[3] == "node3"} == {"node1", "node2"}
    net.run(1.0)
    assert not [e for e in net.log if e[3] == "node3" and e[2] == "left"], net.log
    assert all(net.view(n) == ALL3 for n in ALL3)


def test_without_the_crash_hold_a_crashed_agent_is_dead_in_the_usual_time():
    """The guard removed (crash_hold 0): the refusal changes nothing, node3 is declared dead
    as after a cable cut (and its VIPs would move away and back)."""
    cfg = MembershipConfig(crash_hold=0)
    net = _crash_net(cfg)
    net.crashed.add("node3")
    took = net.until(lambda: "node3" not in net.view("node1") | net.view("node2"), limit=3.0)
    assert took <= 3 * cfg.probe_interval + cfg.suspicion_timeout(3) + 0.05
    assert net.nodes["node1"].stats["crash_held"] == 0


def test_a_crashed_agent_that_does_not_come_back_is_dead_after_the_hold():
    cfg = MembershipConfig(crash_hold=2.0)
    net = _crash_net(cfg)
    net.crashed.add("node3")
    t0 = net.now
    net.run(1.5)
    assert net.view("node1") == ALL3
    net.until(lambda: net.view("node1") == net.view("node2") == {"node1", "node2"}, limit=2.0)
    # the hold starts at the first refused probe (at most a few probe intervals after the crash)
    assert 2.0 <= net.now - t0 <= 2.0 + 4 * cfg.probe_interval + cfg.suspicion_timeout(3), net.now - t0
    assert net.nodes["node1"].stats["crash_hold_expired"] + net.nodes["node2"].stats["crash_hold_expired"] >= 1
    # refused again and again, it is not held a second time in this life
    net.run(2.0)
    assert net.nodes["node1"].stats["crash_held"] == 1
    assert net.view("node1") == {"node1", "node2"}


def test_a_crash_held_node_that_goes_silent_is_dead_without_waiting_for_the_hold():
    """The agent crashed, then the whole node went (the kernel stops answering TCP too): the
    next unrefused probe ends the hold, and the usual suspicion decides."""
    cfg = MembershipConfig(crash_hold=10.0)
    net = _crash_net(cfg)
    net.crashed.add("node3")
    net.run(1.0)
    assert net.view("node1") == net.view("node2") == ALL3
    net.crashed.discard("node3")
    net.cut.add("node3")
    net.nodes["node3"]._left = True          # the old process stays dead (it is not ticked: cut)
    took = net.until(lambda: "node3" not in net.view("node1") | net.view("node2"), limit=3.0)
    assert took <= 4 * cfg.probe_interval + cfg.suspicion_timeout(3) + 0.05, took
    assert net.nodes["node1"].stats["crash_hold_ended"] + net.nodes["node2"].stats["crash_hold_ended"] >= 1


def test_a_forged_refusal_for_a_live_member_is_refuted_at_once():
    """A RST is unauthenticated: one forged for a member that answers makes the holder ping it
    with the claim attached, and the member refutes; nothing left, nothing moved."""
    net = _crash_net()
    n1 = net.nodes["node1"]
    n1.refused(net.now, net.nodes["node3"].addr)
    assert n1.states()["node3"] == "restarting"
    net.until(lambda: n1.states()["node3"] == "alive", limit=2.0)
    net.run(4.0)
    assert all(net.view(n) == ALL3 for n in ALL3)
    assert not [e for e in net.log if e[2] == "left"]


# ---- hostile input -----------------------------------------------------------------------

def test_wrong_key_is_ignored_and_counted():
    net = three()
    rogue = net.add("rogue", key=derive_key("another secret"))
    net.run(2.0)
    assert "rogue" not in net.view("node1") and rogue.members() == {"rogue"}
    assert sum(net.nodes[n].stats["rx_bad_auth"] for n in ALL3) > 0
    assert all(net.view(n) == ALL3 for n in ALL3)


def _a_ping(m: Membership) -> bytes:
    out = m.tick(0.0)
    return next(d for _, d in out)


def test_garbage_and_truncated_packets_are_counted_never_raise():
    a = Membership("a", ("192.0.2.1", 7946), KEY, epoch=1)
    b = Membership("b", ("192.0.2.2", 7946), KEY, seeds=[a.addr], epoch=1)
    good = _a_ping(b)
    bad = [b"", b"MX", b"\x00" * 100, good[:-1], good[:10], good[:-33] + good[-32:],
           b"MX" + b"\xff" * 60]
    for data in bad:
        assert a.receive(0.0, b.addr, data) == []
    assert a.stats["rx_malformed"] + a.stats["rx_bad_auth"] == len(bad)
    assert a.members() == {"a"}
    assert a.receive(0.0, b.addr, good) != []            # the intact packet still works


def test_authenticated_but_malformed_body_is_counted():
    import hashlib
    import hmac as _hmac
    a = Membership("a", ("192.0.2.1", 7946), KEY, epoch=1)
    good = _a_ping(Membership("b", ("192.0.2.2", 7946), KEY, seeds=[a.addr], epoch=1))
    for body in (good[:-32] + b"\x00", good[:20], b"MX\x01\x09" + good[4:-32]):
        pkt = body + _hmac.new(KEY, body, hashlib.sha256).digest()
        with pytest.raises(Malformed):
            decode(KEY, pkt)
        assert a.receive(0.0, ("192.0.2.2", 7946), pkt) == []
    assert a.stats["rx_malformed"] == 3 and a.stats["rx_bad_auth"] == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data):
    a = Membership("a", ("192.0.2.1", 7946), KEY, epoch=1)
    assert a.receive(0.0, ("192.0.2.9", 1), data) == []
    assert a.receive(0.0, ("192.0.2.9", 1), b"MX\x01\x01" + data) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_bit_flips_in_a_valid_packet_are_rejected(pos, flip):
    b = Membership("b", ("192.0.2.2", 7946), KEY, seeds=[("192.0.2.1", 7946)], epoch=1)
    good = bytearray(_a_ping(b))
    pos %= len(good)
    good[pos] ^= flip or 1
    a = Membership("a", ("192.0.2.1", 7946), KEY, epoch=1)
    assert a.receive(0.0, b.addr, bytes(good)) == []


def test_replayed_packets_are_ignored():
    a = Membership("a", ("192.0.2.1", 7946), KEY, epoch=5)
    b = Membership("b", ("192.0.2.2", 7946), KEY, epoch=5)
    pkts = [b._ping(a.addr, i, "a")[1] for i in range(4)]
    assert a.receive(0.0, b.addr, pkts[0]) != []
    assert a.receive(0.0, b.addr, pkts[0]) == []          # exact replay
    assert a.receive(0.0, b.addr, pkts[3]) != []
    assert a.receive(0.0, b.addr, pkts[2]) != []          # reordered, inside the window: fine
    assert a.receive(0.0, b.addr, pkts[2]) == []
    assert a.stats["rx_replayed"] == 2
    # a packet from an older process (smaller epoch) is a replay too
    old = Membership("b", ("192.0.2.2", 7946), KEY, epoch=4)._ping(a.addr, 9, "a")[1]
    assert a.receive(0.0, b.addr, old) == [] and a.stats["rx_replayed"] == 3
    # far behind the window
    many = [b._ping(a.addr, i, "a")[1] for i in range(100)]
    a.receive(0.0, b.addr, many[-1])
    assert a.receive(0.0, b.addr, many[0]) == [] and a.stats["rx_replayed"] == 4


def test_config_validation_and_suspicion_scaling():
    with pytest.raises(ValueError):
        MembershipConfig(probe_interval=0.1, probe_timeout=0.2)
    with pytest.raises(ValueError):
        derive_key("")
    c = MembershipConfig(probe_interval=0.2, suspicion_mult=4)
    assert c.suspicion_timeout(3) == pytest.approx(0.8)
    assert c.suspicion_timeout(1000) == pytest.approx(2.4)


def test_packets_fit_the_mtu_even_with_long_names():
    net = Net()
    long = [("n" * 60 + str(i)) for i in range(40)]
    for n in long:
        net.add(n)
    net.run(3.0)
    sizes = []
    orig = net._send

    def spy(src, out):
        sizes.extend(len(d) for _, d in out)
        orig(src, out)
    net._send = spy
    net.run(6.0)
    assert max(sizes) <= CFG.max_packet
    assert all(net.view(n) == frozenset(long) for n in long)
