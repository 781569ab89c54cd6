"""The one command-line entry point, ``metalxdp``, a click group.

Subcommands live next to what they drive and are attached here, so ``metalxdp --help`` lists
everything: ``lab`` (network-namespace lab), ``demo``, ``config`` (validate/convert offline),
``controller``, ``agent``, ``operator``, ``status`` (the cluster-wide view) and
``support-bundle`` (everything a bug report needs, secrets redacted).
"""
from __future__ import annotations

import importlib

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metalxdp")
def main() -> None:
    """metalxdp: a MetalLB-compatible LoadBalancer for bare-metal Kubernetes, with ARP/NDP
    answered in XDP.

    It reads the same metallb.io resources as MetalLB (IPAddressPool, L2Advertisement,
    BGPPeer, ...). Try it with `make demo`, or `metalxdp lab up` then `metalxdp lab status`.
    """


# (module, attribute) of each subcommand; a module that is not there yet is simply skipped,
# so a partial checkout still has a working CLI.
_SUBCOMMANDS = [
    ("metalxdp.lab.cluster", "lab"),
    ("metalxdp.lab.demo", "demo"),
    ("metalxdp.config.cli", "config"),
    ("controller.main", "controller"),
    ("agent.main", "agent"),
    ("controller.operator", "operator"),
    ("metalxdp.status_cli", "status"),
    ("metalxdp.bundle", "support_bundle"),
    ("metalxdp.lab.vagrant_render", "vagrant_render"),
]

for _mod, _attr in _SUBCOMMANDS:
    try:
        _m = importlib.import_module(_mod)
    except ModuleNotFoundError as e:  # only tolerate the subcommand's own module missing
        if e.name != _mod and not _mod.startswith(str(e.name)):
            raise
        continue
    main.add_command(getattr(_m, _attr))


if __name__ == "__main__":
    main()
