"""Membership over real UDP between network namespaces (agent.membership_udp).

Each member is a runner thread in this process whose socket was created inside its node's
namespace; the nodes share one bridge (metalxdp.rig.netns.Topology). Cutting a node's cable
must make the others declare it dead well within a second (asserted with slack: < 3 s; the
benchmark gives the figures), restoring it must bring it back, and a member with the wrong
key must never get in.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.membership import Membership, MembershipConfig, derive_key
from agent.membership_udp import MembershipRunner, open_socket, open_stream_socket, parse_peer

KEY = derive_key(b"c2VjcmV0a2V5LWZvci10ZXN0cw==")
PORT = 7946
NODES = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
ALL3 = frozenset(NODES)
REPO = Path(__file__).resolve().parents[2]


def poll(cond, timeout: float, step: float = 0.01) -> float:
    """Seconds until cond() held; fails after timeout."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"not reached within {timeout}s"
        time.sleep(step)
    return time.monotonic() - start


@pytest.fixture
def cluster(topology):
    hosts = {n: topology.add_host(n, ipv4=[f"{ip}/24"]) for n, ip in NODES.items()}
    runners: dict[str, MembershipRunner] = {}
    left: list[tuple[str, str]] = []          # (observer, member) from the on_leave callbacks
    try:
        for n, ip in NODES.items():
            seeds = [(p, PORT) for o, p in NODES.items() if o != n]
            m = Membership(n, (ip, PORT), KEY, seeds=seeds, config=MembershipConfig(),
                           epoch=time.time_ns() // 1_000_000)
            runners[n] = MembershipRunner(m, open_socket(ip, PORT, netns=hosts[n].netns),
                                          on_leave=lambda who, n=n: left.append((n, who)),
                                          stream_sock=open_stream_socket(ip, PORT, netns=hosts[n].netns),
                                          netns=hosts[n].netns).start()
        runners["left"] = left
        yield topology, hosts, runners
    finally:
        for n in NODES:
            if n in runners:
                runners[n].stop(leave=False)


def test_members_see_each_other_cut_and_rejoin(cluster):
    topo, hosts, runners = cluster
    poll(lambda: all(runners[n].members() == ALL3 for n in NODES), timeout=5)

    topo.set_link("node3", up=False)
    took = poll(lambda: all("node3" not in runners[n].members() for n in ("node1", "node2")),
                timeout=3)
    print(f"node3 declared dead by node1 and node2 after {took:.3f}s")
    assert took < 3.0
    assert runners["node1"].members() == runners["node2"].members() == {"node1", "node2"}
    poll(lambda: runners["node3"].members() == {"node3"}, timeout=3)

    topo.set_link("node3", up=True)
    back = poll(lambda: all(runners[n].members() == ALL3 for n in NODES), timeout=5)
    print(f"node3 rejoined after {back:.3f}s")
    time.sleep(1.0)
    # node3 came back believing everybody else dead: node1 and node2 must not flap over it
    assert not {("node1", "node2"), ("node2", "node1")} & set(runners["left"])
    assert all(runners[n].members() == ALL3 for n in NODES)
    assert runners["node1"].stats()["rx_bad_auth"] == 0


def drop_gossip_udp(host, on: bool) -> None:
    """nftables in the host's namespace: drop the gossip port's UDP both ways (TCP passes)."""
    if on:
        host.run(["nft", "-f", "-"], input=(
            "table inet mxpart {\n"
            f" chain in {{ type filter hook input priority 0; udp dport {PORT} drop; }}\n"
            f" chain out {{ type filter hook output priority 0; udp dport {PORT} drop; }}\n"
            "}\n"))
    else:
        host.run(["nft", "delete", "table", "inet", "mxpart"])


def test_udp_of_the_gossip_port_dropped_the_tcp_fallback_keeps_the_view_whole(cluster):
    """Issue 19's membership partition: node3's gossip UDP is dropped both ways, the data path
    and TCP are intact. The TCP fallback probe (memberlist's) keeps every node seeing all
    three; without it node3 would end alone and the L2 election would run in two halves
    (tests/unit/test_membership.py shows that split with the fallback off)."""
    topo, hosts, runners = cluster
    poll(lambda: all(runners[n].members() == ALL3 for n in NODES), timeout=5)
    before = {n: runners[n].stats()["stream_probes"] for n in NODES}
    drop_gossip_udp(hosts["node3"], True)
    try:
        time.sleep(5.0)       # >10x the time a silent node takes to be declared dead
        assert all(runners[n].members() == ALL3 for n in NODES), {n: runners[n].members() for n in NODES}
        assert not [e for e in runners["left"] if "node3" in e], runners["left"]
        assert all(runners[n].stats()["stream_probes"] > before[n] for n in NODES)
    finally:
        drop_gossip_udp(hosts["node3"], False)
    time.sleep(1.0)
    assert all(runners[n].members() == ALL3 for n in NODES)


def test_hostile_tcp_connections_are_bounded_and_change_nothing(cluster):
    """Garbage, a forged-key packet, a huge length then silence, and a trickling peer on the
    TCP fallback port: each connection is closed within the stream deadline, nothing is
    accepted, and the members keep seeing each other."""
    import socket as s_
    from agent.membership_udp import frame
    topo, hosts, runners = cluster
    poll(lambda: all(runners[n].members() == ALL3 for n in NODES), timeout=5)
    rogue = topo.add_host("rogue", ipv4=["192.0.2.66/24"])
    forged = Membership("rogue", ("192.0.2.66", PORT), derive_key(b"not-the-secret"), epoch=1)
    ping = forged._ping(("192.0.2.11", PORT), 1, "node1")[1]
    payloads = [b"\x00\x05hello", frame(ping), b"\xff\xff", b"\x00"]
    script = (
        "import socket, sys, time\n"
        f"payloads = {payloads!r}\n"
        "for i, p in enumerate(payloads):\n"
        "    c = socket.create_connection(('192.0.2.11', 7946), timeout=5)\n"
        "    t = time.monotonic()\n"
        "    c.sendall(p)\n"
        "    if i == 3:\n"
        "        for _ in range(3):\n"
        "            time.sleep(0.4)\n"
        "            try: c.sendall(b'\\x01')\n"
        "            except OSError: break\n"
        "    c.settimeout(5)\n"
        "    try: got = c.recv(100)\n"
        "    except OSError: got = b'reset'\n"
        "    print(i, repr(got), round(time.monotonic() - t, 2))\n")
    out = rogue.run([sys.executable, "-c", script], timeout=60).stdout.splitlines()
    assert len(out) == 4, out
    for line in out:
        i, got, took = line.split(" ", 2)
        assert got in ("b''", "b'reset'"), line          # no answer to anything here
        assert float(took) < 3.0, line                     # closed by the deadline (1 s)
    assert runners["node1"].stats()["rx_bad_auth"] >= 1
    assert all(runners[n].members() == ALL3 for n in NODES)


def test_replayed_and_forged_gossip_over_udp_changes_nothing(cluster):
    """Issue 19's security item over real UDP: node3's own packets, captured as sent, are
    replayed to node1 and node2 from a host without the key, together with packets forged with
    another key that claim node3 dead and a new member alive. Nobody leaves, nobody joins, and
    every replay and forgery is counted."""
    topo, hosts, runners = cluster
    poll(lambda: all(runners[n].members() == ALL3 for n in NODES), timeout=5)
    captured: list[bytes] = []
    r3 = runners["node3"]
    real_send = r3._send
    r3._send = lambda out: (captured.extend(d for _, d in out), real_send(out))
    poll(lambda: len(captured) >= 40, timeout=10)
    r3._send = real_send
    rogue_host = topo.add_host("rogue", ipv4=["192.0.2.66/24"])
    forger = Membership("node3", ("192.0.2.13", PORT), derive_key(b"not-the-secret"), epoch=1 << 60)
    forger._apply(0.0, 0, 99, ("192.0.2.66", PORT), "intruder")          # "intruder is alive"
    forged = [d for _, d in forger.leave(0.0)] + [forger._ping(("192.0.2.11", PORT), 7, "node1")[1]]
    sock = open_socket("192.0.2.66", PORT, netns=rogue_host.netns)
    before = {n: runners[n].stats() for n in ("node1", "node2")}
    try:
        for _ in range(3):
            for data in captured + forged:
                for dst in ("192.0.2.11", "192.0.2.12"):
                    sock.sendto(data, (dst, PORT))
            time.sleep(0.5)
    finally:
        sock.close()
    time.sleep(1.0)
    assert all(runners[n].members() == ALL3 for n in NODES)
    assert not [e for e in runners["left"] if e[1] == "node3"], runners["left"]
    for n in ("node1", "node2"):
        after = runners[n].stats()
        assert after["rx_replayed"] - before[n]["rx_replayed"] >= len(captured), (n, after)
        assert after["rx_bad_auth"] - before[n]["rx_bad_auth"] >= len(forged), (n, after)


def test_wrong_key_is_ignored(cluster):
    topo, hosts, runners = cluster
    rogue_host = topo.add_host("rogue", ipv4=["192.0.2.66/24"])
    m = Membership("rogue", ("192.0.2.66", PORT), derive_key(b"not-the-secret"),
                   seeds=[(ip, PORT) for ip in NODES.values()], config=MembershipConfig(), epoch=1)
    rogue = MembershipRunner(m, open_socket("192.0.2.66", PORT, netns=rogue_host.netns)).start()
    try:
        poll(lambda: all(runners[n].stats()["rx_bad_auth"] > 0 for n in NODES), timeout=5)
        time.sleep(1.0)   # give it every chance to get in
        assert all(runners[n].members() == ALL3 for n in NODES)
        assert rogue.members() == {"rogue"}
    finally:
        rogue.stop(leave=False)


def test_cli_in_a_namespace_logs_json_events(topology, tmp_path):
    """The CLI, run with ``ip netns exec``, binds in that namespace and logs memberJoined."""
    keyf = tmp_path / "secretkey"
    keyf.write_text("c2VjcmV0a2V5LWZvci10ZXN0cw==\n")
    procs = []
    try:
        for n in ("node1", "node2"):
            h = topology.add_host(n, ipv4=[f"{NODES[n]}/24"])
            other = NODES["node2" if n == "node1" else "node1"]
            procs.append(h.popen([sys.executable, "-m", "agent.membership_udp", "--name", n,
                                  "--bind", NODES[n], "--peer", other, "--key-file", str(keyf),
                                  "--duration", "3"],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True))
        outs = [p.communicate(timeout=20)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert '"event":"memberJoined"' in outs[0] and '"member":"node2"' in outs[0], outs[0]
    assert '"event":"memberJoined"' in outs[1] and '"member":"node1"' in outs[1], outs[1]


def test_parse_peer():
    assert parse_peer("192.0.2.12") == ("192.0.2.12", 7946)
    assert parse_peer("192.0.2.12:8000") == ("192.0.2.12", 8000)
    assert parse_peer("2001:db8::12") == ("2001:db8::12", 7946)
    assert parse_peer("[2001:db8::12]:8000") == ("2001:db8::12", 8000)
