"""The agent's metric names are MetalLB's, exactly (no _total added to MetalLB's L2 counters)."""
from prometheus_client import CollectorRegistry, generate_latest

from agent.metrics import AgentMetrics, XDPCollector


def test_l2_and_xdp_metric_names_and_values():
    r = CollectorRegistry()
    AgentMetrics(r)
    per_vip = {("192.0.2.200", "eth0"): {"rx_packets": 3, "rx_bytes": 180, "requests": 2, "replies": 2,
                                         "misdirected": 1},
               ("192.0.2.200", "eth1"): {"rx_packets": 1, "rx_bytes": 60, "requests": 1, "replies": 0,
                                         "misdirected": 0}}
    r.register(XDPCollector(lambda: (per_vip, {"192.0.2.200": 4})))
    text = generate_latest(r).decode()
    assert 'metallb_layer2_requests_received{ip="192.0.2.200"} 3.0' in text      # summed over interfaces
    assert 'metallb_layer2_responses_sent{ip="192.0.2.200"} 2.0' in text
    assert 'metallb_layer2_gratuitous_sent{ip="192.0.2.200"} 4.0' in text
    assert "metallb_layer2_requests_received_total" not in text
    assert 'metalxdp_vip_packets_total{interface="eth0",ip="192.0.2.200"} 3.0' in text
    assert 'metalxdp_vip_bytes_total{interface="eth1",ip="192.0.2.200"} 60.0' in text
    assert 'metalxdp_vip_misdirected_packets_total{interface="eth0",ip="192.0.2.200"} 1.0' in text
    assert "# TYPE metallb_speaker_announced gauge" in text


def test_a_failing_counter_read_never_breaks_the_scrape():
    def boom():
        raise RuntimeError("map gone")
    r = CollectorRegistry()
    r.register(XDPCollector(boom))
    assert generate_latest(r) == b""


# ---- the XDP program's own state (metalxdp_xdp_*) ----------------------------------------------

import pytest  # noqa: E402

from agent.metrics import Attachment, XDPState, XDPStateCollector, liveness_gate_open  # noqa: E402

S = 1_000_000_000
HZ = 250   # 4 ms ticks; a 400 ms window is 100 jiffies


@pytest.mark.parametrize("desc,heartbeat_ns,max_age_jiffies,hz,now_ns,open_", [
    ("fresh heartbeat", 10 * S, 100, HZ, 10 * S + 50_000_000, True),
    ("exactly the window (100 ticks)", 10 * S, 100, HZ, 10 * S + 400_000_000, True),
    ("one tick past the window", 10 * S, 100, HZ, 10 * S + 404_000_000, False),
    ("within the last tick still counts as the window", 10 * S, 100, HZ, 10 * S + 403_999_999, True),
    ("long dead", 10 * S, 100, HZ, 60 * S, False),
    ("gate off: a window of 0 is always open", 10 * S, 0, HZ, 600 * S, True),
    ("heartbeat stamped after our clock read: age 0", 10 * S + 1, 100, HZ, 10 * S, True),
    ("a window without HZ cannot be honoured", 10 * S, 100, 0, 10 * S, False),
])
def test_liveness_gate_open(desc, heartbeat_ns, max_age_jiffies, hz, now_ns, open_):
    assert liveness_gate_open(heartbeat_ns, max_age_jiffies, hz, now_ns) is open_, desc


def _scrape(state) -> dict[str, float]:
    r = CollectorRegistry()
    r.register(XDPStateCollector(lambda: state))
    out = {}
    for line in generate_latest(r).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_xdp_state_series():
    st = XDPState(attachments=(Attachment("eth0", "native", True), Attachment("eth1", "generic", False)),
                  heartbeat_ns=10 * S, max_age_jiffies=100, max_age_ns=400_000_000, hz=HZ,
                  now_ns=10 * S + 500_000_000,
                  not_answered={"pass_vlan": 1, "pass_malformed": 2, "gated": 3, "not_for_us": 4})
    assert _scrape(st) == {
        'metalxdp_xdp_attached{interface="eth0",mode="native"}': 1.0,
        'metalxdp_xdp_attached{interface="eth1",mode="generic"}': 0.0,   # gone from the kernel
        "metalxdp_xdp_liveness_gate_open": 0.0,                           # 500 ms > 400 ms
        "metalxdp_xdp_heartbeat_age_seconds": 0.5,
        "metalxdp_xdp_liveness_max_age_seconds": 0.4,
        'metalxdp_xdp_frames_not_answered_total{reason="gated"}': 3.0,
        'metalxdp_xdp_frames_not_answered_total{reason="malformed"}': 2.0,
        'metalxdp_xdp_frames_not_answered_total{reason="not_for_us"}': 4.0,
        'metalxdp_xdp_frames_not_answered_total{reason="vlan"}': 1.0,
    }


def test_xdp_state_gate_open_with_fresh_heartbeat():
    st = XDPState(heartbeat_ns=10 * S, max_age_jiffies=100, max_age_ns=400_000_000, hz=HZ, now_ns=10 * S + 1000)
    assert _scrape(st)["metalxdp_xdp_liveness_gate_open"] == 1.0


def test_a_failing_xdp_state_read_drops_only_those_series():
    def boom():
        raise OSError("map gone")
    r = CollectorRegistry()
    AgentMetrics(r).members.set(3)
    r.register(XDPStateCollector(boom))
    text = generate_latest(r).decode()
    assert "metalxdp_membership_members 3.0" in text and "metalxdp_xdp_" not in text
