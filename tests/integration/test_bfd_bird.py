"""Our BFD against BIRD 2's `protocol bfd` (static sessions), both real, in lab namespaces."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from agent.bfd.runner import BFDManager
from metalxdp.config.types import BFDProfile
from metalxdp.lab.bfd_rig import BirdRouter, bird_bfd_conf, wait_until

pytestmark = pytest.mark.integration

ROUTER4, NODE4 = "192.0.2.1", "192.0.2.11"
ROUTER6, NODE6 = "2001:db8:0:1::1", "2001:db8:0:1::11"


@pytest.fixture
def bird_lab(topology):
    router = topology.add_host("router", ipv4=[f"{ROUTER4}/24"], ipv6=[f"{ROUTER6}/64"])
    node = topology.add_host("node1", ipv4=[f"{NODE4}/24"], ipv6=[f"{NODE6}/64"])
    bird = BirdRouter(router, Path(tempfile.mkdtemp(prefix="metalxdp-bird-")))
    bird.start(bird_bfd_conf([(NODE4, ROUTER4), (NODE6, ROUTER6)], rx=300, tx=300, mult=3))
    events = []
    m = BFDManager(on_state_change=lambda *e: events.append((time.monotonic(), *e)), netns=node.netns)
    try:
        yield topology, bird, m, events
    finally:
        m.close()
        bird.stop()


def bird_state(bird: BirdRouter, peer: str) -> str:
    return bird.bfd_sessions().get(peer, {}).get("state", "absent")


def test_bird_session_up_v4_and_v6(bird_lab):
    _, bird, bfd, _ = bird_lab
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    bfd.add_session(ROUTER6, NODE6, BFDProfile("p"))
    wait_until("BIRD to see both sessions Up", lambda: bird_state(bird, NODE4) == "Up"
               and bird_state(bird, NODE6) == "Up", 15)
    wait_until("our side Up", lambda: bfd.states() == {ROUTER4: "Up", ROUTER6: "Up"}, 5)
    s = bird.bfd_sessions()[NODE4]
    assert s["interval"] == "0.300" and s["timeout"] == "0.900"   # BIRD applied our 300 ms x 3
    info = bfd.sessions()[ROUTER4]
    assert (info.remote_receive_interval_ms, info.remote_transmit_interval_ms,
            info.remote_detect_multiplier) == (300, 300, 3)


def test_bird_detects_link_cut_and_we_do_too(bird_lab):
    topo, bird, bfd, events = bird_lab
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    wait_until("session Up", lambda: bird_state(bird, NODE4) == "Up"
               and bfd.states().get(ROUTER4) == "Up", 15)
    wait_until("BIRD at 300 ms", lambda: bird.bfd_sessions()[NODE4]["interval"] == "0.300", 5)
    time.sleep(0.5)
    t0 = time.monotonic()
    topo.set_link("node1", up=False)
    wait_until("BIRD to declare the node down", lambda: bird_state(bird, NODE4) == "Down", 3,
               interval=0.01)
    bird_detect = time.monotonic() - t0
    wait_until("our side Down", lambda: bfd.states().get(ROUTER4) == "Down", 3, interval=0.01)
    assert bird_detect <= 1.5, f"BIRD took {bird_detect:.3f} s"
    ours = [t for t, p, o, n in events if p == ROUTER4 and (o, n) == ("Up", "Down")]
    assert ours and ours[0] - t0 <= 1.5
    topo.set_link("node1", up=True)
    wait_until("Up again", lambda: bird_state(bird, NODE4) == "Up"
               and bfd.states().get(ROUTER4) == "Up", 15)


def clock_s(hms: str) -> float:
    """BIRD's "HH:MM:SS.mmm" as seconds of the day."""
    h, m, sec = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def test_bird_timer_change_without_flap(bird_lab):
    _, bird, bfd, events = bird_lab
    bfd.add_session(ROUTER4, NODE4, BFDProfile("p"))
    wait_until("session Up", lambda: bird_state(bird, NODE4) == "Up", 15)
    since = bird.bfd_sessions()[NODE4]["since"]
    bfd.update_profile(ROUTER4, BFDProfile("p", receive_interval_ms=600, transmit_interval_ms=600,
                                           detect_multiplier=3))
    wait_until("BIRD at 600 ms", lambda: bird.bfd_sessions()[NODE4]["interval"] == "0.600", 10)
    time.sleep(1.5)
    s = bird.bfd_sessions()[NODE4]
    # never left Up: BIRD's "since" is the same instant (it prints it from its monotonic clock
    # converted anew each time, so the last millisecond may differ; a flap would move it by the
    # detection time and more)
    assert s["state"] == "Up" and abs(clock_s(s["since"]) - clock_s(since)) < 0.05, (since, s["since"])
    assert [n for _, p, o, n in events if p == ROUTER4] == ["Up"]   # one Up, nothing since
    assert bfd.sessions()[ROUTER4].session_down_events == 0
