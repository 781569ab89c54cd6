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


def test_a_burst_window_is_shorter_than_what_counts_as_idle():
    # an event during a burst waits COALESCE_S; the pass after it must not look idle to the
    # next event of the same burst, or every event would get a pass of its own
    assert 0 < COALESCE_S <= IDLE_AFTER_S
