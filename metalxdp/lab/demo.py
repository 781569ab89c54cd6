"""`make demo`: a lab brought up and shown working step by step.

By default on the **cluster lab** (``kube_cluster``): a control-plane host and three real nodes
(containerd, kubelet, kube-proxy), metalxdp installed into it with ``kubectl apply -k`` from its
own image. ``--process`` runs the same story on the faster process lab (``cluster.Lab``).

1. the lab (and, on the cluster lab, ``kubectl get nodes`` / ``kubectl get pods -A``);
2. backends and two LoadBalancer Services, one from the L2 pool, one from the BGP pool;
3. L2: curl from the client; which node answers ARP for the VIP (from XDP);
4. BGP: the router's route with one next hop per node, curl through the router;
5. failover: the announcing node's cable is cut; requests resume on another node (time measured);
6. (cluster lab) how long each stage took and what a node spends in memory.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from ..rig.procs import RigError, wait_for
from . import tools as lt
from .cluster import Lab, kubectl, name_option, print_status


def _step(n: int, total: int, text: str) -> None:
    click.secho(f"\n== [{n}/{total}] {text}", bold=True)


def run_demo(lab: Lab, keep: bool = False) -> None:
    if lab.load().get("id"):
        click.echo(f"a previous lab {lab.name!r} is still up: removing it first")
        lab.down()
    total = 5
    ok = False
    try:
        _step(1, total, "lab up (first run of the API server takes a few seconds)")
        lab.up()
        st = lab.status()
        print_status(st)
        click.echo(kubectl(st["kubeconfig"], "get", "nodes", "-o", "wide").stdout)

        _step(2, total, "backends web-1 (node2), web-2 (node3); Services demo-l2 and demo-bgp")
        lab.add_backend("web-1", "node2", {"app": "web"})
        lab.add_backend("web-2", "node3", {"app": "web"})
        lt.apply_service(lab, "demo-l2")
        lt.apply_service(lab, "demo-bgp", pool="lab-bgp")
        l2_ip = lt.wait_service_ips(lab, "demo-l2")[0]
        bgp_ip = lt.wait_service_ips(lab, "demo-bgp")[0]
        click.echo(kubectl(st["kubeconfig"], "get", "svc", "-o", "wide").stdout)

        _step(3, total, f"L2: the client reaches {l2_ip} on its own segment")
        body = lt.wait_curl(lab, l2_ip)
        node = lt.announcing_node(lab, l2_ip)
        click.echo(f"$ curl http://{l2_ip}/  ->  {body}")
        click.echo(f"ARP for {l2_ip} answered (by XDP) with the MAC of {node}")
        for _ in range(3):
            click.echo(f"  {lt.curl(lab, l2_ip)}")

        _step(4, total, f"BGP: the router learned {bgp_ip}/32 from every node (ECMP)")
        wait_for("router route with 3 next hops", lambda: len(lt.router_nexthops(lab, bgp_ip)) == 3, 30)
        click.echo(lab.host("router").run(["ip", "route", "show", bgp_ip]).stdout.rstrip())
        click.echo(f"$ curl http://{bgp_ip}/  (client -> router -> a node)")
        for _ in range(4):
            click.echo(f"  {lt.curl(lab, bgp_ip)}")

        _step(5, total, f"failover: cut {node}'s cable while the client requests {l2_ip} 10 times a second")
        res = lt.measure_failover(lab, l2_ip, node)
        if res["ok"]:
            new = lt.announcing_node(lab, l2_ip)
            click.echo(f"service back after {res['seconds']:.2f} s ({res['failed_requests']} failed requests); "
                       f"now announced by {new}")
        else:
            click.echo(f"service did NOT come back within 30 s after cutting {node}")
        lt.restore_link(lab, node)
        ok = res["ok"]
        click.secho("\ndemo finished" + ("" if ok else " WITH A FAILURE"), bold=True)
    except RigError as e:
        raise click.ClickException(str(e))
    finally:
        if not keep:
            click.echo("\ntearing the lab down (metalxdp demo --keep leaves it up)")
            lab.down()
    if not ok:
        raise SystemExit(1)


def run_cluster_demo(workdir: Path, keep: bool = False) -> None:
    from . import kube_tools as kt
    from .kube_cluster import ClusterLab
    lab = ClusterLab(workdir)
    total, ok = 6, False
    try:
        _step(1, total, "cluster lab up: control plane, 3 real nodes, FRR router, client; metalxdp installed "
                        "with kubectl apply -k")
        click.echo(f"  (the first run builds the images: several minutes; progress in {workdir}/image-build.log)")
        lab.up(progress=click.echo)
        click.echo("$ kubectl get nodes -o wide")
        click.echo(lab.kubectl("get", "nodes", "-o", "wide").stdout)
        click.echo("$ kubectl get pods -A -o wide")
        click.echo(lab.kubectl("get", "pods", "-A", "-o", "wide").stdout)

        t0 = time.monotonic()
        _step(2, total, "a Deployment of 2 backend pods; Services demo-l2 (L2 pool) and demo-bgp (BGP pool)")
        w = kt.Workload(lab, ns="demo")
        w.backends("web", 2)
        (l2_ip,) = w.service("demo-l2", "web", families=["IPv4"])
        (bgp_ip,) = w.service("demo-bgp", "web", pool="lab-bgp", families=["IPv4"])
        click.echo(lab.kubectl("-n", "demo", "get", "pods,svc", "-o", "wide").stdout)

        _step(3, total, f"L2: the client reaches {l2_ip} on its own segment")
        body = kt.wait_curl(lab, l2_ip)
        node = kt.announcer(lab, l2_ip)
        click.echo(f"$ curl http://{l2_ip}/  ->  {body}")
        click.echo(f"ARP for {l2_ip} answered (by XDP) with the MAC of {node}")
        for _ in range(3):
            click.echo(f"  {kt.client_curl(lab, l2_ip)}")

        _step(4, total, f"BGP: the router learned {bgp_ip}/32 from every node (ECMP)")
        wait_for("router route with 3 next hops", lambda: len(kt.router_nexthops(lab, bgp_ip)) == 3, 60)
        click.echo(lab.topo.hosts["router"].run(["ip", "route", "show", bgp_ip]).stdout.rstrip())
        click.echo(f"$ curl http://{bgp_ip}/  (client -> router -> a node)")
        for _ in range(4):
            click.echo(f"  {kt.client_curl(lab, bgp_ip)}")

        _step(5, total, f"failover: cut {node}'s cable while the client requests {l2_ip} 10 times a second")
        back = None
        try:
            with kt.Stream(lab, l2_ip, rate=10) as s:
                time.sleep(1)
                cut = time.monotonic()
                lab.topo.set_link(node, up=False)
                try:
                    wait_for("requests succeed again", lambda: s.first_success_after(cut + 0.2) is not None, 30)
                except RigError:
                    pass
                time.sleep(1)
            back = s.first_success_after(cut)
            failed = [t - cut for t, good in s.results if not good and t > cut]
        finally:
            lab.topo.set_link(node, up=True)
        if back is not None:
            last = f", the last failed one sent {max(failed):.2f} s after it" if failed else ""
            click.echo(f"first request answered {back:.2f} s after the cut ({len(failed)} failed requests{last}); "
                       f"now announced by {kt.announcer(lab, l2_ip)}")
        else:
            click.echo(f"service did NOT come back within 30 s after cutting {node}")
        lab.timings["demo steps 2-5"] = round(time.monotonic() - t0, 2)

        _step(6, total, "what it took")
        for stage, secs in lab.timings.items():
            click.echo(f"  {stage:<16} {secs:7.1f} s")
        click.echo("  memory per node (RSS, MB):")
        mem = kt.node_memory_mb(lab)
        cols = list(next(iter(mem.values())).keys())
        click.echo("    " + f"{'node':<8}" + "".join(f"{c:>12}" for c in cols))
        for n, row in mem.items():
            click.echo("    " + f"{n:<8}" + "".join(f"{row[c]:>12.1f}" for c in cols))
        ok = back is not None
        click.secho("\ndemo finished" + ("" if ok else " WITH A FAILURE"), bold=True)
        if keep:
            click.echo(f"\nthe lab stays up: KUBECONFIG={lab.kubeconfig} kubectl get pods -A; "
                       f"the client: ip netns exec {lab.topo.hosts['client'].netns} curl http://{l2_ip}/")
            click.prompt("press Enter to tear it down", default="", show_default=False)
    except RigError as e:
        raise click.ClickException(str(e))
    finally:
        click.echo("\ntearing the cluster lab down")
        lab.down()
    if not ok:
        raise SystemExit(1)


@click.command()
@name_option
@click.option("--process", "process_lab", is_flag=True,
              help="Run on the process lab (agents and controller as processes, Node objects, a "
                   "kube-proxy stand-in: ~30 s) instead of the cluster lab (real nodes, metalxdp "
                   "installed as pods with kubectl apply -k: ~2 min with cached images).")
@click.option("--keep", is_flag=True,
              help="Leave the lab up afterwards: the process lab until `metalxdp lab down`, the "
                   "cluster lab until you press Enter.")
def demo(name: str, process_lab: bool, keep: bool) -> None:
    """Bring a lab up and show a LoadBalancer Service over L2 and BGP and a failover, then tear
    it down. The default is the cluster lab: real kubelets, containerd and kube-proxy, metalxdp
    from its own image installed with `kubectl apply -k deploy/`."""
    if process_lab:
        run_demo(Lab(name), keep=keep)
    else:
        run_cluster_demo(Path(tempfile.mkdtemp(prefix="metalxdp-demo-")), keep=keep)
