"""Fuzz bpf/xdp_vip.c against a reference model written from the RFCs (responder_model.py):
210,000 generated frames (seven classes, fixed seeds: the same frames every run) through
BPF_PROG_TEST_RUN, each frame's verdict and output bytes compared with the model's, the
counters compared per batch. Every disagreement is printed with a hex dump. The long run
(2.1M frames) is bench/xdp_fuzz_long.py.
"""
from __future__ import annotations

import pytest

from metalxdp.rig import xdp_fuzz as F
from metalxdp.rig.responder_model import PASS, TX, Model, Vip
from .test_xdp_prog import dp  # noqa: F401  (the module-scoped Dataplane fixture)

FRAMES_PER_CLASS = 30_000
SEED = 19


def test_fuzz_program_agrees_with_the_rfc_model(dp, capsys):  # noqa: F811
    model = F.setup(dp)
    classes = {c: FRAMES_PER_CLASS for c in ("structured_arp", "structured_ns", "mutated", "truncated",
                                             "random", "vlan", "traffic")}
    report = F.run(dp, model, classes, SEED)
    with capsys.disabled():
        print("\n" + report.summary())
    for d in report.disagreements:
        print(d)
    assert report.total == 7 * FRAMES_PER_CLASS
    assert not report.disagreements, f"{len(report.disagreements)} disagreements (hex dumps in stdout)"
    # the generator reaches every rule and every answer (a fuzz test that never answers proves little)
    answered = sum(report.answered.values())
    assert answered > 5_000, report.answered
    for why in ("answered", "another host's MAC, or handoff", "NS option of length 0", "DAD with a source link-layer option",
                "NS source multicast, ::1 or IPv4-mapped", "NS option runs past the message",
                "NS source link-layer option of length != 1", "ARP sender IP martian", "NS checksum",
                "NS hop limit", "NS code", "NS ICMP length < 24", "NS target multicast",
                "DAD not to the solicited-node group", "NS Ethernet source is a group", "VLAN tag",
                "traffic to a VIP", "neighbour discovery other than NS", "gratuitous ARP",
                "ARP sender hardware address is a group", "NS options longer than the program walks",
                "NS option header cut by the end of the message", "NS payload past the frame"):
        assert report.reasons[why] >= 5, (why, report.reasons)


def test_fuzz_runner_reports_a_disagreement_with_a_hex_dump(dp):  # noqa: F811
    """The comparison can fail: a model that believes the agent is dead disagrees with every
    answer, and a model missing a VIP disagrees on its counters too."""
    answered = F.run(dp, F.setup(dp), {"mutated": 500}, SEED).answered["mutated"]
    gated = Model(F.OUR_MAC, F.VIPS, F.LO, alive=False)
    report = F.run(dp, gated, {"mutated": 500}, SEED)
    verdicts = [d for d in report.disagreements if "program XDP_TX, model XDP_PASS (liveness gate)" in d]
    counters = [d for d in report.disagreements if d.startswith("[mutated] counters:")]
    assert answered > 0 and len(verdicts) == answered and len(counters) == answered
    assert "  input (" in verdicts[0] and "    0000  " in verdicts[0]
    fewer = {k: v for k, v in F.VIPS.items() if k[0] != F._a("192.0.2.203")}
    report = F.run(dp, Model(F.OUR_MAC, fewer, F.LO), {"traffic": 2000}, SEED)
    assert any(d.startswith("[traffic] counters:") for d in report.disagreements)


@pytest.mark.parametrize("frame, verdict", [
    (F.ns_frame(), TX),
    (F.ns_frame(options=F.option(1, 0)), PASS),
    (F.ns_frame(src=bytes(16), options=F.option(14, 1, b"\x01" * 6) + F.option(1, 1, F.CLIENT_MAC)), PASS),
    (F.arp_frame(spa=F._a("255.255.255.255")), PASS),
    (F.arp_frame(), TX),
])
def test_model_spot_checks(frame, verdict):
    """The model itself, on frames whose fate the RFCs state plainly (4861 7.1.1, RFC 826)."""
    model = Model(F.OUR_MAC, {(F._a("2001:db8:0:1::200"), F.LO): Vip(), (F._a("192.0.2.200"), F.LO): Vip()}, F.LO)
    assert model.outcome(frame).verdict == verdict
