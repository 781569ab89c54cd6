"""Compile and load the XDP program with BCC in a short-lived child process, and hand the
program and map fds to the agent.

BCC links LLVM and clang into the process that compiles (about 120 MB of resident memory that
stays for the process's life). The agent runs this module as a child instead
(``python -m agent.bpf_loader``): the child compiles ``bpf/xdp_vip.c``, creates (or, with a
pin directory, pins) the maps, loads the program's functions, and sends one SOCK_SEQPACKET
message over an inherited socket: a JSON description of every map (type, max entries, BCC's
key and leaf type descriptors) and function, with their fds attached (SCM_RIGHTS). Then it
exits and its memory goes with it; the agent drives the maps through the bpf syscall
(``agent.bpfmap``). With ``--layout-only`` (the agent adopts pinned state) nothing is loaded
and only the layouts are sent.

The message is ``{"maps": [{name, type, max_entries, key, leaf}], "functions": [names]}``
with the fds in that order (maps first), or ``{"error": text, "stage": "compile"|"load"}``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

from .bpfmap import MAP_TYPES
from .libbpf import DataplaneError

MAX_FDS = 64


def _describe(bcc, b) -> tuple[list[dict], list[int]]:
    import ctypes
    lib, mod = bcc.lib, b.module
    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    maps, fds = [], []
    for i in range(lib.bpf_num_tables(mod)):
        name = lib.bpf_table_name(mod, i)
        type_id = lib.bpf_table_type_id(mod, i)
        maps.append({"name": name.decode(), "type": MAP_TYPES.get(type_id, str(type_id)),
                     "max_entries": int(lib.bpf_table_max_entries_id(mod, i)),
                     "key": json.loads(lib.bpf_table_key_desc(mod, name).decode()),
                     "leaf": json.loads(lib.bpf_table_leaf_desc(mod, name).decode())})
        fds.append(lib.bpf_table_fd(mod, name))
    return maps, fds


def child_main(sock_fd: int, src: str, cflags: list[str], layout_only: bool) -> int:
    sock = socket.socket(fileno=sock_fd)

    def send(msg: dict, fds: Iterable[int] = ()) -> None:
        socket.send_fds(sock, [json.dumps(msg).encode()], list(fds))

    import bcc   # only here: the child's LLVM goes away with the child
    try:
        b = bcc.BPF(src_file=src.encode(), cflags=cflags)
    except Exception as e:   # noqa: BLE001 - BCC raises plain Exception for a failed compile
        send({"error": str(e), "stage": "compile"})
        return 1
    maps, fds = _describe(bcc, b)
    functions: list[str] = []
    if not layout_only:
        try:
            for i in range(bcc.lib.bpf_num_functions(b.module)):
                name = bcc.lib.bpf_function_name(b.module, i).decode()
                fds.append(b.load_func(name.encode(), bcc.BPF.XDP).fd)
                functions.append(name)
        except Exception as e:   # noqa: BLE001
            send({"error": str(e), "stage": "load"})
            return 1
    if len(fds) > MAX_FDS:
        send({"error": f"{len(fds)} fds: more than {MAX_FDS}", "stage": "load"})
        return 1
    send({"maps": maps, "functions": functions}, [] if layout_only else fds)
    return 0


class Loaded:
    """What the child handed over: ``maps`` name -> (fd or -1, description) and
    ``functions`` name -> fd. The receiver owns the fds."""

    def __init__(self, maps: dict[str, tuple[int, dict]], functions: dict[str, int]):
        self.maps, self.functions = maps, functions

    def close(self) -> None:
        for fd, _ in self.maps.values():
            if fd >= 0:
                os.close(fd)
        for fd in self.functions.values():
            os.close(fd)
        self.maps, self.functions = {}, {}


class LoadFailed(DataplaneError):
    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def load(src: Path, cflags: Iterable[str], layout_only: bool = False, timeout: float = 300.0) -> Loaded:
    """Run the child and receive what it built; raises LoadFailed(stage, message) when BCC
    failed (stage "compile" or "load") or DataplaneError when the child died."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "agent.bpf_loader", "--sock", str(child.fileno()), "--src", str(src)]
    argv += [f"--cflag={c}" for c in cflags]
    if layout_only:
        argv.append("--layout-only")
    try:
        proc = subprocess.Popen(argv, pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        parent.close()
        child.close()
        raise DataplaneError(f"cannot start the BPF loader ({argv[0]}): {e}") from e
    child.close()
    try:
        parent.settimeout(timeout)
        try:
            data, fds, _flags, _addr = socket.recv_fds(parent, 1 << 20, MAX_FDS)
        except socket.timeout:
            proc.kill()
            raise DataplaneError(f"the BPF loader sent nothing in {timeout:.0f} s") from None
        rc: Optional[int] = proc.wait(timeout=60)
    finally:
        parent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not data:
        for fd in fds:
            os.close(fd)
        raise DataplaneError(f"the BPF loader exited ({rc}) without an answer: its stderr above says why")
    msg = json.loads(data.decode())
    if "error" in msg:
        for fd in fds:
            os.close(fd)
        raise LoadFailed(msg.get("stage", "load"), msg["error"])
    maps_desc, functions = msg["maps"], msg["functions"]
    if fds and len(fds) != len(maps_desc) + len(functions):
        for fd in fds:
            os.close(fd)
        raise DataplaneError(f"the BPF loader sent {len(fds)} fds for {len(maps_desc)} maps and "
                             f"{len(functions)} functions")
    maps = {m["name"]: (fds[i] if fds else -1, m) for i, m in enumerate(maps_desc)}
    funcs = {name: fds[len(maps_desc) + i] for i, name in enumerate(functions)}
    return Loaded(maps, funcs)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.bpf_loader",
                                 description="(internal) compile and load the XDP program for the agent")
    ap.add_argument("--sock", type=int, required=True, help="inherited SOCK_SEQPACKET fd to answer on")
    ap.add_argument("--src", required=True, help="the BPF C source")
    ap.add_argument("--cflag", action="append", default=[], help="a compiler flag (repeat)")
    ap.add_argument("--layout-only", action="store_true", help="describe the maps; load nothing")
    a = ap.parse_args(argv)
    return child_main(a.sock, a.src, a.cflag, a.layout_only)


if __name__ == "__main__":
    sys.exit(main())
