"""metalxdp.log: the exact JSON lines MetalLB's troubleshooting greps look for (the seeds grep
``"event":"ipAllocated","ip":"...","msg":"IP address assigned by controller``)."""
from __future__ import annotations

import io

import pytest

from metalxdp import log as mlog
from metalxdp.log import format_lines

T = 1764774000.123   # 2025-12-03T15:00:00.123Z


@pytest.mark.parametrize("component,msg,fields,want", [
    ("controller", "IP address assigned by controller", {"event": "ipAllocated", "service": "default/web",
                                                          "ip": ["192.0.2.200"], "pool": "l2"},
     ['{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"controller","event":"ipAllocated",'
      '"ip":"192.0.2.200","msg":"IP address assigned by controller","service":"default/web","pool":"l2"}']),
    # dual stack: one line per address family, each with its own ip string
    ("controller", "IP address assigned by controller", {"event": "ipAllocated", "service": "default/web",
                                                          "ip": ["192.0.2.200", "2001:db8::200"]},
     ['{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"controller","event":"ipAllocated",'
      '"ip":"192.0.2.200","msg":"IP address assigned by controller","service":"default/web"}',
      '{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"controller","event":"ipAllocated",'
      '"ip":"2001:db8::200","msg":"IP address assigned by controller","service":"default/web"}']),
    ("agent", "not announcing service", {"event": "serviceNotAnnounced", "ip": ["203.0.113.5"],
                                          "service": "default/b", "protocol": "bgp", "reason": "noLocalEndpoints"},
     ['{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"agent","event":"serviceNotAnnounced",'
      '"ip":"203.0.113.5","msg":"not announcing service","service":"default/b","protocol":"bgp",'
      '"reason":"noLocalEndpoints"}']),
    ("agent", "service announced", {"event": "serviceAnnounced", "protocol": "layer2", "ip": "192.0.2.201"},
     ['{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"agent","event":"serviceAnnounced",'
      '"ip":"192.0.2.201","msg":"service announced","protocol":"layer2"}']),
    ("agent", "config reloaded", {"event": "configLoaded", "pools": ["a"]},     # no ip: none printed
     ['{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"agent","event":"configLoaded",'
      '"msg":"config reloaded","pools":["a"]}']),
    ("agent", "empty", {"event": "x", "ip": []},
     ['{"level":"info","ts":"2025-12-03T15:00:00.123Z","component":"agent","event":"x","msg":"empty"}']),
])
def test_exact_lines(component, msg, fields, want):
    assert format_lines("info", T, component, msg, fields) == want


def test_the_seed_grep_matches_a_real_logger_line():
    buf = io.StringIO()
    mlog.setup("info", stream=buf)
    try:
        mlog.get_logger("controller").info("IP address assigned by controller", event="ipAllocated",
                                           service="default/web", ip=["192.0.2.200"], pool="l2")
        mlog.get_logger("controller").warning("w", event="e")
    finally:
        mlog.setup("info")
    lines = buf.getvalue().splitlines()
    assert '"event":"ipAllocated","ip":"192.0.2.200","msg":"IP address assigned by controller"' in lines[0]
    assert lines[1].startswith('{"level":"warn",')
