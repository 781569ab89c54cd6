"""cri_log_messages: the kubelet's CRI log files read back as the container's own lines (the
fallback of ClusterLab.not_ready_report when the kubelet no longer serves a log)."""
import pytest

from metalxdp.lab.kube_cluster import cri_log_messages

T = "2026-12-07T03:11:08.123456789Z"


@pytest.mark.parametrize("text,want", [
    ("", []),
    (f"{T} stderr F agent lacks the capabilities CAP_BPF\n", ["agent lacks the capabilities CAP_BPF"]),
    (f"{T} stdout F one\n{T} stderr F two\n", ["one", "two"]),
    (f"{T} stderr P part one, \n{T} stderr F part two\n", ["part one, part two"]),
    (f"{T} stderr P unterminated", ["unterminated"]),
    (f"{T} stdout F \n", [""]),                        # an empty line the container wrote
    ("not a CRI line\n", ["not a CRI line"]),
    (f"{T} stdout X odd tag\n", [f"{T} stdout X odd tag"]),
    (f"{T} stdout F a message with  two  spaces\n", ["a message with  two  spaces"]),
])
def test_cri_log_messages(text, want):
    assert cri_log_messages(text) == want
