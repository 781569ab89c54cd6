"""Starting and stopping the lab's and tests' long-running processes (etcd, kube-apiserver, FRR,
socat, agents) so that none is ever left behind.

Every process starts in its own session (process group); ``stop`` sends SIGTERM to the group,
waits, then SIGKILLs. Output goes to a log file whose tail is shown when a start fails.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence


class RigError(RuntimeError):
    """A real component could not start or did not become ready; the message says why."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        stop_pid(self.pid, timeout)
        try:
            self.popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def start(name: str, argv: Sequence[str], log_dir: Path, netns: Optional[str] = None,
          env: Optional[dict] = None, cwd: Optional[Path] = None) -> Proc:
    """Start ``argv`` (inside network namespace ``netns`` when given) as its own process group."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    cmd = list(argv)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    logf = open(log_path, "ab")
    try:
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env, cwd=cwd)
    except FileNotFoundError as e:
        raise RigError(f"cannot start {name}: {e.filename} not found (run `make setup`)") from e
    finally:
        logf.close()
    return Proc(name, p, log_path)


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM the process group of ``pid`` (or the pid), then SIGKILL after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 2)
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                # reap if it is our child, so it does not linger as a zombie
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        return
                except ChildProcessError:
                    pass
            except ProcessLookupError:
                return
            time.sleep(0.05)


def wait_for(what: str, check: Callable[[], bool], timeout: float, proc: Optional[Proc] = None,
             interval: float = 0.1) -> None:
    """Poll ``check`` until it is true; fail with the reason (and the process log) on timeout
    or when ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - a not-ready-yet check may raise anything
            last_exc = e
        if proc is not None and not proc.alive():
            raise RigError(f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n"
                           f"{proc.log_tail()}")
        time.sleep(interval)
    detail = f" (last error: {last_exc})" if last_exc else ""
    tail = f"\n{proc.name} log:\n{proc.log_tail()}" if proc else ""
    raise RigError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tail}")


def free_port(host: str = "127.0.0.1") -> int:
    """A currently unused TCP port on ``host`` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(cmd: Sequence[str], netns: Optional[str] = None, check: bool = True, timeout: float = 60,
        input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a short command (inside ``netns`` when given) and capture its output as text."""
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RigError(f"command failed ({r.returncode}): {' '.join(full)}\n{r.stderr.strip()}")
    return r
