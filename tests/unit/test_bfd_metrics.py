"""The metallb_bfd_* exposition: MetalLB's exact names, consistent HELP/TYPE/sample lines."""
from prometheus_client import CollectorRegistry, generate_latest

from agent.bfd.metrics import register_bfd_metrics
from agent.bfd.runner import SessionInfo


class Source:
    def __init__(self, state="Up"):
        self.state = state

    def sessions(self):
        return {"192.0.2.1": SessionInfo(
            peer="192.0.2.1", local="192.0.2.11", multihop=False, profile="p", state=self.state,
            local_diag="none", remote_state="Up", local_discr=1, remote_discr=2, source_port=50000,
            tx_interval_ms=300, detection_time_ms=900, remote_receive_interval_ms=300,
            remote_transmit_interval_ms=300, remote_detect_multiplier=3, control_packet_input=10,
            control_packet_output=12, session_up_events=1, session_down_events=0, up_since=None)}


def test_exposition_uses_metallb_names():
    r = CollectorRegistry()
    register_bfd_metrics(r, Source())
    text = generate_latest(r).decode()
    lines = {l.split("{")[0] for l in text.splitlines() if l and not l.startswith("#")}
    assert lines == {"metallb_bfd_session_up", "metallb_bfd_control_packet_input",
                     "metallb_bfd_control_packet_output", "metallb_bfd_session_up_events",
                     "metallb_bfd_session_down_events", "metallb_bfd_echo_packet_input",
                     "metallb_bfd_echo_packet_output"}
    assert "_total" not in text
    assert 'metallb_bfd_control_packet_output{peer="192.0.2.1"} 12.0' in text
    for name in lines:                         # every sample has a matching TYPE line
        assert f"# TYPE {name} " in text


def test_session_up_gauge_follows_state():
    r = CollectorRegistry()
    register_bfd_metrics(r, Source("Down"))
    assert r.get_sample_value("metallb_bfd_session_up", {"peer": "192.0.2.1"}) == 0
