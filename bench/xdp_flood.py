"""ARP request flood between two network namespaces, answered by XDP (native and generic), by
the userspace AF_PACKET responder (MetalLB's way) and by the kernel (VIP as a local address),
in the same run, on the same veth pair.

Topology: netns ``client`` and netns ``node`` joined by one veth pair (no bridge in between).
Both ends run their receive path as *threaded NAPI*: a kernel thread per interface instead of
softirq on whichever CPU sent the frame. That is what separates the two sides on a 2-CPU
machine:

- CPU 0: the sender (``trafgen``, one process, pinned) and the client veth's NAPI thread, which
  receives the replies;
- CPU 1: the node veth's NAPI thread and, in the userspace phase, the responder process.

The node's NAPI thread does everything the responder side does per request: take the frame
off the veth ring, run XDP (native: on the frame; generic: on the skb) or the kernel's
``arp_rcv`` -> ``arp_process`` -> reply skb -> ``dev_queue_xmit``, or deliver it to the packet
socket; the reply goes into the client veth's ring from that same thread. The userspace
responder reads, builds and sends from its own process on CPU 1.

CPU per reply on the responding side = (NAPI thread runtime + responder process runtime) /
replies, runtimes from ``/proc/<pid>/task/*/schedstat`` (the scheduler's ns-precise on-CPU
time, not tick samples). The sender's cost and the reply's reception are on CPU 0 and never
enter it. The node's NAPI exists in every phase (GRO on, so veth uses NAPI without an XDP
program); the client's veth carries an XDP_PASS program (native XDP_TX into a veth needs
NAPI on the peer, and GRO alone does not enable that path: see docs/xdp.md).

Answers are counted where they arrive: the client veth's rx_packets. Requests lost before the
node (its ring full) show as the difference between sent and the node's rx_packets.

The sender: trafgen's per-frame ``sendto`` path (``-b``/``-t``), which blocks when the socket's
send buffer is full, so a responder slower than the sender slows the sender down instead of
losing requests on the client (its TX_RING path fails with EAGAIN on veth once the node's
ring is full). Loads: the sender's highest rate, an evenly spaced ~21 kpps, and 100 kpps in
bursts (see LOADS). Each (phase, load) runs REPS times; medians and ranges are
reported. Writes bench/results/xdp_flood.json.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import packets as P  # noqa: E402
from metalxdp.rig.procs import Proc, start, wait_for  # noqa: E402

PY = sys.executable
VIP = "192.0.2.200"
NODE_IP, CLIENT_IP = "192.0.2.11", "192.0.2.100"
REPS = int(os.environ.get("MX_FLOOD_REPS", "3"))
# Two senders. trafgen (socket path): its rate mode (-b) paces by the second in line-rate bursts
# (measured: median gap 1 µs, pauses of ms), its gap mode (-t) sleeps between frames (smooth, but
# ~40 µs of wake-up cost per frame here, so "-t 10us" gives ~21 kpps; SCHED_FIFO for zero timer
# slack). Its frames are socket buffers, which veth must copy into an XDP buffer before a native
# XDP program sees them: a cost no NIC has. The XDP generator (bpf/xdp_tx.c, live-frames
# BPF_PROG_TEST_RUN, like xdp-trafficgen) sends XDP frames, which reach the node as a NIC's
# frames would, at ~1 Mpps, with no back-pressure: what the node's 256-slot veth ring cannot
# hold between two NAPI polls is dropped before any responder sees it. It cannot be paced: every
# live-frames syscall costs ~18 ms of setup here, so only "as fast as it goes" is offered.
LOADS = {
    "max": {"count": 1_000_000, "sender": ["-b", "3000000pps"], "what": "trafgen, as fast as it goes"},
    "smooth-20k": {"count": 60_000, "sender": ["-t", "10us"], "rt": True, "what": "trafgen, evenly spaced ~21 kpps"},
    "bursty-100k": {"count": 300_000, "sender": ["-b", "100000pps"], "what": "trafgen, 100 kpps in bursts"},
    "xdpgen-max": {"count": 2_000_000, "xdpgen_pps": 0, "what": "XDP generator, as fast as it goes"},
}
GEN_BATCH = 64
PHASES = os.environ.get("MX_FLOOD_PHASES", "xdp-native,xdp-generic,userspace,kernel").split(",")
SEND_TIMEOUT_S = 120
SENDER_CPU, RESPONDER_CPU = 0, 1
TAG = f"mxf{os.getpid() % 10000}"
NS_NODE, NS_CLIENT = f"{TAG}-node", f"{TAG}-client"
IF_NODE, IF_CLIENT = f"{TAG}n0", f"{TAG}c0"   # <= 15 chars, unique: NAPI threads are named after them
PIN_DIR = f"/sys/fs/bpf/metalxdp/{TAG}"
TARGETS = {"answered_share": 1.0, "xdp_vs_userspace_replies": 10.0, "xdp_vs_kernel_cpu": 0.5}


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 60) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def link_stats(ns: str, ifname: str) -> dict:
    s = json.loads(sh("ip", "-s", "-j", "link", "show", ifname, ns=ns))[0]["stats64"]
    return {"rx": s["rx"]["packets"], "rx_dropped": s["rx"]["dropped"], "tx": s["tx"]["packets"],
            "tx_dropped": s["tx"]["dropped"]}


def napi_thread(ifname: str) -> int:
    """pid of the threaded-NAPI kernel thread of ifname (named napi/<ifname>-<napi id>)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(f"napi/{ifname}-"):
                return int(d.name)
    raise RuntimeError(f"no NAPI thread for {ifname}: threaded NAPI did not start")


def runtime_ns(pid: int) -> int:
    """On-CPU time of every thread of pid so far (scheduler accounting, ns)."""
    total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


def cpu_busy_jiffies(cpu: int) -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v[:8]) - v[3] - v[4]
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def setup() -> dict:
    sh("ip", "netns", "add", NS_NODE)
    sh("ip", "netns", "add", NS_CLIENT)
    sh("ip", "link", "add", IF_CLIENT, "netns", NS_CLIENT, "type", "veth", "peer", "name", IF_NODE,
       "netns", NS_NODE)
    for ns, ifname, ip in ((NS_NODE, IF_NODE, NODE_IP), (NS_CLIENT, IF_CLIENT, CLIENT_IP)):
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
        sh("ip", "addr", "add", f"{ip}/24", "dev", ifname, ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)
    # NAPI on the node also without an XDP program: GRO on, and veth only hands a frame to the
    # peer's NAPI when the sending device has no TSO (otherwise: netif_rx on the sender's CPU)
    sh("ethtool", "-K", IF_NODE, "gro", "on", ns=NS_NODE)
    sh("ethtool", "-K", IF_CLIENT, "tso", "off", ns=NS_CLIENT)
    sh(PY, "-m", "agent.xdp_cli", "--iface", IF_CLIENT, "--pass-only", "--xdp-mode", "native", ns=NS_CLIENT)
    client_mac = json.loads(sh("ip", "-j", "link", "show", IF_CLIENT, ns=NS_CLIENT))[0]["address"]
    return {"client_mac": client_mac}


def place_napi_threads() -> dict:
    """Threaded NAPI on both veths, node's thread on the responder CPU, client's on the sender
    CPU. Called after every responder change: attaching or detaching XDP re-creates a veth's
    NAPI instance, and with it the thread."""
    for ns, ifname in ((NS_NODE, IF_NODE), (NS_CLIENT, IF_CLIENT)):
        sh("sh", "-c", f"echo 1 > /sys/class/net/{ifname}/threaded", ns=ns)
    threads = {"node": napi_thread(IF_NODE), "client": napi_thread(IF_CLIENT)}
    sh("taskset", "-pc", str(RESPONDER_CPU), str(threads["node"]))
    sh("taskset", "-pc", str(SENDER_CPU), str(threads["client"]))
    # the client drains replies before trafgen sends more: otherwise its veth ring overflows on
    # the shared CPU and replies the node did send are lost on the way (counted apart anyway)
    sh("chrt", "-f", "-p", "50", str(threads["client"]))
    return threads


def teardown() -> None:
    for ns in (NS_NODE, NS_CLIENT):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_responder(phase: str, tmp: Path) -> Proc | None:
    """The responder of ``phase`` in the node's netns, pinned to the responder CPU, logging to a
    file (nobody drains a pipe during the flood; a full one would block the responder)."""
    pin = ["taskset", "-c", str(RESPONDER_CPU)]
    if phase.startswith("xdp-"):
        argv, ready = [*pin, PY, "-m", "agent.xdp_cli", "--iface", IF_NODE, "--vip", VIP, "--bpffs-dir", PIN_DIR,
                       "--xdp-mode", phase[4:], "--detach-on-exit", "--no-garp", "--liveness-max-age-ms",
                       "3000"], "xdpReady"
    elif phase == "userspace":
        argv, ready = [*pin, PY, "-m", "agent.userspace_responder", "--iface", IF_NODE, "--vip", VIP,
                       "--duration", "900"], "responderReady"
    else:
        sh("ip", "addr", "add", f"{VIP}/32", "dev", IF_NODE, ns=NS_NODE)
        return None
    p = start(phase, argv, tmp, netns=NS_NODE, cwd=REPO)
    wait_for(f"{phase} responder ready", lambda: ready in p.log_path.read_text(errors="replace"), 60, proc=p)
    return p


def stop_responder(phase: str, p: Proc | None) -> None:
    if p is not None:
        p.stop(timeout=20)
    if phase == "kernel":
        sh("ip", "addr", "del", f"{VIP}/32", "dev", IF_NODE, ns=NS_NODE, check=False)


def run_once(load: dict, cfg: Path, napi_node: int, responder: Proc | None) -> dict:
    time.sleep(0.3)
    # the responder's own tasks: under `ip netns exec` + taskset the Python process is the child
    resp_pid = None
    if responder is not None:
        kids = Path(f"/proc/{responder.pid}/task/{responder.pid}/children")
        resp_pid = int(kids.read_text().split()[0]) if kids.exists() and kids.read_text().split() else responder.pid
    c0, n0 = link_stats(NS_CLIENT, IF_CLIENT), link_stats(NS_NODE, IF_NODE)
    t_napi0, t_resp0 = runtime_ns(napi_node), runtime_ns(resp_pid) if resp_pid else 0
    busy0 = cpu_busy_jiffies(RESPONDER_CPU)
    if "xdpgen_pps" in load:
        cmd = ["taskset", "-c", str(SENDER_CPU), PY, str(Path(__file__).resolve()), "--xdp-generator", IF_CLIENT,
               str(load["count"]), str(load["xdpgen_pps"]), cfg.with_suffix(".hex").read_text().strip()]
    else:
        cmd = ["taskset", "-c", str(SENDER_CPU), *(["chrt", "-f", "10"] if load.get("rt") else []), "trafgen", "-o",
               IF_CLIENT, "-i", str(cfg), "-n", str(load["count"]), "-P", "1", "--no-sock-mem", "--notouch-irq",
               "--no-cpu-stats", *load["sender"]]
    t0 = time.monotonic()
    out = sh(*cmd, ns=NS_CLIENT, timeout=SEND_TIMEOUT_S)
    send_s = time.monotonic() - t0
    if "xdpgen_pps" in load:   # its own clock: not the BCC compile before the first frame
        send_s = json.loads(out.strip().splitlines()[-1])["elapsed_s"]
    time.sleep(0.5)  # replies still in the rings
    c1, n1 = link_stats(NS_CLIENT, IF_CLIENT), link_stats(NS_NODE, IF_NODE)
    t_napi1, t_resp1 = runtime_ns(napi_node), runtime_ns(resp_pid) if resp_pid else 0
    busy1 = cpu_busy_jiffies(RESPONDER_CPU)
    replies = c1["rx"] - c0["rx"]
    napi_ns, resp_ns = t_napi1 - t_napi0, t_resp1 - t_resp0
    return {"sent": load["count"], "send_s": round(send_s, 4), "sent_pps": round(load["count"] / send_s),
            "reached_node": n1["rx"] - n0["rx"], "lost_before_node": load["count"] - (n1["rx"] - n0["rx"]),
            "replies_sent_by_node": n1["tx"] - n0["tx"], "replies_lost_on_the_way": n1["tx_dropped"] - n0["tx_dropped"],
            "replies": replies, "replies_per_s": round(replies / send_s),
            "napi_thread_cpu_s": napi_ns / 1e9, "responder_process_cpu_s": resp_ns / 1e9,
            "responder_cpu_busy_s_ticks": (busy1 - busy0) / os.sysconf("SC_CLK_TCK"),
            "cpu_ns_per_reply": round((napi_ns + resp_ns) / replies) if replies else None}


def summarize(res: dict) -> None:
    s: dict = {}
    for load_name in LOADS:
        s[load_name] = {}
        for phase in PHASES:
            runs = res["phases"][phase][load_name]
            share = [r["replies"] / r["sent"] for r in runs]
            cpu = [r["cpu_ns_per_reply"] for r in runs if r["cpu_ns_per_reply"] is not None]
            s[load_name][phase] = {
                "answered_share_median": statistics.median(share), "answered_share_min": min(share),
                "answered_of_reached_median": statistics.median(r["replies_sent_by_node"] / r["reached_node"]
                                                                for r in runs if r["reached_node"]),
                "reached_node_share_median": statistics.median(r["reached_node"] / r["sent"] for r in runs),
                "replies_per_s_median": statistics.median(r["replies_per_s"] for r in runs),
                "replies_per_s_range": [min(r["replies_per_s"] for r in runs), max(r["replies_per_s"] for r in runs)],
                "sent_pps_median": statistics.median(r["sent_pps"] for r in runs),
                "cpu_ns_per_reply_median": statistics.median(cpu) if cpu else None,
                "cpu_ns_per_reply_range": [min(cpu), max(cpu)] if cpu else None,
            }
        x, u, k = (s[load_name][p] for p in ("xdp-native", "userspace", "kernel"))
        s[load_name]["xdp_native_vs_userspace_replies_per_s"] = (
            x["replies_per_s_median"] / u["replies_per_s_median"] if u["replies_per_s_median"] else None)
        s[load_name]["xdp_native_vs_kernel_replies_per_s"] = (
            x["replies_per_s_median"] / k["replies_per_s_median"] if k["replies_per_s_median"] else None)
        for p in ("xdp-native", "xdp-generic"):
            if s[load_name][p]["cpu_ns_per_reply_median"] and k["cpu_ns_per_reply_median"]:
                s[load_name][f"{p}_vs_kernel_cpu_per_reply"] = (s[load_name][p]["cpu_ns_per_reply_median"]
                                                                / k["cpu_ns_per_reply_median"])
    m, g = s["max"], s["xdpgen-max"]
    cpu = {ln: s[ln].get("xdp-native_vs_kernel_cpu_per_reply") for ln in LOADS}
    res["targets"] = {
        "answered_share_at_max": {
            "target": TARGETS["answered_share"], "measured": m["xdp-native"]["answered_share_min"],
            "met": m["xdp-native"]["answered_share_min"] >= TARGETS["answered_share"],
            "note": "trafgen, the sender's highest rate; min over reps"},
        "xdp_vs_userspace_replies_per_s_at_max": {
            "target": TARGETS["xdp_vs_userspace_replies"],
            "measured": {"max": m["xdp_native_vs_userspace_replies_per_s"],
                         "xdpgen-max": g["xdp_native_vs_userspace_replies_per_s"]},
            "met": min(m["xdp_native_vs_userspace_replies_per_s"] or 0,
                       g["xdp_native_vs_userspace_replies_per_s"] or 0) >= TARGETS["xdp_vs_userspace_replies"]},
        "xdp_vs_kernel_cpu_per_reply": {
            "target": TARGETS["xdp_vs_kernel_cpu"], "measured_by_load": cpu,
            "met_with_xdp_frames": all((cpu[ln] or 9) <= TARGETS["xdp_vs_kernel_cpu"] for ln in LOADS
                                       if "xdpgen_pps" in LOADS[ln]),
            "met_with_socket_buffers": all((cpu[ln] or 9) <= TARGETS["xdp_vs_kernel_cpu"] for ln in LOADS
                                           if "xdpgen_pps" not in LOADS[ln])},
    }
    res["targets"]["xdp_vs_kernel_cpu_per_reply"]["met"] = res["targets"]["xdp_vs_kernel_cpu_per_reply"][
        "met_with_xdp_frames"]
    res["summary"] = s


def main() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mx-flood-"))
    res: dict = {"kernel": platform.release(), "cpus": os.cpu_count(), "reps": REPS, "loads": LOADS,
                 "sender_cpu": SENDER_CPU, "responder_cpu": RESPONDER_CPU, "phases": {}}
    teardown()
    try:
        env = setup()
        res["napi_threads"] = {}
        request = P.arp_request(P.mac_bytes(env["client_mac"]), CLIENT_IP, VIP)
        cfg = tmp / "arp.cfg"
        cfg.write_text("{ " + ", ".join(f"0x{b:02x}" for b in request) + " }\n")
        cfg.with_suffix(".hex").write_text(request.hex())
        for phase in PHASES:
            res["phases"][phase] = {ln: [] for ln in LOADS}
            responder = start_responder(phase, tmp)
            threads = res["napi_threads"][phase] = place_napi_threads()
            try:
                for load_name, load in LOADS.items():
                    for _ in range(REPS):
                        r = run_once(load, cfg, threads["node"], responder)
                        res["phases"][phase][load_name].append(r)
                    runs = res["phases"][phase][load_name]
                    cpu = [r["cpu_ns_per_reply"] for r in runs if r["cpu_ns_per_reply"]]
                    print(f"{phase:12s} {load_name:8s} sent {statistics.median(r['sent_pps'] for r in runs):>9.0f} pps, "
                          f"answered {100 * statistics.median(r['replies'] / r['sent'] for r in runs):6.2f}%, "
                          f"{statistics.median(r['replies_per_s'] for r in runs):>9.0f} replies/s, "
                          f"responder-side CPU {statistics.median(cpu) if cpu else float('nan'):>6.0f} ns/reply",
                          flush=True)
            finally:
                stop_responder(phase, responder)
                if phase == "userspace":  # its own counts: requests its sockets got and dropped
                    done = [json.loads(line) for line in responder.log_path.read_text().splitlines()
                            if "responderDone" in line]
                    res["userspace_responder_totals"] = done[-1] if done else None
    finally:
        teardown()
        subprocess.run([PY, "-c", f"from agent.dataplane import Dataplane; Dataplane.purge({PIN_DIR!r})"],
                       cwd=REPO, capture_output=True)
    summarize(res)
    return res


def xdp_generator(ifname: str, count: int, pps: int, frame_hex: str) -> None:
    """Send count copies of the frame out of ifname with bpf/xdp_tx.c in live-frames mode, as
    fast as the kernel goes (pps 0) or paced in GEN_BATCH-frame bursts; prints the elapsed time."""
    import bcc
    from agent.dataplane import BPF_SRC_DIR
    from agent.libbpf import interface_index, prog_test_run_live
    b = bcc.BPF(src_file=str(BPF_SRC_DIR / "xdp_tx.c").encode())
    fd = b.load_func(b"xdp_tx", bcc.BPF.XDP).fd
    frame = bytes.fromhex(frame_hex)
    t = b["mx_tx_template"]
    leaf = t.Leaf()
    leaf.bytes[:len(frame)] = list(frame)
    t[0] = leaf
    ifindex = interface_index(ifname)
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        k = min(count - sent, 65536 if not pps else GEN_BATCH)
        prog_test_run_live(fd, frame, ifindex, k, GEN_BATCH)
        sent += k
        if pps:
            ahead = t0 + sent / pps - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    print(json.dumps({"sent": sent, "elapsed_s": time.monotonic() - t0}))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--xdp-generator":
        xdp_generator(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, XDP)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 CPUs: the sender on one, the responder side on the other")
    t0 = time.monotonic()
    out = main()
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    for load_name in LOADS:
        s = out["summary"][load_name]
        print(f"\n== load {load_name}: {LOADS[load_name]['what']}")
        for phase in PHASES:
            r = s[phase]
            cpu = r["cpu_ns_per_reply_median"]
            print(f"  {phase:12s} answered {100 * r['answered_share_median']:6.2f}% (min {100 * r['answered_share_min']:.2f}%; "
                  f"reached node {100 * r['reached_node_share_median']:.1f}%, of those answered "
                  f"{100 * r['answered_of_reached_median']:.1f}%), "
                  f"{r['replies_per_s_median']:>9.0f} replies/s (range {r['replies_per_s_range'][0]}-{r['replies_per_s_range'][1]}), "
                  f"sender {r['sent_pps_median']:.0f} pps, responder-side CPU {'n/a' if cpu is None else f'{cpu:.0f} ns'}/reply")
        xu, xk = s["xdp_native_vs_userspace_replies_per_s"], s["xdp_native_vs_kernel_replies_per_s"]
        print(f"  XDP native / userspace replies/s: {'n/a' if xu is None else f'{xu:.1f}x'}; "
              f"/ kernel: {'n/a' if xk is None else f'{xk:.2f}x'}")
        for p in ("xdp-native", "xdp-generic"):
            if f"{p}_vs_kernel_cpu_per_reply" in s:
                print(f"  {p} / kernel CPU per reply: {s[f'{p}_vs_kernel_cpu_per_reply']:.2f}x")
    print("\ntargets:")
    for name, t in out["targets"].items():
        extra = {k: v for k, v in t.items() if k.startswith("met_with")}
        print(f"  {name}: target {t['target']}, measured {t.get('measured', t.get('measured_by_load'))}: "
              f"{'met' if t['met'] else 'NOT met'} {extra or ''}")
    path = REPO / "bench" / "results" / "xdp_flood.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
