"""The project's container images and a containerd to import and run them, for the lab's nodes
and the tests.

``build_images()`` runs scripts/image.sh (cached by content hash under
/var/cache/metalxdp/images: a warm call takes about a second) and returns the tarballs;
``Containerd`` is Debian's containerd 1.6 with its own socket, root and state under a directory
of the caller's, configured as the lab's nodes need it (runc without CAP_SYS_RESOURCE:
``restrict_oom_score_adj``; the sandbox image is the locally built pause image), and
``Containerd.import_image`` is ``ctr -n k8s.io images import``.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .procs import Proc, RigError, start, wait_for

REPO = Path(__file__).resolve().parents[2]
IMAGE_SCRIPT = REPO / "scripts" / "image.sh"
K8S_NAMESPACE = "k8s.io"   # containerd namespace of the CRI plugin (the kubelet's pods)


@dataclass(frozen=True)
class ImageTar:
    name: str   # metalxdp, pause, backend, base
    ref: str    # localhost/metalxdp:0.1.0
    path: Path  # docker-archive tarball

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def build_images(names: Sequence[str] = (), log_path: Optional[Path] = None,
                 timeout: float = 3600) -> dict[str, ImageTar]:
    """Build (or find in the cache) the images ``names`` (default: metalxdp, pause, backend)
    with scripts/image.sh; its progress goes to ``log_path`` (default: this process's stderr)."""
    logf = open(log_path, "ab") if log_path else None
    try:
        r = subprocess.run(["bash", str(IMAGE_SCRIPT), *names], stdout=subprocess.PIPE,
                           stderr=logf, stdin=subprocess.DEVNULL, text=True, timeout=timeout)
    finally:
        if logf:
            logf.close()
    if r.returncode != 0:
        tail = ""
        if log_path:
            tail = "\n" + "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-30:])
        raise RigError(f"scripts/image.sh {' '.join(names)} failed ({r.returncode}){tail}")
    out = {}
    for line in r.stdout.splitlines():
        name, ref, path = line.split()
        out[name] = ImageTar(name, ref, Path(path))
    return out


CONFIG_TEMPLATE = """\
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # runc cannot set a negative oom_score_adj without CAP_SYS_RESOURCE ("can't get final
  # child's PID from pipe: EOF"): keep every container's score at or above containerd's
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{dir}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni"
"""


class Containerd:
    """A containerd of its own under ``workdir`` (socket ``workdir/containerd.sock``)."""

    def __init__(self, workdir: Path, sandbox_image: str = "localhost/metalxdp-pause:0.1.0"):
        self.dir = Path(workdir)
        self.sock = self.dir / "containerd.sock"
        self.config = self.dir / "config.toml"
        self.sandbox_image = sandbox_image
        self.proc: Optional[Proc] = None

    def config_text(self) -> str:
        return CONFIG_TEMPLATE.format(root=self.dir / "root", state=self.dir / "state",
                                      sock=self.sock, dir=self.dir, sandbox_image=self.sandbox_image)

    def start(self, timeout: float = 30) -> "Containerd":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "cni").mkdir(exist_ok=True)
        self.config.write_text(self.config_text())
        self.proc = start("containerd", ["containerd", "--config", str(self.config)], self.dir)
        wait_for("containerd's socket", lambda: self.ctr("version", check=False).returncode == 0,
                 timeout, proc=self.proc, interval=0.2)
        return self

    def stop(self) -> None:
        """Stop containerd and whatever it still runs (its shims are in other process groups)."""
        if self.proc is None:
            return
        for task in self.tasks():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for c in self.containers():
            self.ctr("tasks", "delete", "-f", c, check=False)
            self.ctr("containers", "delete", c, check=False)
        self.proc.stop()
        self.proc = None

    def __enter__(self) -> "Containerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def ctr(self, *args: str, check: bool = True, timeout: float = 120,
            namespace: str = K8S_NAMESPACE) -> subprocess.CompletedProcess:
        cmd = ["ctr", "-a", str(self.sock), "-n", namespace, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RigError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def import_image(self, tar: Path) -> None:
        self.ctr("images", "import", str(tar), timeout=600)

    def images(self) -> list[str]:
        return self.ctr("images", "list", "-q").stdout.split()

    def containers(self) -> list[str]:
        return self.ctr("containers", "list", "-q", check=False).stdout.split()

    def tasks(self) -> list[str]:
        lines = self.ctr("tasks", "list", check=False).stdout.splitlines()[1:]
        return [ln.split()[0] for ln in lines if ln.strip() and "RUNNING" in ln]
