"""Issue 6's acceptance for L2 mode, end to end in the network-namespace lab: real API server,
controller, three agents with XDP, the kube-proxy stand-in, backend pods and a client on one
L2 segment. Every check looks at what the client sees on the wire (ARP/NDP replies, its
neighbour cache, HTTP answers) or at what the agents publish (ServiceL2Status, events, logs,
metrics).

One lab for the module; each test creates its own Services, backends and metallb.io objects
and removes them again.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import threading
import time

import pytest

from metalxdp.lab import tools as lt
from metalxdp.lab.cluster import Lab, kubectl
from metalxdp.lab.spec import NAMESPACE
from metalxdp.rig.procs import RigError, wait_for

pytestmark = pytest.mark.integration

NODES = ("node1", "node2", "node3")
EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(name="l2-" + secrets.token_hex(3), root=tmp_path_factory.mktemp("l2lab"))
    try:
        lab.up(progress=lambda _m: None)
        yield lab
    finally:
        lab.down(progress=lambda _m: None)


# ---- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def backends(lab: Lab, app: str, *nodes: str):
    """One HTTP backend pod per node in ``nodes``, labelled app=<app> and not-<other node>=y for
    every other node (so a selector can leave out the backend of one node); removed afterwards."""
    names = []
    try:
        for i, node in enumerate(nodes):
            names.append(f"{app}-{i}")
            lab.add_backend(names[-1], node, {"app": app, **{f"not-{n}": "y" for n in NODES if n != node}})
        yield names
    finally:
        for n in names:
            lt.remove_backend(lab, n)


@contextlib.contextmanager
def service(lab: Lab, name: str, count: int = 1, **kw):
    """A LoadBalancer Service selecting app=<name> (unless ``selector``); yields its IPs."""
    kw.setdefault("selector", {"app": name})
    try:
        lt.apply_service(lab, name, **kw)
        yield lt.wait_service_ips(lab, name, count=count)
    finally:
        kubectl(lab.kubeconfig(), "delete", "svc", name, "--ignore-not-found", "--wait=false", check=False)


@contextlib.contextmanager
def metallb_objects(lab: Lab, *objs: dict):
    kc = lab.kubeconfig()
    try:
        for o in objs:
            o.setdefault("metadata", {})["namespace"] = NAMESPACE
            kubectl(kc, "apply", "-f", "-", input_=json.dumps(o))
        yield
    finally:
        for o in reversed(objs):
            kubectl(kc, "delete", o["kind"].lower() + "s.metallb.io", o["metadata"]["name"], "-n", NAMESPACE,
                    "--ignore-not-found", check=False)


def pool(name: str, *addresses: str) -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name},
            "spec": {"addresses": list(addresses), "autoAssign": False}}


def l2adv(name: str, pool_name: str, **spec) -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": name},
            "spec": {"ipAddressPools": [pool_name], **spec}}


def wait_announcer(lab: Lab, ip: str, expect=None, timeout: float = 30) -> str:
    """Wait until exactly one node answers ARP/NDP for ``ip`` (and it is ``expect`` when given:
    a node name or a set of allowed names); return it."""
    got: set = set()
    allowed = {expect} if isinstance(expect, str) else expect

    def check():
        nonlocal got
        got = lt.announcing_nodes(lab, ip)
        return len(got) == 1 and (allowed is None or got <= allowed)
    try:
        wait_for(f"one node ({allowed or 'any'}) to answer for {ip}", check, timeout)
    except Exception as e:
        raise AssertionError(f"{ip} is answered by {got or 'nobody'}, expected exactly one of "
                             f"{allowed or 'any node'}") from e
    return next(iter(got))


def mac_of(lab: Lab, host: str) -> str:
    return lab.status()["hosts"][host]["mac"]


def answers_directly(lab: Lab, node: str, ip: str) -> bool:
    """Does ``node`` answer an ARP request for ``ip`` sent to its own MAC (not broadcast)?"""
    return bool(lt.arp_replies(lab, ip, target_mac=mac_of(lab, node), wait_s=0.5))


def service_events(lab: Lab, name: str, reason: str) -> list[dict]:
    r = kubectl(lab.kubeconfig(), "get", "events", "-n", "default", "-o", "json",
                "--field-selector", f"involvedObject.name={name},reason={reason}", check=False)
    return json.loads(r.stdout or "{}").get("items", []) if r.returncode == 0 else []


def l2_statuses(lab: Lab, name: str) -> list[dict]:
    r = kubectl(lab.kubeconfig(), "get", "servicel2statuses.metallb.io", "-n", NAMESPACE, "-o", "json",
                "-l", f"metallb.io/service-name={name}")
    return json.loads(r.stdout)["items"]




def wait_stream_settled(stream: lt.RequestStream, seconds: float) -> None:
    t = time.monotonic()
    wait_for("the request stream to keep running", lambda: time.monotonic() - t >= seconds
             and len(stream.results) > 0, seconds + 30)


# ---- ETP Cluster / Local ----------------------------------------------------------------------
def test_etp_cluster_exactly_one_node_answers_with_status_and_event(lab):
    with backends(lab, "cl", "node2", "node3"), service(lab, "cl") as (ip,):
        assert lt.wait_curl(lab, ip).startswith("cl-")
        winner = wait_announcer(lab, ip)
        # three broadcast requests: every reply carries the winner's MAC, no other node answers
        assert lt.announcing_nodes(lab, ip, count=3) == {winner}
        for other in set(NODES) - {winner}:
            assert not answers_directly(lab, other, ip), f"{other} answers ARP for {ip} too"
        wait_for("a ServiceL2Status naming the winner",
                 lambda: [s.get("status", {}).get("node") for s in l2_statuses(lab, "cl")] == [winner], 30)
        st = l2_statuses(lab, "cl")[0]
        assert st["metadata"]["labels"]["metallb.io/node"] == winner
        assert {"name": "eth0"} in st["status"]["interfaces"]
        wait_for("event nodeAssigned", lambda: service_events(lab, "cl", "nodeAssigned"), 30)
        assert {e["source"]["host"] for e in service_events(lab, "cl", "nodeAssigned")} == {winner}
        for node in NODES:
            announced = lt.agent_log_events(lab, node, "serviceAnnounced", service="default/cl", ip=ip)
            assert bool(announced) == (node == winner), node
        for _ in range(5):   # ETP Cluster: both backends are reachable through the one node
            assert lt.curl(lab, ip)
    wait_for("ServiceL2Status removed with the Service", lambda: not l2_statuses(lab, "cl"), 30)


def test_status_owned_by_the_agent_pod_is_garbage_collected_with_it(lab):
    """With --pod-name (METALLB_POD_NAME in the DaemonSet) the agent's ServiceL2Status is owned by
    its pod, as MetalLB's speaker's is: the API's garbage collector (kube-controller-manager)
    deletes it with the pod. The pod here is an API object only (no kubelet in the lab)."""
    name = "own"
    pod = f"speaker-{secrets.token_hex(3)}"
    with backends(lab, name, "node1", "node2", "node3"), service(lab, name) as (ip,):
        lt.wait_curl(lab, ip)
        winner = wait_announcer(lab, ip)
        kubectl(lab.kubeconfig(), "apply", "-f", "-", input_=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NAMESPACE},
            "spec": {"nodeName": winner, "containers": [{"name": "agent", "image": "metalxdp:lab"}]}}))
        uid = json.loads(kubectl(lab.kubeconfig(), "get", "pod", pod, "-n", NAMESPACE, "-o", "json").stdout)[
            "metadata"]["uid"]
        try:
            lab.stop_agent(winner)
            lab.start_agent(winner, extra=("--pod-name", pod))
            # the restarted agent replaces its unowned object by one its pod owns
            wait_for("ServiceL2Status owned by the pod", lambda: [
                [o.get("uid") for o in st["metadata"].get("ownerReferences") or []]
                for st in l2_statuses(lab, name)] == [[uid]], 60)
            # no kubelet to confirm a graceful deletion: delete at once
            kubectl(lab.kubeconfig(), "delete", "pod", pod, "-n", NAMESPACE, "--grace-period=0", "--force")
            wait_for("ServiceL2Status garbage-collected with the pod", lambda: not l2_statuses(lab, name), 90)
        finally:
            kubectl(lab.kubeconfig(), "delete", "pod", pod, "-n", NAMESPACE, "--ignore-not-found",
                    "--grace-period=0", "--force", check=False)
            lab.restart_agent(winner)
        wait_for("an unowned ServiceL2Status again", lambda: [
            st["metadata"].get("ownerReferences") for st in l2_statuses(lab, name)] == [None], 60)


def test_etp_local_announced_only_where_a_ready_endpoint_is_and_follows_it(lab):
    with service(lab, "loc", etp="Local") as (ip,):
        with backends(lab, "loc", "node1"):
            wait_announcer(lab, ip, "node1")
            assert lt.wait_curl(lab, ip) == "loc-0 on node1"
        # no endpoint anywhere: nobody answers
        wait_for(f"nobody to answer for {ip} without endpoints", lambda: not lt.announcing_nodes(lab, ip), 30)
        # the backend moves to node3: so does the announcement
        with backends(lab, "loc", "node3"):
            wait_announcer(lab, ip, "node3")
            assert lt.wait_curl(lab, ip) == "loc-0 on node3"
            assert not answers_directly(lab, "node1", ip)
            assert not answers_directly(lab, "node2", ip)


# ---- L2Advertisement selectors, interfaces, exclude label ------------------------------------
def test_l2advertisement_node_selectors_pick_the_announcing_node(lab):
    kc = lab.kubeconfig()
    only = lambda node: [{"matchLabels": {"kubernetes.io/hostname": node}}]  # noqa: E731
    with metallb_objects(lab, pool("l2t-sel", "192.0.2.224-192.0.2.225"),
                         l2adv("l2t-sel", "l2t-sel", nodeSelectors=only("node3"))), \
            backends(lab, "sel", "node1"), service(lab, "sel", pool="l2t-sel") as (ip,):
        wait_announcer(lab, ip, "node3")
        assert lt.wait_curl(lab, ip) == "sel-0 on node1"   # ETP Cluster: node3 forwards to node1
        kubectl(kc, "apply", "-f", "-", input_=json.dumps(
            {**l2adv("l2t-sel", "l2t-sel", nodeSelectors=only("node2")), "metadata": {
                "name": "l2t-sel", "namespace": NAMESPACE}}))
        wait_announcer(lab, ip, "node2")
        # a planned move: node3 hands off (answers only probes sent to its own MAC) until the
        # VIP's traffic to it is quiet for 2 s, then stops
        wait_for("node3 to finish its handoff", lambda: not answers_directly(lab, "node3", ip), 15)
        assert lt.wait_curl(lab, ip)


def test_l2advertisement_interfaces_nonexistent_fails_eth0_announces(lab):
    kc = lab.kubeconfig()
    with metallb_objects(lab, pool("l2t-if", "192.0.2.226-192.0.2.227"),
                         l2adv("l2t-if", "l2t-if", interfaces=["nosuch0"])), \
            backends(lab, "ifc", "node1"), service(lab, "ifc", pool="l2t-if") as (ip,):
        wait_for("event announceFailed", lambda: service_events(lab, "ifc", "announceFailed"), 30)
        failed = service_events(lab, "ifc", "announceFailed")
        assert failed[0]["type"] == "Warning" and "nosuch0" in failed[0]["message"]
        elected = failed[0]["source"]["host"]
        assert lt.agent_log_events(lab, elected, "announceFailed", service="default/ifc")
        # nobody answers (the elected node has no such interface; the others are not elected)
        assert not lt.announcing_nodes(lab, ip, count=3)
        assert not service_events(lab, "ifc", "nodeAssigned")
        assert not l2_statuses(lab, "ifc")

        kubectl(kc, "apply", "-f", "-", input_=json.dumps(
            {**l2adv("l2t-if", "l2t-if", interfaces=["eth0"]), "metadata": {"name": "l2t-if",
                                                                            "namespace": NAMESPACE}}))
        assert wait_announcer(lab, ip) == elected
        assert lt.wait_curl(lab, ip) == "ifc-0 on node1"
        wait_for("ServiceL2Status on eth0 only", lambda: [s.get("status", {}).get("interfaces")
                                                          for s in l2_statuses(lab, "ifc")] == [[{"name": "eth0"}]], 30)


def test_exclude_from_external_lb_label_moves_the_vip(lab):
    kc = lab.kubeconfig()
    with backends(lab, "exc", "node1", "node2"), service(lab, "exc") as (ip,):
        first = wait_announcer(lab, ip)
        try:
            kubectl(kc, "label", "node", first, f"{EXCLUDE_LB}=")
            second = wait_announcer(lab, ip, set(NODES) - {first})
            wait_for(f"{first} to finish its handoff", lambda: not answers_directly(lab, first, ip), 15)
            assert lt.wait_curl(lab, ip)
            kubectl(kc, "label", "node", second, f"{EXCLUDE_LB}=")
            third = wait_announcer(lab, ip, set(NODES) - {first, second})
            assert lt.wait_curl(lab, ip)
            assert lt.agent_log_events(lab, third, "serviceAnnounced", service="default/exc", ip=ip)
        finally:
            for n in NODES:
                kubectl(kc, "label", "node", n, f"{EXCLUDE_LB}-", check=False)


# ---- shared IP, IPv6, dual stack -------------------------------------------------------------
def test_shared_ip_two_services_one_announcer(lab):
    ann = {"metallb.io/allow-shared-ip": "web-share", "metallb.io/loadBalancerIPs": "192.0.2.218"}
    with backends(lab, "sh", "node1", "node3"), \
            service(lab, "sh-a", selector={"app": "sh"}, annotations=ann, port=80) as (ip_a,), \
            service(lab, "sh-b", selector={"app": "sh"}, annotations=ann, port=81) as (ip_b,):
        assert ip_a == ip_b == "192.0.2.218"
        assert lt.wait_curl(lab, ip_a, port=80).startswith("sh-")
        assert lt.wait_curl(lab, ip_b, port=81).startswith("sh-")
        winner = wait_announcer(lab, ip_a)
        assert lt.announcing_nodes(lab, ip_a, count=3) == {winner}
        # both services are announced by the same node (the election keys on the IP)
        wait_for("ServiceL2Status for both services", lambda: len(l2_statuses(lab, "sh-a")) == 1
                 and len(l2_statuses(lab, "sh-b")) == 1, 30)
        assert {l2_statuses(lab, s)[0]["status"]["node"] for s in ("sh-a", "sh-b")} == {winner}


def test_ipv6_vip_ndp_answered_by_one_node_and_curl6(lab):
    with backends(lab, "v6", "node1", "node2"), \
            service(lab, "v6", families=["IPv6"], policy="SingleStack") as (ip,):
        assert ":" in ip
        assert lt.wait_curl(lab, ip).startswith("v6-")
        winner = wait_announcer(lab, ip)
        assert lt.arp_replies(lab, ip, count=3) and set(lt.arp_replies(lab, ip, count=3)) == {mac_of(lab, winner)}
        # the kernel's neighbour cache learned the same MAC from curl's own solicitation
        assert lt.neighbour_mac(lab, ip) == mac_of(lab, winner)
        r = lab.host("client").run(["curl", "-6", "-s", "-m", "2", f"http://[{ip}]/"], check=False)
        assert r.returncode == 0 and r.stdout.startswith("v6-")


@pytest.mark.parametrize("policy", ["RequireDualStack", "PreferDualStack"])
def test_dual_stack_service_both_families_from_one_node(lab, policy):
    name = "ds-" + policy[:3].lower()
    with backends(lab, name, "node2", "node3"), \
            service(lab, name, count=2, families=["IPv4", "IPv6"], policy=policy) as ips:
        v4 = next(i for i in ips if ":" not in i)
        v6 = next(i for i in ips if ":" in i)
        assert lt.wait_curl(lab, v4).startswith(name) and lt.wait_curl(lab, v6).startswith(name)
        # MetalLB elects on the first IP: one node answers ARP and NDP for the service
        assert wait_announcer(lab, v4) == wait_announcer(lab, v6)
        wait_for("ServiceL2Status", lambda: l2_statuses(lab, name), 30)
        st = l2_statuses(lab, name)
        assert st[0]["status"]["node"] == wait_announcer(lab, v4)


# ---- restarts, link cut, split-brain guard ---------------------------------------------------
def avoid_backend_on(lab: Lab, name: str, node: str, **kw) -> None:
    """Point the Service ``name`` at the backends that are not on ``node`` (so cutting ``node``
    tests the L2 failover, not the loss of a backend the lab has no kubelet to mark unready)."""
    lt.apply_service(lab, name, selector={"app": name, f"not-{node}": "y"}, **kw)

    def only_others():
        bodies = [lt.curl(lab, lt.service_ips(lab, name)[0]) for _ in range(6)]
        return all(b and not b.endswith(node) for b in bodies)
    wait_for(f"{name} to reach only backends off {node}", only_others, 30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_agent_restart_under_request_stream_loses_no_request(lab, sig):
    """SIGTERM (planned): the old agent widens the liveness window to 15 s and leaves the
    membership; the new agent adopts the pinned program and maps, so ARP is answered throughout.
    SIGKILL (crash): the node's XDP goes quiet 400 ms after the last heartbeat; the others' probes
    go unanswered, but the node's kernel refuses their TCP fallback probe (nothing listens on
    the gossip port), so they crash-hold it (``--crash-hold-ms``, 15 s; the next node answers ARP requests meanwhile as a stand-in,
    without gratuitous ARP) instead of electing
    another node: the VIP does not move away and back, the client keeps using the node its
    neighbour entry names (its kernel and the kube-proxy stand-in forward without the agent),
    and the restarted agent takes up where it was. Without the hold (``--crash-hold-ms 0``)
    another node announces the VIP meanwhile and a connection in flight when the client's entry
    switches is reset (2 of 512 in the benchmark before the hold), so that assertion fails."""
    name = "rs-" + sig.name[3:].lower()
    with backends(lab, name, "node1", "node2", "node3"), service(lab, name) as (ip,):
        lt.wait_curl(lab, ip)
        node = wait_announcer(lab, ip)
        before = len(lt.agent_log_events(lab, node, "serviceAnnounced", ip=ip, interface="eth0"))
        others_before = {n: len(lt.agent_log_events(lab, n, "serviceAnnounced", ip=ip, interface="eth0"))
                         for n in NODES if n != node}
        with lt.RequestStream(lab, ip, rate_hz=10, timeout=1.0) as stream:
            stream.wait_ok()
            t0 = time.monotonic()
            lab.restart_agent(node, sig)
            wait_for(f"{node}'s new agent to announce {ip}", lambda: len(lt.agent_log_events(
                lab, node, "serviceAnnounced", ip=ip, interface="eth0")) > before, 60)
            wait_announcer(lab, ip, node)
            t1 = time.monotonic()
            wait_for("2 s more of requests", lambda: time.monotonic() - t1 > 2, 10)
        results = stream.stop()
        during = [r for r in results if r["sent"] >= t0]
        assert len(during) >= 10 * (t1 - t0) * 0.8, "the stream did not keep its rate"
        failed = [r for r in results if not r["ok"]]
        took_over = [n for n, c in others_before.items() if len(lt.agent_log_events(
            lab, n, "serviceAnnounced", ip=ip, interface="eth0")) > c]
        if sig == signal.SIGKILL:
            assert not took_over, f"{took_over} announced {ip} while {node}'s agent was restarting"
            assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:3]}"
            held = [n for n in NODES if n != node
                    and lt.agent_log_events(lab, n, "memberCrashHeld", member=node)]
            assert held, f"no other agent logged memberCrashHeld for {node}"
        # A planned restart moves the VIP twice (to an interim owner, then back). A TCP connection in
        # flight at the instant the client's neighbour entry switches reaches a node with no
        # conntrack entry for it and is reset: seen in CI once for SIGTERM (1 of 69, ECONNRESET
        # 2 ms after the send) and in bench/l2_failover.py for SIGKILL before the crash hold (2 of
        # 512). One such reset
        # is allowed; any other loss (a timeout: nobody answering or forwarding) is not.
        assert len(failed) <= 1, f"{len(failed)} of {len(results)} requests failed: {failed[:3]}"
        assert all("ConnectionReset" in r.get("error", "") for r in failed), failed
        # the new agent adopted its predecessor's ServiceL2Status instead of adding a second one
        wait_for(f"one ServiceL2Status, naming {node}",
                 lambda: [st.get("status", {}).get("node") for st in l2_statuses(lab, name)] == [node], 30)


def test_link_cut_vip_moves_and_client_learns_new_mac_from_gratuitous_arp(lab):
    name = "cut"
    with backends(lab, name, "node1", "node2", "node3"), service(lab, name) as (ip,):
        lt.wait_curl(lab, ip)
        old = wait_announcer(lab, ip)
        avoid_backend_on(lab, name, old)
        assert lt.neighbour_mac(lab, ip) == mac_of(lab, old)   # curl resolved it to the owner
        announced = lambda n: len(lt.agent_log_events(lab, n, "serviceAnnounced", ip=ip, interface="eth0"))  # noqa: E731
        before = {n: announced(n) for n in NODES if n != old}   # (IPs are reused across tests)
        with ArpCapture(lab, "client") as cap:
            lab.set_link(old, up=False)
            try:
                new = {}

                def someone_took_over():
                    for n, count in before.items():
                        if announced(n) > count:
                            new["node"] = n
                    return bool(new)
                wait_for("another node to announce", someone_took_over, 10)
                new_mac = mac_of(lab, new["node"])
                # no traffic from the client meanwhile: only a gratuitous ARP can change its entry
                wait_for("the client's neighbour entry to name the new node",
                         lambda: lt.neighbour_mac(lab, ip) == new_mac, 10)
                samples = lt.node_metrics(lab, new["node"])
                assert (lt.metric(samples, "metallb_layer2_gratuitous_sent", ip=ip) or 0) >= 2
                def garp():
                    return [line for line in list(cap.lines) if f"{new_mac} > ff:ff:ff:ff:ff:ff" in line and
                            (f"who-has {ip} tell {ip}" in line or f"Reply {ip} is-at {new_mac}" in line)]
                # tcpdump prints a frame a moment after the kernel took it (and its reader thread
                # after that): seen once under load, the entry had changed but no line was read yet
                try:
                    wait_for("the gratuitous ARP in the capture", lambda: bool(garp()), 5)
                except RigError:
                    raise AssertionError(f"no gratuitous ARP from {new_mac} captured:\n" + "\n".join(cap.lines[-20:]))
                asked = [line for line in cap.lines if f"who-has {ip} tell 192.0.2.100" in line]
                assert not asked, f"the client asked for {ip} itself: {asked}"
                assert lt.wait_curl(lab, ip, timeout=10)
            finally:
                lab.set_link(old, up=True)
        wait_announcer(lab, ip, old)     # rejoined: the first node in MetalLB's order again


class ArpCapture:
    """tcpdump of the ARP frames ``host`` sees on eth0 (with MACs), collected line by line."""

    def __init__(self, lab: Lab, host: str):
        self.proc = lab.host(host).popen(["tcpdump", "-i", "eth0", "-n", "-e", "-l", "arp"],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def __enter__(self) -> "ArpCapture":
        wait_for("tcpdump to listen", lambda: any("listening on" in x for x in self.lines), 10)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_killed_agent_node_stops_answering_after_liveness_window(lab):
    """The split-brain guard: SIGKILL the owner's agent (XDP stays attached, the node's kernel
    keeps running). Its XDP program must stop answering ARP once the heartbeat is older than
    --liveness-max-age-ms (400 ms), and another node must take the VIP over."""
    name = "kill"
    with backends(lab, name, "node1", "node2", "node3"), service(lab, name) as (ip,):
        lt.wait_curl(lab, ip)
        owner = wait_announcer(lab, ip)
        assert answers_directly(lab, owner, ip)
        try:
            lab.stop_agent(owner, signal.SIGKILL)
            t_kill = time.monotonic()
            wait_for(f"{owner} to stop answering", lambda: not answers_directly(lab, owner, ip), 5)
            silent_after = time.monotonic() - t_kill
            other = wait_announcer(lab, ip, set(NODES) - {owner}, timeout=10)
            # its kernel refused the peers' TCP probes: they crash-hold it, and the next node
            # answers as a stand-in (requests only, no gratuitous ARP) until the hold ends
            assert lt.agent_log_events(lab, other, "serviceStandIn", ip=ip), f"{other} is no stand-in"
            # and it stays quiet: its answers are not coming back while the agent is gone
            for _ in range(3):
                assert not answers_directly(lab, owner, ip)
            assert lt.announcing_nodes(lab, ip, count=3) == {other}
            assert lt.wait_curl(lab, ip)
            assert silent_after < 2.5, silent_after
            # the dead node's ServiceL2Status is removed by the node that took over
            wait_for(f"one ServiceL2Status, naming {other}",
                     lambda: [st.get("status", {}).get("node") for st in l2_statuses(lab, name)] == [other], 30)
        finally:
            lab.start_agent(owner)
        wait_announcer(lab, ip, owner, timeout=60)
        # back on the restarted agent's node: one object again, no leftover, no duplicate
        wait_for(f"one ServiceL2Status, naming {owner}",
                 lambda: [st.get("status", {}).get("node") for st in l2_statuses(lab, name)] == [owner], 30)


def test_vip_deleted_while_the_agent_was_down_is_not_answered_after_restart(lab):
    """The XDP map is pinned and adopted by the next agent. A VIP deleted (or moved) while the
    agent was down must be withdrawn by the new agent, not answered for ever."""
    name = "stale"
    with backends(lab, name, "node1", "node2"), service(lab, name) as (ip,):
        lt.wait_curl(lab, ip)
        owner = wait_announcer(lab, ip)
        try:
            lab.stop_agent(owner, signal.SIGTERM)     # planned stop: XDP keeps answering (grace)
            kubectl(lab.kubeconfig(), "delete", "svc", name)
            assert answers_directly(lab, owner, ip)
        finally:
            lab.start_agent(owner)
        wait_for(f"{owner}'s new agent to withdraw {ip}", lambda: lt.agent_log_events(
            lab, owner, "serviceWithdrawn", ip=ip, interface="eth0", reason="stale"), 60)
        wait_for(f"{owner} to stop answering for {ip}", lambda: not answers_directly(lab, owner, ip), 10)
        assert not lt.announcing_nodes(lab, ip, count=2)


# ---- metrics ---------------------------------------------------------------------------------
def test_metrics_move_on_the_announcing_node(lab):
    name = "met"
    with backends(lab, name, "node1", "node2"), service(lab, name) as (ip,):
        lt.wait_curl(lab, ip)
        owner = wait_announcer(lab, ip)
        key = dict(service=f"default/{name}", ip=ip, node=owner, protocol="layer2")
        wait_for("metallb_speaker_announced", lambda: lt.metric(lt.node_metrics(lab, owner),
                                                                "metallb_speaker_announced", **key) == 1, 30)
        for n in set(NODES) - {owner}:
            m = lt.node_metrics(lab, n)
            assert m, f"no metrics from {n}"
            assert lt.metric(m, "metallb_speaker_announced", ip=ip) is None
            assert lt.metric(m, "metallb_layer2_requests_received", ip=ip) is None
        m0 = lt.node_metrics(lab, owner)
        assert lt.metric(m0, "metallb_layer2_gratuitous_sent", ip=ip) >= 2
        assert len(lt.arp_replies(lab, ip, count=3)) == 3
        for _ in range(5):
            assert lt.curl(lab, ip)
        m1 = lt.node_metrics(lab, owner)
        delta = lambda metric, **kw: lt.metric(m1, metric, **kw) - lt.metric(m0, metric, **kw)  # noqa: E731
        assert delta("metallb_layer2_requests_received", ip=ip) >= 3
        assert delta("metallb_layer2_responses_sent", ip=ip) >= 3
        assert delta("metalxdp_vip_packets_total", ip=ip, interface="eth0") >= 5 * 3   # >= SYN, ACK, FIN each
        assert delta("metalxdp_vip_bytes_total", ip=ip, interface="eth0") >= 5 * 3 * 40
    wait_for("metallb_speaker_announced removed with the Service", lambda: lt.metric(
        lt.node_metrics(lab, owner), "metallb_speaker_announced", ip=ip) is None, 30)


# ---- traffic-aware handoff ---------------------------------------------------------------------
def test_planned_move_hands_off_while_stale_clients_still_send(lab):
    """A VIP moves away from a live node (here: the exclude label). A client whose cache ignores
    the new owner's GARP (pinned neighbour entry) keeps sending to the old node: the old node
    keeps answering that client's unicast probes and forwarding its traffic while its XDP
    counters see it, broadcasts go to the new owner only, and once the client stops the old
    node withdraws (quiet 2 s)."""
    kc = lab.kubeconfig()
    client = lab.host("client")
    with backends(lab, "ho", "node1", "node2", "node3"), service(lab, "ho") as (ip,):
        lt.wait_curl(lab, ip)
        old = wait_announcer(lab, ip)
        # the IP is reused across this module's tests: count only this test's events
        events = lambda ev, **kw: len(lt.agent_log_events(lab, old, ev, ip=ip, interface="eth0", **kw))  # noqa: E731
        started0, done0 = events("handoffStarted"), events("handoffDone")
        client.run(["ip", "neigh", "replace", ip, "lladdr", mac_of(lab, old), "dev", "eth0", "nud", "permanent"])
        try:
            with lt.RequestStream(lab, ip, rate_hz=10) as stream:
                stream.wait_ok()
                kubectl(kc, "label", "node", old, f"{EXCLUDE_LB}=")
                new = wait_announcer(lab, ip, set(NODES) - {old})
                wait_for("handoffStarted on the old owner", lambda: events("handoffStarted") > started0, 15)
                # while the stale client's traffic flows, the old node answers its unicast probes
                for _ in range(3):
                    assert answers_directly(lab, old, ip)
                    time.sleep(0.5)
                assert lt.announcing_nodes(lab, ip, count=3) == {new}   # broadcasts: new owner only
                stream.wait_ok(count=10)                                 # still served through the old node
            assert events("handoffDone") == done0, "the handoff ended while the stale client was sending"
            # traffic stopped: the old node withdraws after the quiet period
            wait_for("handoffDone on the old owner", lambda: events("handoffDone") > done0, 15)
            assert not answers_directly(lab, old, ip)
        finally:
            client.run(["ip", "neigh", "del", ip, "dev", "eth0"], check=False)
            kubectl(kc, "label", "node", old, f"{EXCLUDE_LB}-", check=False)


# ---- membership partition (issue 19) -------------------------------------------------------------
GOSSIP_UDP_DROP = """table inet mxpart {
 chain in { type filter hook input priority 0; udp dport 7946 drop; }
 chain out { type filter hook output priority 0; udp dport 7946 drop; }
}
"""


def test_gossip_udp_dropped_at_one_node_still_one_announcer_per_vip(lab):
    """The gossip port's UDP is dropped at node3 (both ways), the data path and TCP intact. Past
    the liveness window every VIP is still answered by exactly one node, the agents still see
    each other (the TCP fallback probe), and when healed nothing moves. Without the fallback
    (MembershipConfig.stream_fallback=False) node3 elects alone and every VIP gets two
    announcers: this test fails then (checked by hand)."""
    node3 = lab.host("node3")
    with contextlib.ExitStack() as stack:
        stack.enter_context(backends(lab, "part", *NODES))
        ips = [stack.enter_context(service(lab, f"part{i}", selector={"app": "part"}))[0]
               for i in range(3)]
        owners = {ip: wait_announcer(lab, ip) for ip in ips}
        left_before = {n: len(lt.agent_log_events(lab, n, "memberLeft")) for n in NODES}
        node3.run(["nft", "-f", "-"], input=GOSSIP_UDP_DROP)
        try:
            time.sleep(5.0)   # > 10x the membership's dead-node time, > the 400 ms liveness window
            for ip in ips:
                assert lt.announcing_nodes(lab, ip, count=3) == {owners[ip]}, ip
                assert lt.curl(lab, ip), ip
            assert {n: len(lt.agent_log_events(lab, n, "memberLeft")) for n in NODES} == left_before
        finally:
            node3.run(["nft", "delete", "table", "inet", "mxpart"], check=False)
        time.sleep(2.0)
        for ip in ips:
            assert lt.announcing_nodes(lab, ip, count=3) == {owners[ip]}, ip


# ---- probes ------------------------------------------------------------------------------------
def test_probes_on_the_monitoring_port(lab):
    """What the DaemonSet's probes ask each running agent (metalxdp.health): ready and alive,
    and an unknown path is 404 (the metrics server used to answer every path)."""
    for node in NODES:
        def code(path: str) -> str:
            return lab.host(node).run(["curl", "-s", "-w", " %{http_code}", "-m", "5",
                                       f"http://127.0.0.1:7472{path}"], check=False, timeout=10).stdout
        assert code("/readyz").endswith(" 200"), (node, code("/readyz"))
        assert code("/healthz").endswith(" 200"), (node, code("/healthz"))
        assert code("/nosuchpath").endswith(" 404"), node
