"""A BGPSpeaker with ExaBGP on a thread of this process, driven by JSON lines on stdin.

    ip netns exec NS python tests/integration/inproc_speaker.py NODE IPV4 IPV6 WORKDIR

Used by test_bgp_frr.py: the agent runs ExaBGP in its own process (one per node namespace), so
the test needs a process of that shape in a node namespace, not ExaBGP threads in pytest's.
Each command line gets one JSON answer line:
    {"op": "apply", "resources": [CR, ...], "services": [{"key": k, "ips": [...]}, ...]}
    {"op": "state"}      -> sessions, health, the process's children and thread names
    {"op": "crash"}      -> ExaBGP's reactor raises on its next loop turn (as a bug would)
    {"op": "close", "restarting": false}
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry  # noqa: E402

from agent.bgp.advertise import ServiceView, active_peers, plan_for_node  # noqa: E402
from agent.bgp.config_render import NodeAddresses  # noqa: E402
from agent.bgp.exabgp import BGPSpeaker  # noqa: E402
from agent.nodeview import NodeView  # noqa: E402
from metalxdp.config.parse import parse  # noqa: E402


def children(pid: int) -> list[str]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for c in (task / "children").read_text().split():
            try:
                out.append(Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass
    return out


def main() -> None:
    name, v4, v6, workdir = sys.argv[1:5]
    sp = BGPSpeaker(NodeAddresses(name, ipaddress.ip_address(v4), ipaddress.ip_address(v6)),
                    Path(workdir), registry=CollectorRegistry(), in_process=True)
    view = NodeView(name, {"kubernetes.io/hostname": name})
    for line in sys.stdin:
        cmd = json.loads(line)
        op, answer = cmd["op"], {"ok": True}
        if op == "apply":
            config = parse(cmd["resources"])
            services = [ServiceView(s["key"], tuple(ipaddress.ip_address(a) for a in s["ips"]),
                                    has_any_ready_endpoint=True) for s in cmd["services"]]
            sp.set_peers(active_peers(config, view).values())
            plan = plan_for_node(config, view, services)
            sp.set(plan.advertisements, plan.prefix_owners)
        elif op == "state":
            proc = sp._proc
            answer = {"sessions": sp.session_states(), "health": sp.health(),
                      "inProcess": type(proc).__name__ == "InProcessExaBGP",
                      "children": children(os.getpid()),
                      "threads": sorted(t.name for t in threading.enumerate())}
        elif op == "crash":
            reactor = sp._proc._reactor

            def boom():
                raise RuntimeError("injected by the test")
            reactor.processes.received = boom
        elif op == "close":
            sp.close(restarting=cmd.get("restarting", False))
            print(json.dumps(answer), flush=True)
            return
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
