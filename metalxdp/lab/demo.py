"""`make demo`: the lab, brought up and shown working step by step.

1. the lab: API server, 3 nodes, FRR router, client (and metalxdp's controller + agents);
2. two backend pods and two LoadBalancer Services, one from the L2 pool, one from the BGP pool;
3. L2: curl from the client; which node answers ARP for the VIP (from XDP);
4. BGP: the router's route with one next hop per node, curl through the router;
5. failover: the announcing node's cable is cut; requests resume on another node (time measured).
"""
from __future__ import annotations

import click

from ..rig.procs import RigError
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
        from ..rig.procs import wait_for
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


@click.command()
@name_option
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards (remove with `metalxdp lab down`).")
def demo(name: str, keep: bool) -> None:
    """Bring the lab up and show it working, then tear it down (unless --keep)."""
    run_demo(Lab(name), keep=keep)
