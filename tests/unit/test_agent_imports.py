"""The agent runs on every node: none of its code may load the kubernetes client package (its
generated models cost ~40 MB of RSS per process; the agent talks to the API server through
metalxdp.kube.RestClient). Checked in a fresh interpreter, through the CLI entry point the
DaemonSet runs, then every module of the agent package."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib, pkgutil, sys
from metalxdp.cli import main
try:
    main(["agent", "--help"], standalone_mode=False)
except SystemExit:
    pass
import agent
for m in pkgutil.walk_packages(agent.__path__, "agent."):
    importlib.import_module(m.name)
import metalxdp.health, metalxdp.watch, metalxdp.kube, metalxdp.config.parse
print("LOADED", sorted(n for n in sys.modules if n == "kubernetes" or n.startswith("kubernetes.")))
"""


def run_probe() -> str:
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return [line for line in r.stdout.splitlines() if line.startswith("LOADED")][-1]


def test_the_agent_never_imports_the_kubernetes_client():
    assert run_probe() == "LOADED []"


def test_the_probe_sees_the_kubernetes_client_when_it_is_loaded():
    """The same probe, with a module that does use the kubernetes client: it must notice."""
    r = subprocess.run([sys.executable, "-c", PROBE.replace("metalxdp.config.parse", "metalxdp.status_cli")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'kubernetes.client'" in r.stdout
