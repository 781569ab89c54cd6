"""Operability in the network-namespace lab (issue 18): ``metalxdp status`` (the cluster-wide
view from the API), ``metalxdp agent status`` (run inside a node's namespace, as in an agent
pod) compared field by field with what FRR shows from the router's side for the same BGP and
BFD sessions, the agent's log line for a Service it does not announce, and a support bundle
with no secret in it. One BFD lab (300 ms x 3, every BGP session) for the module.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
import time

import pytest

from metalxdp.lab import tools as lt
from metalxdp.lab.cluster import kubectl
from metalxdp.lab.spec import NAMESPACE, LabSpec

from .test_bgp_lab import NODE4, NODE6, NODES, established_lab, metallb, router, wait_equal
from .test_bgp_lab import made  # noqa: F401 - the per-test Cleanup fixture, over this module's lab

pytestmark = pytest.mark.integration

PROFILE = "lab-bfd"
ROUTER4, ROUTER6 = "192.0.2.1", "2001:db8:0:1::1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with established_lab(tmp_path_factory, "stat", LabSpec(bfd_profile=PROFILE), timeout=90) as lab:
        frr = router(lab)
        wait_equal("6 BFD sessions up", lambda: {p["peer"] for p in frr.json("show bfd peers")
                                                 if p["status"] == "up"},
                   set(NODE4.values()) | set(NODE6.values()), 60)
        yield lab


def cli(lab, *args, netns=None, check=True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "metalxdp.cli", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env={"KUBECONFIG": lab.kubeconfig(), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def cluster_status(lab) -> dict:
    return json.loads(cli(lab, "status", "--json").stdout)


def agent_status(lab, node: str) -> dict:
    return json.loads(cli(lab, "agent", "status", "--json", netns=lab.host(node).netns).stdout)


# ---- the cluster-wide view ------------------------------------------------------------------

def test_a_service_announced_nowhere_shows_the_reason_in_status_and_in_the_agent_log(lab, made):
    """A pool no advertisement names: the Service gets an IP, no node announces it, and both
    `metalxdp status` and every agent's log say noMatchingAdvertisement."""
    made.obj(metallb("IPAddressPool", "orphan", {"addresses": ["198.51.100.16/30"]}))
    made.service("orphan", pool="orphan")
    ip = lt.wait_service_ips(lab, "orphan")[0]
    assert ip.startswith("198.51.100.")

    def svc():
        return next(s for s in cluster_status(lab)["services"] if s["service"] == "default/orphan")
    wait_equal("every agent's reason for default/orphan in `metalxdp status`",
               lambda: sorted((r["node"], r["reason"]) for r in svc()["layer2"]["notAnnounced"]),
               [(n, "noMatchingAdvertisement") for n in NODES], 60)
    s = svc()
    assert (s["ips"], s["pool"], s["announced"]) == ([ip], "orphan", False)
    assert s["why"].startswith("noMatchingAdvertisement: ")
    text = cli(lab, "status").stdout
    assert any(line.split()[:3] == ["default/orphan", ip, "orphan"] for line in text.splitlines()), text
    assert "Not announced anywhere:\n" in text
    assert "  default/orphan: noMatchingAdvertisement: " in text
    # the seeds' troubleshooting grep, verbatim, on the controller's log (seed 000, 001)
    seed = f'"event":"ipAllocated","ip":"{ip}","msg":"IP address assigned by controller'
    r = subprocess.run(["grep", "-F", seed, str(lab.dir / "logs" / "controller.log")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("\n") == 1, (seed, r.stdout)
    for n in NODES:
        assert f"    {n} (layer2): noMatchingAdvertisement: " in text
        # the agent's log: one compact JSON line with the reason (MetalLB's field shapes)
        wait_equal(f"{n}'s serviceNotAnnounced line", lambda n=n: [
            (e["ip"], e["reason"]) for e in lt.agent_log_events(lab, n, "serviceNotAnnounced", service="default/orphan")][-1:],
            [(ip, "noMatchingAdvertisement")], 30)
        line = next(raw for raw in (lab.dir / "logs" / f"agent-{n}.log").read_text().splitlines()
                    if '"event":"serviceNotAnnounced"' in raw and "default/orphan" in raw)
        assert f'"event":"serviceNotAnnounced","ip":"{ip}"' in line, line
        assert '"reason":"noMatchingAdvertisement"' in line


def test_status_lists_announcers_pools_and_config(lab, made):
    made.backend("st-web", "node2", {"app": "st-web"})
    made.service("web-l2", selector={"app": "st-web"})
    made.service("web-bgp", pool="lab-bgp", selector={"app": "st-web"})
    ip_l2 = lt.wait_service_ips(lab, "web-l2")[0]
    ip_bgp = lt.wait_service_ips(lab, "web-bgp")[0]

    def svcs():
        return {s["service"]: s for s in cluster_status(lab)["services"]}
    wait_equal("an L2 announcer for web-l2 and three BGP announcers for web-bgp",
               lambda: (len(svcs()["default/web-l2"]["layer2"]["announcers"]),
                        sorted(svcs()["default/web-bgp"]["bgp"]["announcers"])), (1, list(NODES)), 60)
    doc = cluster_status(lab)
    s = {x["service"]: x for x in doc["services"]}
    owner = lt.announcing_node(lab, ip_l2)
    assert s["default/web-l2"]["ips"] == [ip_l2] and s["default/web-l2"]["pool"] == "lab-l2"
    assert list(s["default/web-l2"]["layer2"]["announcers"]) == [owner]
    assert s["default/web-bgp"]["ips"] == [ip_bgp] and s["default/web-bgp"]["pool"] == "lab-bgp"
    assert all(peers for peers in s["default/web-bgp"]["bgp"]["announcers"].values())
    assert doc["config"] == {"result": "Valid", "errorSummary": None}
    assert doc["leader"]
    pools = {p["name"]: p for p in doc["pools"]}
    assert pools["lab-l2"]["assignedIPv4"] >= 1 and pools["lab-bgp"]["assignedIPv4"] >= 1
    assert pools["lab-l2"]["assignedIPv4"] + pools["lab-l2"]["availableIPv4"] == 20


# ---- agent status against FRR ----------------------------------------------------------------

def test_agent_status_matches_frr_show_bgp_summary_field_by_field(lab, made):
    made.backend("st-sum", "node3", {"app": "st-sum"})
    made.service("sum-bgp", pool="lab-bgp", selector={"app": "st-sum"})
    lt.wait_service_ips(lab, "sum-bgp")
    frr = router(lab)
    for node in NODES:
        def pair(node=node):
            doc = agent_status(lab, node)
            mine = {s["address"]: s for s in doc["bgp"]["sessions"]}
            theirs = {**frr.json("show bgp ipv4 unicast summary")["peers"],
                      **frr.json("show bgp ipv6 unicast summary")["peers"]}
            return doc, mine, theirs, time.time()
        # the prefix counts settle once the routes of this test's Service reached the router
        deadline = time.monotonic() + 30
        while True:
            doc, mine, theirs, now = pair()
            ok = set(mine) == {ROUTER4, ROUTER6} and all(
                mine[a]["prefixesSent"] == theirs[NODE4[node] if a == ROUTER4 else NODE6[node]]["pfxRcd"] for a in mine)
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(mine) == {ROUTER4, ROUTER6}, mine
        for addr, node_addr in ((ROUTER4, NODE4[node]), (ROUTER6, NODE6[node])):
            a, f = mine[addr], theirs[node_addr]
            assert a["state"] == f["state"] == "Established", (node, addr)
            assert a["myASN"] == f["remoteAs"] == 64513
            assert a["peerASN"] == f["localAs"] == 64512
            # the IPv4 Service's route travels on the IPv4 session only
            assert a["prefixesSent"] == f["pfxRcd"] >= (1 if addr == ROUTER4 else 0), (node, addr, a, f)
            # uptime: the agent's upSince and FRR's peerUptimeMsec name the same moment
            assert abs((now - a["upSince"]) - f["peerUptimeMsec"] / 1000) < 5, (node, addr, a, f)
        text = cli(lab, "agent", "status", netns=lab.host(node).netns).stdout
        assert "BGP sessions (show bgp summary):" in text and f"{ROUTER4}" in text


def test_agent_status_matches_frr_show_bfd_peers_field_by_field(lab):
    frr = {p["peer"]: p for p in router(lab).json("show bfd peers")}
    for node in NODES:
        mine = {p["peer"]: p for p in agent_status(lab, node)["bfd"]["peers"]}
        assert set(mine) == {ROUTER4, ROUTER6}, (node, mine)
        for addr, node_addr in ((ROUTER4, NODE4[node]), (ROUTER6, NODE6[node])):
            a, f = mine[addr], frr[node_addr]
            assert a["status"] == f["status"] == "up", (node, addr)
            assert a["local"] == node_addr
            # each side's discriminator is the other's remote-id
            assert (a["id"], a["remote-id"]) == (f["remote-id"], f["id"]), (node, addr, a, f)
            # each side's timers are what the other reports as remote
            for k in ("receive-interval", "transmit-interval", "detect-multiplier"):
                assert a[k] == f[f"remote-{k}"], (node, addr, k)
                assert a[f"remote-{k}"] == f[k], (node, addr, k)
            assert a["diagnostic"] == f["diagnostic"] == "ok"
            assert abs(a["uptime"] - f["uptime"]) <= 5, (node, addr, a["uptime"], f["uptime"])


def test_agent_status_shows_xdp_membership_and_decoded_counters(lab, made):
    made.backend("st-cnt", "node1", {"app": "st-cnt"})
    made.service("cnt", selector={"app": "st-cnt"})
    ip = lt.wait_service_ips(lab, "cnt")[0]
    wait_equal("an announcer", lambda: lt.announcing_node(lab, ip) is not None, True, 30)
    owner = lt.announcing_node(lab, ip)

    def vip():
        return next(v for v in agent_status(lab, owner)["vips"] if v["ip"] == ip)
    before = vip()["counters"]
    assert len(lt.arp_replies(lab, ip, count=3)) == 3
    doc = agent_status(lab, owner)
    assert doc["xdp"]["enabled"] and doc["xdp"]["programId"] > 0
    assert doc["xdp"]["liveness"]["open"] is True
    assert doc["membership"]["members"] == sorted(NODES)
    v = vip()
    assert v["service"] == "default/cnt"
    assert all(isinstance(c, int) for c in v["counters"].values())
    assert v["counters"]["requests"] - before["requests"] >= 3, (before, v)
    assert v["counters"]["replies"] - before["replies"] >= 3, (before, v)


# ---- support bundle ------------------------------------------------------------------------

def test_support_bundle_has_the_parts_and_no_secret(lab, made, tmp_path):
    secret_value = "s3cr3t-bgp-pw-7f1d"
    made.obj({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-auth", "namespace": NAMESPACE},
              "type": "kubernetes.io/basic-auth", "stringData": {"password": secret_value}})
    made.obj(metallb("BGPPeer", "with-password", {
        "myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.250", "password": secret_value + "-inline",
        "nodeSelectors": [{"matchLabels": {"example.com/no-such-node": "x"}}]}, version="v1beta2"))
    made.backend("st-bundle", "node1", {"app": "st-bundle"})
    made.service("bundle", selector={"app": "st-bundle"})
    lt.wait_service_ips(lab, "bundle")
    ml = kubectl(lab.kubeconfig(), "get", "secret", "-n", NAMESPACE, "-o", "json").stdout
    secret_values = {base64.b64decode(v).decode(errors="replace") for s in json.loads(ml)["items"]
                     for v in (s.get("data") or {}).values()}
    assert secret_value in secret_values
    out = tmp_path / "bundle.tar.gz"
    endpoints = [f"--agent-endpoint={n}=http://{NODE4[n]}:7472" for n in NODES]
    r = cli(lab, "support-bundle", "-o", str(out), "--local", "--bpffs-dir", str(lab.dir / "no-pins"),
            "--workdir", str(lab.dir / "agent"), "--include", str(lab.dir / "logs"), *endpoints,
            netns=lab.host("node1").netns)
    assert "wrote" in r.stdout, r.stdout + r.stderr
    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode(errors="replace")
                 for m in tar.getmembers()}
    for want in ("status.json", "status.txt", "resources/ipaddresspools.json", "resources/bgppeers.json",
                 "resources/services.json", "resources/events.json", "resources/nodes.json",
                 *(f"agents/{n}.json" for n in NODES), "included/logs/agent-node1.log"):
        assert want in files, (want, sorted(files))
    assert any(n.startswith("local/exabgp/") and n.endswith("exabgp.log") for n in files), sorted(files)
    assert json.loads(files["agents/node2.json"])["node"] == "node2"
    assert "with-password" in files["resources/bgppeers.json"]
    leaked = {name for name, text in files.items() for v in secret_values | {secret_value + "-inline"}
              if len(v) >= 8 and v in text}
    assert not leaked, leaked
