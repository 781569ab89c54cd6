"""When the agent's reconcile loop handles an event at once and when it gathers a burst."""
import pytest

from agent.node import COALESCE_S, IDLE_AFTER_S, idle_since


@pytest.mark.parametrize("last_pass,now,idle", [
    (None, 5.0, True),                          # no pass yet: the first event goes at once
    (10.0, 10.0 + IDLE_AFTER_S * 1.5, True),    # quiet since the last pass: a new burst
    (10.0, 11.0, True),                         # a single Service after a second of calm
    (10.0, 10.0 + IDLE_AFTER_S / 2, False),     # right after a pass: more of the same burst
    (10.0, 10.0, False),
])
def test_idle_since(last_pass, now, idle):
    assert idle_since(last_pass, now) is idle


def test_a_services_endpointslice_is_not_held_back_by_the_services_pass():
    # measured on the process lab: the EndpointSlice of a new Service reached the agent ~13 ms
    # after the pass for the Service itself ended; with a 20 ms idle threshold it then waited
    # COALESCE_S more, which was part of every announce
    assert idle_since(10.0, 10.013)
    assert 0 < COALESCE_S
