"""The one command-line entry point, ``metalxdp``, a click group.

Subcommands live next to what they drive and are attached here, so ``metalxdp --help`` lists
everything: ``lab`` (network-namespace lab), ``demo``, ``config`` (validate/convert offline),
``controller``, ``agent``, ``operator``, ``status`` (the cluster-wide view) and
``support-bundle`` (everything a bug report needs, secrets redacted).
"""
from __future__ import annotations

import importlib
import importlib.util

import click

from . import __version__


# name -> (module, attribute) of each subcommand. A subcommand's module is imported only when
# that subcommand runs (or --help lists them): `metalxdp agent` on every node never loads the
# controller's, the operator's or the CLI's kubernetes client (~40 MB of RSS).
_SUBCOMMANDS = {
    "agent": ("agent.main", "agent"),
    "config": ("metalxdp.config.cli", "config"),
    "controller": ("controller.main", "controller"),
    "demo": ("metalxdp.lab.demo", "demo"),
    "lab": ("metalxdp.lab.cluster", "lab"),
    "operator": ("controller.operator", "operator"),
    "status": ("metalxdp.status_cli", "status"),
    "support-bundle": ("metalxdp.bundle", "support_bundle"),
    "vagrant-render": ("metalxdp.lab.vagrant_render", "vagrant_render"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use. A subcommand whose own module is
    missing (a partial checkout) is left out; any other import error is raised."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _) in _SUBCOMMANDS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx: click.Context, name: str):
        if name not in _SUBCOMMANDS:
            return None
        mod, attr = _SUBCOMMANDS[name]
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:  # only tolerate the subcommand's own module missing
            if e.name != mod and not mod.startswith(str(e.name)):
                raise
            return None
        return getattr(m, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metalxdp")
def main() -> None:
    """metalxdp: a MetalLB-compatible LoadBalancer for bare-metal Kubernetes, with ARP/NDP
    answered in XDP.

    It reads the same metallb.io resources as MetalLB (IPAddressPool, L2Advertisement,
    BGPPeer, ...). Try it with `make demo`, or `metalxdp lab up` then `metalxdp lab status`.
    """


if __name__ == "__main__":
    main()
