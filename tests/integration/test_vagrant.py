"""The Vagrant lab as far as this machine can check it: no VMs boot here (no hypervisor), so
Debian's vagrant validates the Vagrantfile, shellcheck checks every provisioning script, FRR's
own parser checks the router VM's frr.conf, and the scripts' shared library is sourced by bash
against the committed lab.env.

A missing tool fails the test (it is part of `make setup`), it is never skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from metalxdp.lab.spec import LabSpec

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
PROVISION = VAGRANT_DIR / "provision"
SCRIPTS = sorted(PROVISION.glob("*.sh"))
EXPECTED_SCRIPTS = {"lib.sh", "router.sh", "kernel.sh", "node.sh", "server.sh", "client.sh"}
MACHINES = ["router", *LabSpec().node_names(), "client"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"`{name}` is not installed (Debian package {name}; `make setup` installs it)"
    return path


def _vagrant_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAGRANT_", "METALXDP_"))}    # nothing from the caller's shell
    env.update(VAGRANT_HOME=str(tmp_path / "vagrant-home"),          # no ~/.vagrant.d
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"),       # no vagrant/.vagrant in the tree
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1")
    env.update(extra)
    return env


def _validate(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("vagrant"), "validate", *args], cwd=VAGRANT_DIR,
                          env=_vagrant_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("provider", [None, "virtualbox"], ids=["default-provider", "virtualbox"])
def test_vagrant_validate(tmp_path, provider):
    """`vagrant validate --ignore-provider`: Vagrant's check of the whole Vagrantfile (machines,
    networks, synced folders, provisioner paths) on a machine with no usable provider; without
    the flag Vagrant refuses before validating ("No usable default provider")."""
    env = {"VAGRANT_DEFAULT_PROVIDER": provider} if provider else {}
    r = _validate(tmp_path, "--ignore-provider", **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Vagrantfile validated successfully" in r.stdout
    for m in MACHINES:      # every machine of the lab was defined and looked at
        assert f"{m}: Ignoring provider config" in r.stdout, r.stdout


def test_vagrant_validate_virtualbox_provider_config(tmp_path):
    """Without --ignore-provider, so the VirtualBox provider's own settings (cpus, memory, name,
    linked_clone) are validated too. VirtualBox is not installed here: a VBoxManage that only
    answers `--version` lets Vagrant load its (built-in) VirtualBox provider. No VM is created."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "VBoxManage"
    stub.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 7.0.6r155176 && exit 0\n"
                    "echo \"VBoxManage $* called during validate\" >&2\nexit 1\n")
    stub.chmod(0o755)
    path = f"{bindir}:{os.environ.get('PATH', '')}"
    for env in ({"PATH": path}, {"PATH": path, "VAGRANT_DEFAULT_PROVIDER": "virtualbox"}):
        r = _validate(tmp_path, **env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Vagrantfile validated successfully" in r.stdout
        assert "called during validate" not in r.stderr


def test_vagrant_validate_rejects_more_nodes_than_rendered(tmp_path):
    """The negative control: validate does fail on a bad configuration. lab.env has addresses
    for LabSpec().nodes nodes; asking for more must stop with the command that renders them."""
    r = _validate(tmp_path, "--ignore-provider", METALXDP_NODES=str(LabSpec().nodes + 1))
    assert r.returncode != 0
    assert "python -m metalxdp.lab.vagrant_render --nodes" in r.stdout + r.stderr


def test_vagrant_validate_with_fewer_nodes(tmp_path):
    r = _validate(tmp_path, "--ignore-provider", METALXDP_NODES="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "node1: Ignoring" in r.stdout and "node2:" not in r.stdout


def test_provisioning_scripts_are_shellcheck_clean():
    names = {p.name for p in SCRIPTS}
    assert EXPECTED_SCRIPTS <= names, f"missing: {EXPECTED_SCRIPTS - names}"
    r = subprocess.run([_tool("shellcheck"), "--external-sources", "--severity=info",
                        *[p.name for p in SCRIPTS]], cwd=PROVISION, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for p in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, f"{p.name}: {r.stderr}"
        if p.name != "lib.sh":     # lib.sh is sourced, never run
            text = p.read_text()
            assert text.startswith("#!/usr/bin/env bash\n"), p.name
            assert "\nset -euo pipefail\n" in text, p.name
            assert os.access(p, os.X_OK), f"{p.name} is not executable"


def test_vagrantfile_names_existing_scripts():
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    for p in SCRIPTS:
        if p.name != "lib.sh":
            assert f'path: "provision/{p.name}"' in text, f"{p.name} is not provisioned by the Vagrantfile"


def test_router_frr_conf_passes_frrs_own_check():
    """The router VM loads generated/frr.conf as FRR's integrated config (vtysh -b); vtysh's
    dry run parses it with the same command tables. A broken line makes it fail (checked)."""
    vtysh = _tool("vtysh")
    conf = VAGRANT_DIR / "generated" / "frr.conf"
    r = subprocess.run([vtysh, "--dryrun", "-f", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_router_frr_conf_check_catches_errors(tmp_path):
    bad = tmp_path / "frr.conf"
    bad.write_text((VAGRANT_DIR / "generated" / "frr.conf").read_text()
                   .replace(" timers bgp 3 9", " timers bgp three nine"))
    r = subprocess.run([_tool("vtysh"), "--dryrun", "-f", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0


@pytest.mark.parametrize("host", MACHINES)
def test_lib_sh_reads_lab_env_in_bash(host):
    """What the scripts see: lib.sh sourced by bash (set -euo pipefail) with the repository as
    REPO gives each VM its LabSpec addresses; helpers behave."""
    v4, v6 = LabSpec().host_addresses()[host]
    script = ('set -euo pipefail; . vagrant/provision/lib.sh; '
              'printf "%s %s %s %s\\n" "$MY_IP4" "$MY_IP6" "$(host_var router IP4)" "$ROUTER_ASN"')
    r = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "REPO": str(REPO), "LAB_HOST": host})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [v4[0].split("/")[0], v6[0].split("/")[0], "192.0.2.1",
                                str(LabSpec().router_asn)]


def test_lib_sh_write_if_changed_is_idempotent(tmp_path):
    target = tmp_path / "etc" / "conf"
    script = ('set -euo pipefail; . vagrant/provision/lib.sh; '
              f'echo a | write_if_changed {target} 0600 && echo wrote1; '
              f'echo a | write_if_changed {target} 0600 || echo unchanged; '
              f'echo b | write_if_changed {target} && echo wrote2')
    r = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "REPO": str(REPO), "LAB_HOST": "node1"})
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if not line.startswith("[")] == \
        ["wrote1", "unchanged", "wrote2"]
    assert target.read_text() == "b\n"


def test_lib_sh_refuses_unknown_host():
    r = subprocess.run(["bash", "-c", "set -euo pipefail; . vagrant/provision/lib.sh"], cwd=REPO,
                       capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "REPO": str(REPO), "LAB_HOST": "node99"})
    assert r.returncode != 0 and "NODE99_IP4" in r.stderr
