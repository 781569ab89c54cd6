"""`make demo`: the lab, brought up and shown working step by step."""
from __future__ import annotations

import click

from .lab import Lab, _print_status, kubectl
from .rig.procs import RigError


def run_demo(lab: Lab, keep: bool = False) -> None:
    if lab.load().get("id"):
        click.echo(f"a previous lab {lab.name!r} is still up: removing it first")
        lab.down()
    try:
        lab.up()
        st = lab.status()
        _print_status(st)
        click.echo("\n$ kubectl get nodes -o wide")
        click.echo(kubectl(st["kubeconfig"], "get", "nodes", "-o", "wide").stdout)
        client = lab.host("client")
        for n, h in st["hosts"].items():
            if n.startswith("node"):
                r = client.run(["ping", "-c1", "-W2", h["ipv4"][0]], check=False)
                click.echo(f"client -> {n} ({h['ipv4'][0]}): {'ok' if r.returncode == 0 else 'FAILED'}")
    except RigError as e:
        raise click.ClickException(str(e))
    finally:
        if not keep:
            click.echo("\ntearing the lab down (use --keep to leave it up)")
            lab.down()
