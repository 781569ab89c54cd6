"""Controller chaos benchmark (issue 19): SIGKILL the controller again and again while Services
are being created and deleted, and check that no IP is ever given to two Services at once and no
Service's IP ever changes.

Real parts: etcd + kube-apiserver from `make setup`, the real `metalxdp controller` process
(a new one after every kill, lease 1.5 s, as the short test in tests/integration/test_controller.py
does three times). A creator adds Services at a steady rate and deletes every fifth one again, so
freed addresses are handed out anew; an observer lists the Services every 50 ms and records the
first IP each one showed, any change, and any IP held by two live Services.

``--impl metallb`` runs MetalLB's own controller (scripts/metallb/VERSION, built from Go
modules; one replica, no leader election, as its manifest deploys it) the same way; ``--impl
both`` runs metalxdp's and then MetalLB's, each on a fresh API server with the same seed (the
same lives before each kill), in one invocation (issue 16), and writes both side by side.

Prints figures and writes bench/results/controller_chaos.json (per-kill values included;
``--impl both``: peer_controller_chaos.json).
Usage: python bench/controller_chaos.py [--kills 100] [--rate 8] [--min-up 0.5] [--max-up 2.5]
       [--impl metalxdp|metallb|both]
"""
from __future__ import annotations

import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchstats import arg_parser, print_table, summary, write_json  # noqa: E402
from metalxdp.kube import api_client, client  # noqa: E402
from metalxdp.lab.cluster import CRD_DIR, kubectl  # noqa: E402
from metalxdp.rig.apiserver import start_control_plane  # noqa: E402
from metalxdp.rig.procs import free_port, start, wait_for  # noqa: E402

NS, CFG_NS = "chaos", "metallb-system"


def svc(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


def ips_of(s) -> list[str]:
    lb = s.status.load_balancer if s.status else None
    return [i.ip for i in (lb.ingress or [])] if lb else []


class Observer(threading.Thread):
    """Lists the Services every ``period`` s: first IP per Service (by uid), changes, and IPs
    held by two live Services in one snapshot."""

    def __init__(self, core, period: float = 0.05):
        super().__init__(daemon=True)
        self.core, self.period = core, period
        self.first: dict[str, tuple[str, str]] = {}      # uid -> (name, ip)
        self.changed: list[str] = []
        self.duplicates: list[str] = []
        self.snapshots = 0
        self.first_seen: list[float] = []                 # monotonic time of each first IP
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                items = self.core.list_namespaced_service(NS).items
            except Exception:   # the API server is fine here; a transient error is not a finding
                time.sleep(self.period)
                continue
            self.snapshots += 1
            holders: dict[str, str] = {}
            for s in items:
                for ip in ips_of(s)[:1]:
                    uid, name = s.metadata.uid, s.metadata.name
                    if uid not in self.first:
                        self.first_seen.append(time.monotonic())
                    was = self.first.setdefault(uid, (name, ip))
                    if was[1] != ip:
                        self.changed.append(f"{name}: {was[1]} -> {ip}")
                    if ip in holders and holders[ip] != name:
                        self.duplicates.append(f"{ip}: {holders[ip]} and {name}")
                    holders[ip] = name
            time.sleep(self.period)


def main() -> None:
    ap = arg_parser(__doc__, "controller_chaos")
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--rate", type=float, default=8.0, help="Services created per second")
    ap.add_argument("--min-up", type=float, default=1.0, help="shortest controller life before the kill (s)")
    ap.add_argument("--max-up", type=float, default=4.0, help="longest controller life before the kill (s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--impl", choices=["metalxdp", "metallb", "both"], default="metalxdp",
                    help="whose controller is killed; both: metalxdp's, then MetalLB's (same seed)")
    a = ap.parse_args()
    if a.impl != "both":
        res = run(a, a.impl)
        write_json(Path(a.out), res)
        sys.exit(1 if res["duplicate_ips_seen"] or res["changed_ips_seen"] or res["duplicate_ips_final"] else 0)
    out = {impl: run(a, impl) for impl in ("metalxdp", "metallb")}
    x, m = out["metalxdp"], out["metallb"]
    out["settle_ratio_metallb_over_metalxdp"] = (m["all_allocated_after_last_start_s"]
                                                 / max(0.01, x["all_allocated_after_last_start_s"]))
    print(f"\n== {a.kills} SIGKILLs each: duplicate IPs seen metalxdp {x['duplicate_ips_seen']} vs MetalLB "
          f"{m['duplicate_ips_seen']}, changed IPs {x['changed_ips_seen']} vs {m['changed_ips_seen']}, "
          f"duplicates at the end {x['duplicate_ips_final']} vs {m['duplicate_ips_final']}; every live Service "
          f"allocated after the last start {x['all_allocated_after_last_start_s']} s vs "
          f"{m['all_allocated_after_last_start_s']} s")
    default = str(Path(ap.get_default("out")).with_name("peer_controller_chaos.json"))
    write_json(Path(a.out if a.out != ap.get_default("out") else default), out)


def run(a, impl: str) -> dict:
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="mx-chaos-"))
    t_start = time.monotonic()
    cp = start_control_plane(work / "cp", controller_manager=False)
    ctl = None
    mlb = None
    if impl == "metallb":
        from metalxdp.lab.metallb_peer import binaries
        mlb = binaries()
    print(f"== {impl}: {a.kills} SIGKILLs of its controller", flush=True)
    try:
        kc = str(cp.kubeconfig)
        kubectl(kc, "apply", "-f", str(CRD_DIR))
        kubectl(kc, "wait", "--for=condition=Established", "crd", "--all")
        api = api_client(kc)
        core = client.CoreV1Api(api)
        for ns in (CFG_NS, NS):
            core.create_namespace({"metadata": {"name": ns}})
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "metallb.io", "v1beta1", CFG_NS, "ipaddresspools",
            {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "chaos"},
             "spec": {"addresses": ["198.18.0.0/20"]}})

        def controller(i: int):
            if mlb is not None:
                return start(f"metallb-controller-{i}", [
                    str(mlb / "controller"), "--kubeconfig", kc, "--namespace", CFG_NS, "--webhook-mode", "disabled",
                    "--disable-cert-rotation", "--port", str(free_port()), "--log-level", "error"], work / "logs")
            return start(f"controller-{i}", [
                sys.executable, "-m", "metalxdp.cli", "controller", "--kubeconfig", kc,
                "--namespace", CFG_NS, "--webhook-mode", "disabled", "--metrics-port", "0",
                "--lease-duration", "1.5", "--identity", f"c{i}", "--log-level", "error"], work / "logs")

        obs = Observer(core)
        obs.start()
        done = threading.Event()
        created, deleted = [], []

        def creator():
            i = 0
            while not done.is_set():
                name = f"s{i}"
                try:
                    core.create_namespaced_service(NS, svc(name))
                    created.append(name)
                    if i % 5 == 4:   # churn: delete an earlier one, so freed IPs are reused
                        victim = created[i - 3]
                        core.delete_namespaced_service(victim, NS)
                        deleted.append(victim)
                except Exception as e:   # noqa: BLE001 - reported, the run goes on
                    print(f"creator: {e}", file=sys.stderr)
                i += 1
                time.sleep(1.0 / a.rate)
        t_create = threading.Thread(target=creator, daemon=True)
        t_create.start()

        lives, windows = [], []
        for k in range(a.kills):
            ctl = controller(k)
            t0 = time.monotonic()
            up = rng.uniform(a.min_up, a.max_up)
            time.sleep(up)
            ctl.popen.send_signal(signal.SIGKILL)
            ctl.popen.wait()
            lives.append(up)
            windows.append((t0, time.monotonic()))
            if (k + 1) % 10 == 0:
                print(f"  {k + 1}/{a.kills} kills, {len(created)} created, {len(deleted)} deleted",
                      flush=True)
        done.set()
        t_create.join()
        ctl = controller(a.kills)
        t_last = time.monotonic()
        live = set(created) - set(deleted)

        def all_allocated() -> bool:
            items = core.list_namespaced_service(NS).items
            return sum(1 for s in items if ips_of(s)) == len(live) == len(items)
        wait_for("every live Service to have an IP", all_allocated, 300, proc=ctl, interval=0.5)
        settle = time.monotonic() - t_last
        time.sleep(1.0)
        obs.stop.set()
        obs.join()
        # which incarnations were killed while they were allocating (an IP appeared in their life)
        per_life = [sum(1 for x in obs.first_seen if s <= x < e) for s, e in windows]
        killed_mid_work = sum(1 for n in per_life if n)
        final = {s.metadata.name: ips_of(s)[0] for s in core.list_namespaced_service(NS).items}
        dup_final = len(final) - len(set(final.values()))
        res = {
            "implementation": impl, "kills": a.kills, "services_created": len(created), "services_deleted": len(deleted),
            "services_live": len(live), "observer_snapshots": obs.snapshots,
            "duplicate_ips_seen": len(obs.duplicates), "changed_ips_seen": len(obs.changed),
            "duplicate_ips_final": dup_final,
            "examples": {"duplicates": obs.duplicates[:10], "changed": obs.changed[:10]},
            "kills_while_allocating": killed_mid_work, "ips_first_seen_per_life": per_life,
            "controller_life_s": summary(lives, "s", 2), "per_kill_life_s": [round(x, 3) for x in lives],
            "all_allocated_after_last_start_s": round(settle, 2),
            "total_run_s": round(time.monotonic() - t_start, 1),
        }
        print_table("controller life before SIGKILL", {"": res["controller_life_s"]}, "s", 2, 32, 7)
        print(f"\n{a.kills} SIGKILLs, {len(created)} Services created, {len(deleted)} deleted: "
              f"{len(obs.duplicates)} duplicate IPs and {len(obs.changed)} changed IPs seen in "
              f"{obs.snapshots} snapshots; {dup_final} duplicates at the end; every live Service "
              f"allocated {settle:.1f}s after the last start; {killed_mid_work} of the kills hit a "
              f"controller that had allocated during its life")
        return res
    finally:
        if ctl is not None and ctl.popen.poll() is None:
            ctl.stop()
        cp.stop()


if __name__ == "__main__":
    main()
