"""When the agent's reconcile loop handles an event at once and when it gathers a burst."""
import pytest

from agent.node import BURST_WAKES, COALESCE_S, IDLE_AFTER_S, gather_first, idle_since


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


@pytest.mark.parametrize("last_pass,now,wakes,gather", [
    (None, 5.0, 10, False),                          # no pass yet: at once
    (10.0, 10.0 + IDLE_AFTER_S * 2, 50, False),      # idle: a new burst starts now, at once
    (10.0, 10.0, 1, False),                          # one event came during the pass (a slice)
    (10.0, 10.0, BURST_WAKES - 1, False),            # a Service and its slice
    (10.0, 10.0, BURST_WAKES, True),                 # many: a burst under way, gather it
    (10.0, 10.0 + IDLE_AFTER_S / 2, 200, True),
])
def test_gather_first(last_pass, now, wakes, gather):
    assert gather_first(last_pass, now, wakes) is gather


def test_an_event_during_a_pass_is_not_held_back():
    # measured on the cluster lab (stop 40): a Service's status and its EndpointSlice reached
    # the agent 10-15 ms apart, the slice during the Service's own pass; the slice's pass then
    # waited COALESCE_S, and the announce with it
    assert not gather_first(10.0, 10.0, 1)
