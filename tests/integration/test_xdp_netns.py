"""The XDP dataplane on a real kernel, in network namespaces built by metalxdp.rig.netns:
a client asks for a VIP (arping, ndisc6, its own kernel) and gets the node's MAC from XDP.
The VIP is NOT an address of the node, so only XDP can answer; an AF_PACKET listener on
the node (which sees frames only after XDP passes them) proves the stack never saw the
requests. Also: hitless restart after kill -9, atomic upgrade, liveness gate, clean detach.

The dataplane runs as ``python -m agent.xdp_cli`` inside the node's netns, like the agent.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.dataplane import Dataplane
from metalxdp.rig.netns import Host, Topology

pytestmark = pytest.mark.integration

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
VIP4, VIP6 = "192.0.2.200", "2001:db8:0:1::200"


@dataclass
class Lab:
    topo: Topology
    node: Host
    client: Host
    pin_dir: str
    tmp: Path
    procs: list = field(default_factory=list)

    def agent(self, *args: str, wait_ready: bool = True, name: str = "agent") -> "Agent":
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        f = open(log, "w")
        p = self.node.popen([PY, "-m", "agent.xdp_cli", "--iface", "eth0", "--vip", VIP4, "--vip", VIP6,
                             "--bpffs-dir", self.pin_dir, *args], stdout=f, stderr=subprocess.STDOUT,
                            cwd=REPO, start_new_session=True)
        a = Agent(p, log)
        self.procs.append(p)
        if wait_ready:
            a.wait_for("xdpReady")
        return a

    def peer_pass_program(self) -> None:
        """Native XDP_TX on a veth needs an XDP program on the peer (the bridge port)."""
        subprocess.run(["ip", "netns", "exec", self.topo.switch_netns, PY, "-m", "agent.xdp_cli",
                        "--iface", self.node.peer_ifname, "--pass-only"], cwd=REPO, check=True,
                       capture_output=True, timeout=60)

    def listener(self) -> subprocess.Popen:
        """Counts ARP/NS for the VIPs reaching AF_PACKET on the node (i.e. not taken by XDP)."""
        p = self.node.popen([PY, "-m", "agent.userspace_responder", "--iface", "eth0", "--vip", VIP4,
                             "--vip", VIP6, "--listen-only", "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.procs.append(p)
        assert "responderReady" in p.stdout.readline()
        return p


@dataclass
class Agent:
    proc: subprocess.Popen
    log: Path

    def events(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e.get("event") == event:
                    return e
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} event; log:\n{self.log.read_text()[-3000:]}")

    def last_counters(self) -> dict:
        found = [e for e in self.events() if e.get("event") == "xdpCounters"]
        assert found, self.log.read_text()[-2000:]
        return found[-1]


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture
def lab(tmp_path):
    with Topology() as topo:
        node = topo.add_host("node1", ipv4=["192.0.2.11/24"], ipv6=["2001:db8:0:1::11/64"])
        client = topo.add_host("client", ipv4=["192.0.2.100/24"], ipv6=["2001:db8:0:1::100/64"])
        pin_dir = f"/sys/fs/bpf/metalxdp/{node.netns}"
        lab = Lab(topo, node, client, pin_dir, tmp_path)
        try:
            yield lab
        finally:
            for p in lab.procs:
                _stop(p)
            Dataplane.purge(pin_dir)   # the netns deletion removes the attachments
    assert not os.path.exists(pin_dir)


def arping(client: Host, count: int, interval_s: float = 0.2, timeout: float = 60) -> tuple[int, int, set]:
    """(sent, received, replying MACs) from arping in the client's netns."""
    r = client.run(["arping", "-i", "eth0", "-c", str(count), "-W", str(interval_s), VIP4],
                   check=False, timeout=timeout)
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", r.stdout)
    assert m, r.stdout + r.stderr
    macs = set(re.findall(r"bytes from ([0-9a-f:]{17})", r.stdout))
    return int(m.group(1)), int(m.group(2)), macs


def ndisc(client: Host, target: str = VIP6) -> str:
    r = client.run(["ndisc6", "-1", "-q", "-r", "3", "-w", "500", target, "eth0"], check=False)
    return r.stdout.strip().lower()


UNICAST_NS_PROBE = r'''
import socket, sys, time, select
from agent import packets as P
client_mac, node_mac, src, vip = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD)); s.bind(("eth0", 0x86DD))
s.send(P.neighbor_solicit(client_mac, src, vip, dst_ip=vip, dst_mac=node_mac, sllao=False))
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    if not select.select([s], [], [], 0.1)[0]:
        continue
    f = s.recv(2048); na = P.parse_ndp(f)
    if na and na.type == P.ND_NEIGHBOR_ADVERT and str(na.target) == vip:
        print(f"{na.lladdr.hex()} {na.solicited} {na.override} {na.checksum_ok} {na.dst}"); break
'''


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_arp_and_ndp_answered_by_xdp(lab, mode):
    node, client = lab.node, lab.client
    if mode == "native":
        lab.peer_pass_program()
    agent = lab.agent("--xdp-mode", mode, "--no-garp", "--stats-interval-s", "0.2")
    assert agent.wait_for("xdpReady")["modes"] == {"eth0": mode}
    assert VIP4 not in node.run(["ip", "-j", "addr"]).stdout       # only XDP can answer
    listener = lab.listener()

    sent, received, macs = arping(client, 5, 0.05)
    assert (sent, received, macs) == (5, 5, {node.mac})
    assert ndisc(client) == node.mac
    probe = client.run([PY, "-c", UNICAST_NS_PROBE, client.mac.replace(":", ""), node.mac.replace(":", ""),
                        "2001:db8:0:1::100", VIP6], check=False)
    assert probe.stdout.split() == [node.mac.replace(":", ""), "True", "False", "True", "2001:db8:0:1::100"], \
        probe.stdout + probe.stderr

    # the client's own kernel resolves the VIPs (ping fails: the node does not own them)
    client.run(["ping", "-c", "1", "-W", "1", VIP4], check=False)
    client.run(["ping", "-6", "-c", "1", "-W", "1", VIP6], check=False)
    assert node.mac in client.run(["ip", "neigh", "show", VIP4, "dev", "eth0"]).stdout
    assert node.mac in client.run(["ip", "-6", "neigh", "show", VIP6, "dev", "eth0"]).stdout

    listener.send_signal(signal.SIGTERM)
    done = json.loads(listener.communicate(timeout=10)[0].strip().splitlines()[-1])
    assert done["requests"] == 0, "the node's stack saw requests XDP should have answered"

    time.sleep(0.5)
    c = agent.last_counters()
    v4, v6 = c["vips"][f"{VIP4}%{node.ifindex()}"], c["vips"][f"{VIP6}%{node.ifindex()}"]
    assert v4["replies"] == v4["requests"] >= 6       # 5 arping + the client kernel's request
    assert v6["replies"] == v6["requests"] >= 3       # ndisc6, the unicast probe, the kernel
    assert v4["rx_packets"] >= 1 and v6["rx_packets"] >= 1   # the pings, counted then passed
    assert c["global"]["gated"] == 0


def test_gratuitous_burst_reaches_the_client(lab):
    """GARP on start: the client (arp_accept on) learns the VIP's MAC without asking."""
    lab.client.run(["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
    lab.client.run(["ip", "neigh", "add", VIP4, "lladdr", "02:00:5e:00:53:99", "dev", "eth0", "nud", "stale"])
    agent = lab.agent("--xdp-mode", "generic", "--stats-interval-s", "0.5")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and lab.node.mac not in lab.client.run(["ip", "neigh", "show", VIP4]).stdout:
        time.sleep(0.1)
    assert lab.node.mac in lab.client.run(["ip", "neigh", "show", VIP4]).stdout
    time.sleep(5.5)
    sent = agent.last_counters()["gratuitous_sent"]
    assert sent[VIP4] == 10 and sent[VIP6] == 5     # 5 bursts: t = 0, 1.1, 2.2, 3.3, 4.4 s


def _arping_during(lab: Lab, action, count: int = 300, interval_s: float = 0.01) -> tuple[int, int]:
    p = lab.client.popen(["arping", "-i", "eth0", "-c", str(count), "-W", str(interval_s), VIP4],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lab.procs.append(p)
    try:
        time.sleep(0.3)
        action()
        out = p.communicate(timeout=60)[0]
    finally:
        _stop(p)
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_kill_9_and_restart_is_hitless(lab, mode):
    if mode == "native":
        lab.peer_pass_program()
    first = lab.agent("--xdp-mode", mode, "--no-garp", "--liveness-max-age-ms", "5000")
    restarted = []

    def kill_and_restart():
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=5)
        restarted.append(lab.agent("--xdp-mode", mode, "--no-garp", "--liveness-max-age-ms", "5000"))

    sent, received = _arping_during(lab, kill_and_restart, count=400)
    assert restarted[0].wait_for("xdpReady")["adopted"] is True
    assert restarted[0].wait_for("xdpAdopted")["prog_id"] == first.wait_for("xdpLoaded")["prog_id"]
    assert sent == 400 and received == sent, f"{sent - received} of {sent} requests unanswered"


def test_upgrade_replaces_the_program_atomically(lab):
    """Another program version (here: other cflags) replaces the attached one with
    XDP_FLAGS_REPLACE after the new maps are filled: no request goes unanswered."""
    first = lab.agent("--xdp-mode", "generic", "--no-garp")
    upgraded = []

    def upgrade():
        upgraded.append(lab.agent("--xdp-mode", "generic", "--no-garp", "--bpf-cflag", "-DMAX_VIPS=2048"))
        os.kill(first.proc.pid, signal.SIGKILL)

    sent, received = _arping_during(lab, upgrade, count=300)
    e = upgraded[0].wait_for("xdpReplaced")
    assert e["old_prog_id"] == first.wait_for("xdpLoaded")["prog_id"] != e["prog_id"]
    assert received == sent == 300


def test_liveness_gate_silences_a_dead_agent(lab):
    a = lab.agent("--xdp-mode", "generic", "--no-garp", "--liveness-max-age-ms", "300")
    assert arping(lab.client, 2, 0.05)[1] == 2
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(timeout=5)
    time.sleep(0.6)
    assert arping(lab.client, 3, 0.1)[1] == 0        # heartbeat too old: XDP passes, nobody answers
    lab.agent("--xdp-mode", "generic", "--no-garp", "--liveness-max-age-ms", "300")
    assert arping(lab.client, 2, 0.05)[1] == 2


def test_clean_detach_on_sigterm(lab):
    a = lab.agent("--xdp-mode", "generic", "--detach-on-exit", "--no-garp")
    assert "xdpgeneric" in lab.node.run(["ip", "link", "show", "eth0"]).stdout
    assert os.path.exists(os.path.join(lab.pin_dir, "mx_vips"))
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=15) == 0
    a.wait_for("xdpDetached")
    assert "xdp" not in lab.node.run(["ip", "link", "show", "eth0"]).stdout
    assert json.loads(lab.node.run(["bpftool", "-j", "net"]).stdout)[0]["xdp"] == []
    assert not os.path.exists(lab.pin_dir)
    assert arping(lab.client, 2, 0.05)[1] == 0


def test_gratuitous_rhythm_and_cancel():
    """The sender's schedule with an injected send (no socket): immediate burst, then every
    interval until duration; cancel stops at once."""
    from agent.garp import GratuitousSender
    sent = []
    mac = bytes.fromhex("02005e000001")
    with GratuitousSender(interval_s=0.1, duration_s=0.45, send=lambda ifname, f: sent.append((time.monotonic(), f))) as g:
        g.start(VIP4, "eth0", mac)
        g.start("192.0.2.201", "eth0", mac)
        time.sleep(0.05)
        g.cancel("192.0.2.201")
        time.sleep(0.6)
        assert g.active() == []
        counts = g.sent()
    assert counts == {VIP4: 10, "192.0.2.201": 2}      # 5 bursts x (request + reply); 1 burst then cancelled
