"""`metalxdp lab up/status/down` through the real CLI, as a user runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalxdp.rig.netns import list_namespaces

pytestmark = pytest.mark.integration
METALXDP = [sys.executable, "-m", "metalxdp.cli"]


def cli(env, *args, check=True, timeout=180):
    r = subprocess.run([*METALXDP, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert r.returncode == 0, f"metalxdp {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture
def lab_env(tmp_path):
    env = dict(os.environ, METALXDP_LAB_ROOT=str(tmp_path / "labs"))
    yield env
    cli(env, "lab", "down", "--name", "t", check=False)


def _pids_alive(pids):
    alive = []
    for p in pids:
        try:
            os.kill(p, 0)
            alive.append(p)
        except ProcessLookupError:
            pass
    return alive


def down_leaves_nothing(env, lab_id: str, pids: list[int]) -> None:
    """`lab down --name t`, then: no namespace of the lab's id left, its processes gone within
    10 s, its state directory removed."""
    cli(env, "lab", "down", "--name", "t")
    assert not [n for n in list_namespaces() if n.startswith(lab_id)]
    deadline = time.monotonic() + 10
    while _pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pids_alive(pids)
    assert not (Path(env["METALXDP_LAB_ROOT"]) / "t").exists()

def test_lab_up_status_nodes_ping_and_down_leaves_nothing(lab_env, tmp_path):
    cli(lab_env, "lab", "up", "--name", "t")
    st = json.loads(cli(lab_env, "lab", "status", "--name", "t", "--json").stdout)
    assert st["up"] is True
    assert set(st["hosts"]) == {"node1", "node2", "node3", "router", "client"}
    for h in st["hosts"].values():
        assert h["netns"] in list_namespaces() and h["ipv4"] and h["ipv6"]

    out = subprocess.run(["kubectl", f"--kubeconfig={st['kubeconfig']}", "get", "nodes", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    nodes = {n["metadata"]["name"]: n for n in json.loads(out)["items"]}
    assert set(nodes) == {"node1", "node2", "node3"}
    for name, n in nodes.items():
        internal = [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
        assert st["hosts"][name]["ipv4"][0] in internal and st["hosts"][name]["ipv6"][0] in internal
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready in ("True", "False")

    client_ns = st["hosts"]["client"]["netns"]
    for name in nodes:
        for ip in (st["hosts"][name]["ipv4"][0], st["hosts"][name]["ipv6"][0]):
            r = subprocess.run(["ip", "netns", "exec", client_ns, "ping", "-c1", "-W3", ip],
                               capture_output=True)
            assert r.returncode == 0, f"client cannot ping {name} at {ip}"

    # a node namespace reaches the API server on loopback, as a hostNetwork pod would
    r = subprocess.run(["ip", "netns", "exec", st["hosts"]["node1"]["netns"], "kubectl",
                        f"--kubeconfig={st['kubeconfig']}", "get", "node", "node1", "-o", "name"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "node/node1", r.stderr

    # the controller runs, leads, and found the lab's configuration valid
    from metalxdp.rig.procs import wait_for
    ctl = {}

    def controller_ok():
        nonlocal ctl
        ctl = json.loads(cli(lab_env, "lab", "status", "--name", "t", "--json").stdout)["controller"]
        return ctl.get("config") == "Valid" and bool(ctl.get("leader"))
    wait_for(f"controller state in lab status (last: {ctl})", controller_ok, 60)
    assert "leader" in cli(lab_env, "lab", "status", "--name", "t").stdout

    pids = [p["pid"] for p in st["processes"].values()]
    assert len(_pids_alive(pids)) == len(pids)
    down_leaves_nothing(lab_env, st["id"], pids)
    st2 = json.loads(cli(lab_env, "lab", "status", "--name", "t", "--json").stdout)
    assert st2["up"] is False


def test_lab_down_after_lab_up_was_killed_midway(lab_env):
    """`lab up` SIGKILLed half way (control plane started, namespaces being built): `down`
    still removes everything, because state is written after every step."""
    root = Path(lab_env["METALXDP_LAB_ROOT"]) / "t"
    p = subprocess.Popen([*METALXDP, "lab", "up", "--name", "t"], env=lab_env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # kill as soon as the network step has begun
    deadline = time.monotonic() + 120
    line = ""
    while "[lab 2/" not in line and time.monotonic() < deadline:
        line = p.stdout.readline()
        assert line or p.poll() is None, "lab up ended before the network step"
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    state = json.loads((root / "state.json").read_text())
    pids = list(state["pids"].values())
    assert _pids_alive(pids), "control plane should still be running after the crash"
    down_leaves_nothing(lab_env, state["id"], pids)
