"""FlowTrace.lost: the client's SYNs that never got a SYN-ACK, and which hosts saw them arrive
(the rolling-update e2e uses it to tell a request lost before the announcing node from one lost
after it). Lines as ``tcpdump -nn -tttt -r`` prints them for an ``-i any`` capture."""
from __future__ import annotations

from pathlib import Path

import pytest

from metalxdp.lab.kube_tools import FlowTrace

VIP = "192.0.2.200"
T = "2026-12-07 02:53:46.7"


def syn(port, seq, d="Out", dst=VIP):
    return f"{T} ?     {d} IP 192.0.2.100.{port} > {dst}.80: Flags [S], seq {seq}, win 64240, length 0"


def synack(port, seq, d="In"):
    return f"{T} ?     {d} IP {VIP}.80 > 192.0.2.100.{port}: Flags [S.], seq 99, ack {seq + 1}, win 65160, length 0"


class Fake(FlowTrace):
    def __init__(self, lines: dict):
        super().__init__(None, list(lines), Path("/nonexistent"))
        self.fake = lines

    def _lines(self, host):
        return self.fake[host]


CASES = [
    ("all answered", {"client": [syn(1000, 10), synack(1000, 10)], "node2": [syn(1000, 10, "In")]}, {}),
    ("lost after reaching node2", {"client": [syn(1000, 10), syn(1000, 10)], "node2": [syn(1000, 10, "In")]},
     {"1000": {"seq": "10", "reached": {"node2"}}}),
    ("lost before any node", {"client": [syn(1001, 11)], "node2": []}, {"1001": {"seq": "11", "reached": set()}}),
    ("another flow's SYN with the same port does not count", {"client": [syn(1002, 12)], "node2": [syn(1002, 13, "In")]},
     {"1002": {"seq": "12", "reached": set()}}),
    ("a SYN to another address is not this VIP's", {"client": [syn(1003, 14, dst="203.0.113.0")], "node2": []}, {}),
    ("an outgoing copy at the node is not an arrival", {"client": [syn(1004, 15)], "node2": [syn(1004, 15, "Out")]},
     {"1004": {"seq": "15", "reached": set()}}),
]


@pytest.mark.parametrize("name,lines,want", CASES, ids=[c[0] for c in CASES])
def test_lost_flows(name, lines, want):
    assert Fake(lines).lost(VIP) == want
