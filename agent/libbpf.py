"""The host side of the XDP dataplane: libbpf through ctypes (pin, attach, query, the
BPF_PROG_TEST_RUN calls) and the checks of what the host must provide (BCC, kernel headers,
bpffs, the kernel's HZ), plus the interface helpers (ifindex, driver, MAC).

These mirror libbpf's and the kernel's ABI (stable, versioned by their ``sz`` fields), never our
own structs: the map layouts come from BCC's type descriptors (``agent.bpf_loader``, ``agent.bpfmap``), in ``agent.dataplane``, which
drives the program and its maps on top of this module. Every check fails with what to install
or mount instead of a clang error 200 lines long.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

IfRef = Union[str, int]

# XDP verdicts (uapi enum xdp_action)
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICT_NAMES = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}

# uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = range(5)
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
ATTACHED_MODE_NAMES = {XDP_ATTACHED_DRV: "native", XDP_ATTACHED_SKB: "generic", XDP_ATTACHED_HW: "offload"}

ARPHRD_ETHER = 1
SIOCGIFHWADDR = 0x8927


class DataplaneError(RuntimeError):
    """The dataplane could not do what was asked; the message says why."""


class EnvironmentProblem(DataplaneError):
    """Something the host must provide is missing (BCC, kernel headers, bpffs, BPF rights);
    the message says what to install or mount."""


# ---- libbpf through ctypes ---------------------------------------------------------------
# These mirror libbpf's and the kernel's ABI structs (stable, versioned by their sz field),
# not our own: our map layouts come from BCC's type descriptors (agent.bpfmap).

class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class _XdpMd(ctypes.Structure):  # uapi struct xdp_md, the test-run context
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("rx_queue_index", ctypes.c_uint32),
                ("egress_ifindex", ctypes.c_uint32)]


class _XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class _XdpQueryOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_id", ctypes.c_uint32), ("drv_prog_id", ctypes.c_uint32),
                ("hw_prog_id", ctypes.c_uint32), ("skb_prog_id", ctypes.c_uint32),
                ("attach_mode", ctypes.c_uint8)]


class _ProgInfoPrefix(ctypes.Structure):  # the first fields of uapi struct bpf_prog_info
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16)]


_libbpf = None


def libbpf() -> ctypes.CDLL:
    global _libbpf
    if _libbpf is None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as e:
            raise EnvironmentProblem(f"libbpf.so.1 not found ({e}): run `make setup` "
                                     "(apt-get install libbpf1 python3-bpfcc)") from e
        lib.bpf_obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
        lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        lib.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32,
                                       ctypes.POINTER(_XdpAttachOpts)]
        lib.bpf_xdp_query.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_XdpQueryOpts)]
        lib.bpf_prog_get_fd_by_id.argtypes = [ctypes.c_uint32]
        lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        lib.bpf_map_delete_elem.argtypes = [ctypes.c_int, ctypes.c_void_p]
        lib.bpf_map_get_next_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
        _libbpf = lib
    return _libbpf


def check(ret: int, what: str) -> int:
    """libbpf 1.x returns -errno (and sets errno)."""
    if ret < 0:
        err = -ret if ret != -1 else ctypes.get_errno()
        raise DataplaneError(f"{what}: {os.strerror(err)} (errno {err})")
    return ret


def pinned_fd(path: Union[str, Path]) -> Optional[int]:
    """An fd for a pinned object, or None if nothing is pinned there."""
    fd = libbpf().bpf_obj_get(str(path).encode())
    if fd < 0:
        err = -fd if fd != -1 else ctypes.get_errno()
        if err == errno.ENOENT:
            return None
        raise DataplaneError(f"bpf_obj_get({path}): {os.strerror(err)}")
    return fd


def prog_info(fd: int) -> tuple[int, str]:
    """(id, name) of a loaded program."""
    info = _ProgInfoPrefix()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check(libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "bpf_obj_get_info_by_fd")
    return info.id, info.name.decode(errors="replace")


def xdp_query(ifindex: int) -> tuple[int, Optional[str]]:
    """(program id or 0, "native" | "generic" | ... | None) attached to an interface."""
    opts = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
    check(libbpf().bpf_xdp_query(ifindex, 0, ctypes.byref(opts)), f"bpf_xdp_query(ifindex {ifindex})")
    if opts.attach_mode == XDP_ATTACHED_NONE:
        return 0, None
    prog_id = opts.prog_id or opts.drv_prog_id or opts.skb_prog_id or opts.hw_prog_id
    return prog_id, ATTACHED_MODE_NAMES.get(opts.attach_mode, "multi")


def xdp_attach_fd(ifindex: int, prog_fd: int, flags: int, old_prog_fd: Optional[int] = None) -> None:
    """Attach (prog_fd >= 0) or detach (prog_fd == -1) through netlink. With old_prog_fd the
    kernel swaps only if that program is the one attached (XDP_FLAGS_REPLACE): atomic."""
    opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd or 0)
    if old_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
    check(libbpf().bpf_xdp_attach(ifindex, prog_fd, flags, ctypes.byref(opts)),
           f"bpf_xdp_attach(ifindex {ifindex}, flags {flags:#x})")


@dataclass(frozen=True)
class TestRunResult:
    verdict: int
    frame: bytes
    duration_ns: int  # kernel-measured average per repetition

    @property
    def verdict_name(self) -> str:
        return VERDICT_NAMES.get(self.verdict, str(self.verdict))


def prog_test_run(prog_fd: int, frame: bytes, ingress_ifindex: int = 0, repeat: int = 1) -> TestRunResult:
    """Run an XDP program on ``frame`` through BPF_PROG_TEST_RUN (no network needed).
    ``ingress_ifindex`` must name a real interface in the caller's network namespace (the
    kernel checks it); 0 leaves it unset. With ``repeat > 1`` the kernel reuses one buffer:
    a program that rewrites in place sees its own output from the second run on."""
    buf_in = ctypes.create_string_buffer(bytes(frame), len(frame))
    out_size = len(frame) + 512  # room for frames grown with bpf_xdp_adjust_head
    buf_out = ctypes.create_string_buffer(out_size)
    ctx = _XdpMd(data=0, data_end=len(frame), ingress_ifindex=ingress_ifindex)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(buf_in),
                        data_out=ctypes.addressof(buf_out), data_size_in=len(frame),
                        data_size_out=out_size, repeat=repeat)
    if ingress_ifindex:
        opts.ctx_in = ctypes.addressof(ctx)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    check(libbpf().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "bpf_prog_test_run_opts")
    return TestRunResult(opts.retval, buf_out.raw[:opts.data_size_out], opts.duration)


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def prog_test_run_live(prog_fd: int, frame: bytes, ifindex: int, repeat: int, batch_size: int = 0) -> None:
    """Run an XDP program ``repeat`` times on copies of ``frame`` in live-frames mode: the
    verdicts act for real (XDP_TX sends out of ``ifindex``, which must be in the caller's
    network namespace). The benchmark's packet generator (bpf/xdp_tx.c)."""
    buf_in = ctypes.create_string_buffer(bytes(frame), len(frame))
    ctx = _XdpMd(data=0, data_end=len(frame), ingress_ifindex=ifindex)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(buf_in), data_size_in=len(frame),
                        ctx_in=ctypes.addressof(ctx), ctx_size_in=ctypes.sizeof(ctx), repeat=repeat,
                        flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch_size)
    check(libbpf().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "bpf_prog_test_run_opts (live frames)")


# ---- environment ---------------------------------------------------------------------------

def import_bcc():
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc; not on PyPI)
        return bcc
    except ImportError as e:
        raise EnvironmentProblem(
            f"cannot import bcc ({e}): BCC's Python binding comes from Debian, not PyPI: "
            "run `make setup` (apt-get install python3-bpfcc libbpfcc bpftool) and use "
            "/usr/bin/python3 or a venv made with --system-site-packages") from e


def kernel_headers_dir() -> Optional[Path]:
    """Where BCC will find kernel headers, or None."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    candidates = [Path(env)] if env else []
    candidates.append(Path("/lib/modules") / os.uname().release / "build")
    for c in candidates:
        if (c / "include" / "linux" / "kconfig.h").exists() or (c / "include" / "generated").exists():
            return c
    if Path("/sys/kernel/kheaders.tar.xz").exists():  # CONFIG_IKHEADERS
        return Path("/sys/kernel/kheaders.tar.xz")
    return None


BPF_FS_MAGIC = 0xCAFE4A11
BPFFS_ROOT = "/sys/fs/bpf"
# `ip netns exec` remounts /sys in a private mount namespace, hiding /sys/fs/bpf. A bind mount
# of the host's /sys/fs/bpf outside /sys (same bpffs instance) stays visible there.
BPFFS_ALIAS = os.environ.get("METALXDP_BPFFS_ALIAS", "/run/metalxdp/bpffs")


class _StatFs(ctypes.Structure):  # struct statfs (x86_64/arm64 glibc): only f_type is read
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def is_bpffs(path: Union[str, Path]) -> bool:
    """Is ``path`` (or its nearest existing ancestor) on a bpf filesystem?"""
    libc = ctypes.CDLL(None, use_errno=True)
    p = os.path.abspath(path)
    while not os.path.exists(p) and p != "/":
        p = os.path.dirname(p)
    buf = _StatFs()
    if libc.statfs(p.encode(), ctypes.byref(buf)) != 0:
        return False
    return (buf.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def bpffs_mounted(path: Union[str, Path]) -> bool:
    return is_bpffs(path)


def resolve_bpffs_dir(path: str) -> str:
    """The path through which this process reaches ``path``'s bpffs. Normally ``path`` itself;
    inside `ip netns exec` (private mount namespace, /sys remounted) the same directory
    through the bind-mount alias (METALXDP_BPFFS_ALIAS, default /run/metalxdp/bpffs) or through
    /proc/<parent>/root when the parent lives in the host's mount namespace."""
    path = os.path.abspath(path)
    if is_bpffs(path):
        return path
    candidates = []
    if path == BPFFS_ROOT or path.startswith(BPFFS_ROOT + "/"):
        candidates.append(BPFFS_ALIAS + path[len(BPFFS_ROOT):])
    candidates.append(f"/proc/{os.getppid()}/root{path}")
    for c in candidates:
        try:
            if is_bpffs(c) and is_bpffs(os.path.dirname(c.rstrip("/")) or c):
                return c
        except OSError:
            continue
    raise EnvironmentProblem(
        f"{path} is not on a bpf filesystem: `mount -t bpf bpf /sys/fs/bpf` (`make setup` does it). "
        "Inside `ip netns exec` (which remounts /sys) bind-mount the host's /sys/fs/bpf at "
        f"{BPFFS_ALIAS} first (`mount --bind /sys/fs/bpf {BPFFS_ALIAS}`), or start the agent "
        "with `nsenter --net=/run/netns/NS`; in a DaemonSet mount the host's /sys/fs/bpf "
        "(hostPath) so pinned maps survive agent restarts")


def bcc_available() -> None:
    """Raise EnvironmentProblem unless BCC's binding can be imported - without importing it
    (the agent itself never loads BCC and LLVM: ``agent.bpf_loader`` compiles in a child)."""
    import importlib.util
    if importlib.util.find_spec("bcc") is None:
        import_bcc()   # raises with what to install


def check_environment(bpffs_dir: Optional[str]) -> None:
    """Fail early with what to install or mount (instead of a clang error 200 lines long)."""
    bcc_available()
    if kernel_headers_dir() is None:
        rel = os.uname().release
        raise EnvironmentProblem(
            f"kernel headers not found for {rel}: BCC compiles the XDP program at start and "
            f"needs /lib/modules/{rel}/build. Run `make setup` (installs linux-headers and "
            f"links /lib/modules/{rel}/build and source), or set BCC_KERNEL_SOURCE; in a "
            "DaemonSet mount the host's /lib/modules and /usr/src read-only.")
    if bpffs_dir is not None:
        resolve_bpffs_dir(bpffs_dir)


# ---- interfaces ----------------------------------------------------------------------------

def interface_index(ifname: IfRef) -> int:
    """ifindex in the current network namespace (the agent runs inside the node's netns)."""
    if isinstance(ifname, int):
        return ifname
    try:
        return socket.if_nametoindex(ifname)
    except OSError as e:
        raise DataplaneError(f"no interface {ifname!r} in this network namespace") from e


def interface_driver(ifname: str) -> str:
    """The driver name ethtool reports ("veth", "mlx5_core", ...), or "" if unknown."""
    ETHTOOL_GDRVINFO, SIOCETHTOOL = 0x00000003, 0x8946
    info = bytearray(struct.pack("I", ETHTOOL_GDRVINFO) + b"\0" * 192)
    buf = ctypes.create_string_buffer(bytes(info), len(info))
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            return ""
    return buf.raw[4:36].split(b"\0", 1)[0].decode(errors="replace")


def interface_mac(ifname: str) -> tuple[int, bytes]:
    """(ARPHRD type, MAC) of an interface in the current network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", ifname.encode()))
        except OSError as e:
            raise DataplaneError(f"cannot read the MAC of {ifname!r}: {e}") from e
    family = struct.unpack_from("H", res, 16)[0]
    return family, res[18:24]


# ---- the kernel's HZ (the liveness gate counts jiffies) ------------------------------------------

KNOWN_HZ = (100, 250, 300, 1000)


def hz_from_config(text: str) -> Optional[int]:
    m = re.search(r"^CONFIG_HZ=(\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def snap_hz(measured: float) -> int:
    """A measured tick rate, snapped to the nearest HZ Linux offers when within 15 %."""
    best = min(KNOWN_HZ, key=lambda h: abs(h - measured))
    return best if abs(best - measured) <= 0.15 * best else max(1, round(measured))


def config_hz() -> Optional[tuple[int, str]]:
    for path in ("/proc/config.gz", f"/boot/config-{os.uname().release}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                hz = hz_from_config(f.read())
        except OSError:
            continue
        if hz:
            return hz, path
    return None


def jiffies_for_ms(ms: int, hz: int) -> int:
    """The gate's window in jiffies: rounded up, at least one tick (0 ms: gate off)."""
    return 0 if ms <= 0 else max(1, -(-int(ms) * hz // 1000))
