"""Frame generator and runner for fuzzing bpf/xdp_vip.c against tests/unit/responder_model.py.

Every frame goes through the kernel's BPF_PROG_TEST_RUN once (repeat=1: a repeated run reuses
one buffer) through ``Dataplane.test_run``, and its verdict and output bytes are compared with
the model's; the per-VIP and global counters are compared per batch (summed), and a batch whose
counters disagree is replayed frame by frame to name the frame. Used by
tests/unit/test_xdp_fuzz.py (``make test``) and bench/xdp_fuzz_long.py (the long run).

Classes of frames (each from its own seeded generator, so a run is reproducible):
  structured_arp, structured_ns  fields drawn from valid, boundary and invalid values
  mutated     valid requests with 1-4 random byte edits (for IPv6, the length and checksum
              are fixed up half of the time, so the edit reaches the later rules)
  truncated   every prefix (14 bytes up) of valid requests
  random      random bytes of random length, with a bias to the EtherTypes the program parses
  vlan        802.1Q, 802.1ad and QinQ-tagged requests
  traffic     IPv4/IPv6 packets (UDP, ICMPv6 echo and neighbour discovery) to VIPs and others
"""
from __future__ import annotations

import ipaddress
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .responder_model import TX, Model, Vip, icmpv6_sum, solicited_node_of

LO = 1
OTHER_IFINDEX = 4242
OUR_MAC = bytes.fromhex("02005e000001")
CLIENT_MAC = bytes.fromhex("02005e0000aa")
OTHER_MAC = bytes.fromhex("02005e0000bb")


def _a(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


# (address, ifindex) -> Vip; what the fuzz run announces
VIPS = {
    (_a("192.0.2.200"), LO): Vip(),
    (_a("192.0.2.202"), LO): Vip(handoff=True),
    (_a("192.0.2.203"), LO): Vip(misdirect=True),
    (_a("192.0.2.204"), OTHER_IFINDEX): Vip(),
    (_a("2001:db8:0:1::200"), LO): Vip(),
    (_a("2001:db8:0:1::202"), LO): Vip(handoff=True),
    (_a("2001:db8:0:1::203"), LO): Vip(misdirect=True),
    (_a("2001:db8:0:1::204"), OTHER_IFINDEX): Vip(),
}
V4_TARGETS = [_a(x) for x in ("192.0.2.200", "192.0.2.202", "192.0.2.203", "192.0.2.204", "192.0.2.201",
                              "198.51.100.7")]
# 2001:db8:0:2::200 shares ::200's solicited-node group but is no VIP
V6_TARGETS = [_a(x) for x in ("2001:db8:0:1::200", "2001:db8:0:1::202", "2001:db8:0:1::203",
                              "2001:db8:0:1::204", "2001:db8:0:2::200", "2001:db8:0:1::201")]
V4_SENDERS = [_a(x) for x in ("192.0.2.100", "198.51.100.7", "203.0.113.9", "0.0.0.0", "255.255.255.255",
                              "224.0.0.1", "239.255.255.250", "127.0.0.1", "0.1.2.3", "240.0.0.1",
                              "255.255.255.254", "198.18.0.1")]
V6_SOURCES = [_a(x) for x in ("2001:db8:0:1::100", "fe80::2:5eff:fe00:aa", "::", "::1", "ff02::1", "ff05::2",
                              "::ffff:192.0.2.1", "::ffff:0:0", "::2", "2001:db8:0:1::200", "::0.0.0.1")]


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp_frame(*, dst=b"\xff" * 6, src=CLIENT_MAC, htype=1, ptype=0x0800, hlen=6, plen=4, op=1,
              sha=CLIENT_MAC, spa=_a("192.0.2.100"), tha=bytes(6), tpa=_a("192.0.2.200"), pad=18) -> bytes:
    body = struct.pack("!HHBBH", htype, ptype, hlen, plen, op) + sha + spa + tha + tpa
    return eth(dst, src, 0x0806, body + bytes(pad))


def option(otype: int, units: int, data: bytes = b"") -> bytes:
    raw = bytes([otype, units]) + data
    want = max(2, units * 8)
    return (raw + bytes(want))[:want] if units else raw


def ns_frame(*, target=_a("2001:db8:0:1::200"), src=_a("2001:db8:0:1::100"), dst=None, eth_dst=None,
             eth_src=CLIENT_MAC, options=None, hop_limit=255, code=0, reserved=0, csum_fix=True,
             csum_delta=0, plen_delta=0, trailer=b"", first_word=0x60000000) -> bytes:
    dst = solicited_node_of(target) if dst is None else dst
    if eth_dst is None:
        eth_dst = b"\x33\x33" + dst[12:] if dst[0] == 0xFF else OUR_MAC
    if options is None:
        options = b"" if src == bytes(16) else option(1, 1, eth_src)
    msg = bytearray(struct.pack("!BBHI", 135, code, 0, reserved) + target + options)
    if csum_fix:
        csum = (0xFFFF - icmpv6_sum(src, dst, bytes(msg)) + csum_delta) & 0xFFFF
        msg[2:4] = struct.pack("!H", csum)
    ip6 = struct.pack("!IHBB", first_word, len(msg) + plen_delta, 58, hop_limit) + src + dst
    return eth(eth_dst, eth_src, 0x86DD, ip6 + bytes(msg) + trailer)


def fix_ipv6(frame: bytes) -> bytes:
    """Recompute the payload length (to the frame's end) and the ICMPv6 checksum of an NS."""
    f = bytearray(frame)
    if len(f) < 58:
        return bytes(f)
    f[18:20] = struct.pack("!H", len(f) - 54)
    f[56:58] = b"\0\0"
    f[56:58] = struct.pack("!H", 0xFFFF - icmpv6_sum(bytes(f[22:38]), bytes(f[38:54]), bytes(f[54:])))
    return bytes(f)


def vlan(frame: bytes, tags) -> bytes:
    head = frame[:12]
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    return head + frame[12:]


def base_requests() -> list[bytes]:
    """Valid requests of every kind the program answers, for every announced flavour."""
    out = []
    for t in V4_TARGETS[:4]:
        out += [arp_frame(tpa=t), arp_frame(tpa=t, dst=OUR_MAC), arp_frame(tpa=t, pad=0),
                arp_frame(tpa=t, spa=bytes(4))]
    for t in V6_TARGETS[:4]:
        nonce = option(14, 1, b"\x01\x02\x03\x04\x05\x06")
        out += [ns_frame(target=t), ns_frame(target=t, dst=t, options=b""), ns_frame(target=t, dst=t),
                ns_frame(target=t, src=bytes(16)), ns_frame(target=t, src=bytes(16), options=nonce),
                ns_frame(target=t, src=_a("fe80::2:5eff:fe00:aa"))]
    return out


# ---- the classes -------------------------------------------------------------------------

def _mac(r: random.Random) -> bytes:
    return r.choice([b"\xff" * 6, OUR_MAC, OTHER_MAC, CLIENT_MAC, bytes.fromhex("01005e000001"),
                     bytes.fromhex("333300000001"), bytes.fromhex("3333ff000200"), bytes(6),
                     bytes(r.getrandbits(8) for _ in range(6))])


def structured_arp(r: random.Random) -> bytes:
    pick = lambda good, *bad: good if r.random() < 0.85 else r.choice(bad)  # noqa: E731
    return arp_frame(
        dst=r.choice([b"\xff" * 6, b"\xff" * 6, OUR_MAC, _mac(r)]), src=pick(CLIENT_MAC, _mac(r)),
        htype=pick(1, 0, 6, 0x100, r.getrandbits(16)), ptype=pick(0x0800, 0x86DD, 0x0008, r.getrandbits(16)),
        hlen=pick(6, 0, 8, 16, r.getrandbits(8)), plen=pick(4, 0, 6, 16, r.getrandbits(8)),
        op=pick(1, 2, 0, 3, 4, 0x100, r.getrandbits(16)), sha=pick(CLIENT_MAC, _mac(r)),
        spa=r.choice(V4_SENDERS + V4_TARGETS + [bytes(r.getrandbits(8) for _ in range(4))]),
        tha=r.choice([bytes(6), b"\xff" * 6, _mac(r)]),
        tpa=r.choice(V4_TARGETS + V4_TARGETS + [bytes(r.getrandbits(8) for _ in range(4))]),
        pad=r.choice([0, 0, 18, 18, 1, 2, 7, 100]))


def _options(r: random.Random, src_mac: bytes) -> bytes:
    kinds = [lambda: option(1, 1, src_mac), lambda: option(1, 1, _mac(r)), lambda: option(1, 2, src_mac),
             lambda: option(1, r.choice([0, 3, 255])), lambda: option(2, 1, _mac(r)),
             lambda: option(14, 1, b"\x11" * 6), lambda: option(r.getrandbits(8), r.choice([1, 2, 3])),
             lambda: option(r.getrandbits(8), 0), lambda: bytes([1, 1]),
             lambda: bytes(r.getrandbits(8) for _ in range(r.choice([1, 2, 3, 5, 7, 9])))]
    return b"".join(r.choice(kinds)() for _ in range(r.choice([0, 1, 1, 1, 2, 2, 3, 4])))


def structured_ns(r: random.Random) -> bytes:
    pick = lambda good, *bad: good if r.random() < 0.93 else r.choice(bad)  # noqa: E731
    target = r.choice(V6_TARGETS + V6_TARGETS[:3] + [_a("ff02::1"), _a("ff02::1:ff00:200"), _a("fe80::200"),
                                                      bytes(r.getrandbits(8) for _ in range(16))])
    src = r.choice(V6_SOURCES[:3] * 4 + V6_SOURCES[3:])  # mostly global, link-local or ::
    dst = r.choice([solicited_node_of(target)] * 3 + [target] * 2 + [
        _a("ff02::1"), solicited_node_of(_a("2001:db8::1234")), _a("2001:db8:0:1::201"), _a("::")])
    eth_src = pick(CLIENT_MAC, _mac(r))
    if r.random() < 0.5:
        options = b"" if src == bytes(16) else option(1, 1, eth_src)
        if r.random() < 0.3:
            options = _options(r, eth_src) + options
    else:
        options = _options(r, eth_src)
    return ns_frame(target=target, src=src, dst=dst, eth_src=eth_src, options=options,
                    eth_dst=None if r.random() < 0.7 else _mac(r),
                    hop_limit=pick(255, 254, 64, 1, 0), code=pick(0, 1, 255), reserved=pick(0, 0x80000000, 1),
                    csum_fix=r.random() < 0.95, csum_delta=pick(0, 1, 0x100, 0xFFFF),
                    plen_delta=pick(0, -1, 1, -8, 8, -24, 300), trailer=pick(b"", b"\0" * 4, bytes(30)),
                    first_word=pick(0x60000000, 0x6FFFFFFF, 0x40000000, 0x00000000, 0x70000000))


def mutated(r: random.Random, bases=base_requests()) -> bytes:
    f = bytearray(r.choice(bases))
    for _ in range(r.choice([1, 1, 2, 3, 4])):
        op = r.random()
        i = r.randrange(len(f))
        if op < 0.45:
            f[i] = r.getrandbits(8)
        elif op < 0.8:
            f[i] ^= 1 << r.randrange(8)
        elif op < 0.9 and i >= 14:
            f.insert(i, r.getrandbits(8))
        elif len(f) > 15 and i >= 14:
            del f[i]
    f = bytes(f)
    if f[12:14] == b"\x86\xdd" and r.random() < 0.5:
        f = fix_ipv6(f)
    return f


def truncations() -> list[bytes]:
    """Every prefix, from 14 bytes (the kernel refuses shorter test runs) to the whole frame."""
    return [f[:n] for f in base_requests() for n in range(14, len(f) + 1)]


def truncated(r: random.Random) -> bytes:
    f = r.choice([structured_arp, structured_ns])(r) if r.random() < 0.5 else r.choice(base_requests())
    return f[:r.randrange(14, len(f) + 1)]


def random_frame(r: random.Random) -> bytes:
    n = r.choice([r.randrange(14, 100), r.randrange(14, 300)])
    f = bytearray(r.getrandbits(8) for _ in range(n))
    et = r.choice([b"\x08\x06", b"\x86\xdd", b"\x08\x00", b"\x81\x00", b"\x88\xa8", None])
    if et:
        f[12:14] = et
    if et == b"\x86\xdd" and n > 60 and r.random() < 0.5:  # an ICMPv6 NS envelope around random bytes
        f[14] = 0x60 | (f[14] & 0xF)
        f[20], f[21], f[54] = 58, 255, 135
        if r.random() < 0.5:
            f[38:54] = solicited_node_of(r.choice(V6_TARGETS))
            f[62:78] = r.choice(V6_TARGETS)[:len(f[62:78])]
        f = bytearray(fix_ipv6(bytes(f)))
    return bytes(f)


def vlan_frame(r: random.Random, bases=base_requests()) -> bytes:
    tags = r.choice([[(0x8100, 10)], [(0x88A8, 20)], [(0x88A8, 100), (0x8100, 10)], [(0x8100, 0)]])
    return vlan(r.choice(bases), tags)


def traffic(r: random.Random) -> bytes:
    v4 = r.random() < 0.5
    if v4:
        dst = r.choice(V4_TARGETS)
        payload = bytes(r.getrandbits(8) for _ in range(r.randrange(0, 120)))
        hdr = struct.pack("!BBHHHBBH4s4s", r.choice([0x45, 0x45, 0x46, 0x65, 0x35]), 0, 20 + len(payload), 0,
                          0, 64, r.choice([17, 6, 1]), 0, _a("192.0.2.100"), dst)
        return eth(r.choice([OUR_MAC, _mac(r)]), CLIENT_MAC, 0x0800, hdr + payload)
    dst = r.choice(V6_TARGETS + [solicited_node_of(V6_TARGETS[0])])
    nh = r.choice([17, 6, 58, 58, 58, 0])
    payload = bytes([r.choice([128, 129, 133, 134, 135, 136, 137, 138, 1, 143])]) + \
        bytes(r.getrandbits(8) for _ in range(r.choice([0, 3, 7, 23, 40, 100])))
    if r.random() < 0.1:
        payload = b""
    ip6 = struct.pack("!IHBB", r.choice([0x60000000, 0x60000000, 0x50000000]), len(payload), nh,
                      r.choice([64, 255])) + _a("2001:db8:0:1::100") + dst
    return eth(r.choice([OUR_MAC, _mac(r)]), CLIENT_MAC, 0x86DD, ip6 + payload)


GENERATORS: dict[str, Callable[[random.Random], bytes]] = {
    "structured_arp": structured_arp, "structured_ns": structured_ns, "mutated": mutated,
    "truncated": truncated, "random": random_frame, "vlan": vlan_frame, "traffic": traffic,
}


def frames(cls: str, n: int, seed: int) -> Iterator[bytes]:
    """n frames of a class; truncated starts with every prefix of every base request."""
    r = random.Random(f"{seed}:{cls}")
    fixed = truncations() if cls == "truncated" else []
    gen = GENERATORS[cls]
    for i in range(n):
        yield fixed[i] if i < len(fixed) else gen(r)


# ---- running -------------------------------------------------------------------------------

def setup(dp) -> Model:
    """Announce VIPS on a Dataplane (test_run only), gate off; the matching model."""
    dp.withdraw_all()
    dp.set_interface(LO, OUR_MAC)
    dp.set_interface(OTHER_IFINDEX, OUR_MAC)
    for (addr, ifindex), v in VIPS.items():
        dp.announce(ipaddress.ip_address(addr), ifindex, etp_local_misdirect=v.misdirect, handoff=v.handoff)
    dp.set_liveness_max_age(0)
    return Model(OUR_MAC, VIPS, LO)


def hexdump(b: bytes) -> str:
    return "\n".join(f"    {i:04x}  {b[i:i + 16].hex(' ')}" for i in range(0, len(b), 16))


@dataclass
class Report:
    frames: Counter = field(default_factory=Counter)       # class -> frames run
    answered: Counter = field(default_factory=Counter)     # class -> frames the model answers
    reasons: Counter = field(default_factory=Counter)      # model's "why" -> frames
    disagreements: list = field(default_factory=list)      # printable texts
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.frames.values())

    def summary(self) -> str:
        lines = [f"{self.total} frames in {self.seconds:.1f} s, {len(self.disagreements)} disagreements"]
        for cls, n in self.frames.items():
            lines.append(f"  {cls:15s} {n:8d} frames, {self.answered[cls]:7d} answered by the model")
        return "\n".join(lines)


def _counter_snapshot(dp):
    per_vip = {(ipaddress.ip_address(ip).packed, ifindex): c for (ip, ifindex), c in dp.counters().items()}
    return per_vip, dp.global_counters()


def _delta(before, after):
    (vb, gb), (va, ga) = before, after
    per_vip = {k: {f: va[k][f] - vb.get(k, {}).get(f, 0) for f in va[k] if va[k][f] - vb.get(k, {}).get(f, 0)}
               for k in va}
    return {k: v for k, v in per_vip.items() if v}, {g: ga[g] - gb.get(g, 0) for g in ga if ga[g] - gb.get(g, 0)}


def _expected_counters(outcomes):
    per_vip: dict = {}
    glob: Counter = Counter()
    for o in outcomes:
        if o.vip:
            d = per_vip.setdefault(o.vip, Counter())
            d.update(o.counters)
        if o.global_counter:
            glob[o.global_counter] += 1
    return {k: dict(v) for k, v in per_vip.items() if v}, dict(glob)


def _verdict_name(v: int) -> str:
    return {2: "XDP_PASS", 3: "XDP_TX"}.get(v, f"verdict {v}")


def run(dp, model: Model, classes: dict[str, int], seed: int, batch: int = 2000, report: Report = None,
        max_printed: int = 200) -> Report:
    """Run ``classes`` ({class: frames}) through the program; compare with the model."""
    report = report or Report()
    t0 = time.monotonic()

    def disagree(cls, frame, text):
        if len(report.disagreements) < max_printed:
            report.disagreements.append(f"[{cls}] {text}\n  input ({len(frame)} bytes):\n{hexdump(frame)}")
        else:
            report.disagreements.append(f"[{cls}] {text}")

    for cls, n in classes.items():
        it = frames(cls, n, seed)
        while True:
            chunk = [f for _, f in zip(range(batch), it)]
            if not chunk:
                break
            before = _counter_snapshot(dp)
            outcomes = []
            for f in chunk:
                want = model.outcome(f)
                got = dp.test_run(f, LO)
                outcomes.append(want)
                report.frames[cls] += 1
                report.reasons[want.why] += 1
                if want.verdict == TX:
                    report.answered[cls] += 1
                if _verdict_name(got.verdict) != want.verdict or got.frame != want.frame:
                    disagree(cls, f, f"program {_verdict_name(got.verdict)}, model {want.verdict} ({want.why})\n"
                             f"  program output:\n{hexdump(got.frame)}\n  model output:\n{hexdump(want.frame)}")
            if _delta(before, _counter_snapshot(dp)) != _expected_counters(outcomes):
                _find_counter_disagreements(dp, model, cls, chunk, disagree)
    report.seconds += time.monotonic() - t0
    return report


def _find_counter_disagreements(dp, model, cls, chunk, disagree) -> None:
    for f in chunk:
        before = _counter_snapshot(dp)
        want = model.outcome(f)
        dp.test_run(f, LO)
        got = _delta(before, _counter_snapshot(dp))
        expected = _expected_counters([want])
        if got != expected:
            disagree(cls, f, f"counters: program {got}, model {expected} ({want.why})")
