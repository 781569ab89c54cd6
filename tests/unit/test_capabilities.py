"""agent.dataplane.missing_capabilities: an agent that cannot load its program says which
capability the DaemonSet lacks (before: "BCC could not compile", although it compiled and a map
could not be created). Found by removing CAP_BPF from the DaemonSet in the cluster lab."""
from __future__ import annotations

import pytest

from agent.dataplane import missing_capabilities


@pytest.mark.parametrize("capeff,want", [
    ("000000c000003000", []),                          # NET_ADMIN NET_RAW PERFMON BPF: the DaemonSet's
    ("000001c000003000", []),                          # and more
    ("0000004000003000", ["BPF"]),                     # CAP_BPF removed
    ("0000000000003000", ["PERFMON", "BPF"]),
    ("0000000000200000", []),                          # CAP_SYS_ADMIN covers them all
    ("0000000000000000", ["NET_ADMIN", "PERFMON", "BPF"]),
])
def test_missing_capabilities(capeff, want):
    assert missing_capabilities(f"Name:\tx\nCapEff:\t{capeff}\n") == want


def test_unreadable_status_claims_nothing():
    assert missing_capabilities("Name:\tx\n") == []
    assert missing_capabilities("CapEff:\tzz\n") == []
