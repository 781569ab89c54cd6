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
