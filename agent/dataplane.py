"""The XDP dataplane of the agent: compiles ``bpf/xdp_vip.c`` with BCC (in a short-lived child,
``agent.bpf_loader``: this process never keeps LLVM resident), pins the program and
its maps under a bpffs directory, attaches it to interfaces and drives its maps (VIPs,
interface MACs, liveness heartbeat) and reads its per-VIP counters.

Lifetime ("pinned-lifetime design"): the program and maps outlive the agent process on
purpose, so ARP/NDP answers never stop while the agent restarts.

- ``open()`` finds ``<bpffs_dir>/mx_meta``; if the version stored there equals the hash of
  the C sources + cflags, it *adopts* the pinned program and maps (VIPs, counters and
  heartbeat survive). Otherwise it unpins the old maps (the attached old program keeps
  them alive), builds fresh ones and a fresh program.
- ``attach(ifname)`` leaves our attached program alone; replaces an older metalxdp program
  atomically (``XDP_FLAGS_REPLACE`` with the old program's fd: no instant without a
  program); refuses to replace a foreign XDP program.
- ``close()`` keeps everything attached and pinned unless ``detach_on_exit=True``, which
  detaches from every interface it attached and removes the pins. Without a bpffs
  directory (``bpffs_dir=None``: tests, benchmarks) nothing is pinned and ``close()``
  always detaches.

    with Dataplane("/sys/fs/bpf/metalxdp/node1") as dp:
        dp.set_interface("eth0")
        dp.announce("192.0.2.200", "eth0")
        dp.attach("eth0")           # after the maps are filled: an upgrade swaps atomically
        dp.heartbeat()
"""
from __future__ import annotations

import ctypes
import hashlib
import heapq
import ipaddress
import os
import re
import socket
import time
from pathlib import Path
from typing import Iterable, Optional, Union

from metalxdp.log import get_logger

from .libbpf import (ARPHRD_ETHER, MODE_FLAGS, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, XDP_FLAGS_UPDATE_IF_NOEXIST,
                     DataplaneError, EnvironmentProblem, IfRef, TestRunResult, check, check_environment, config_hz,
                     import_bcc, interface_driver, interface_index, interface_mac, jiffies_for_ms, kernel_headers_dir,
                     libbpf, pinned_fd, prog_info, prog_test_run, resolve_bpffs_dir, snap_hz, xdp_attach_fd, xdp_query)
from . import bpf_loader
from .bpfmap import Map
from .metrics import Attachment, XDPState
# re-exported: callers (tests, benchmarks) that take the whole dataplane API from here
from .libbpf import XDP_PASS, XDP_TX, bpffs_mounted, hz_from_config  # noqa: F401

log = get_logger("agent")

BPF_SRC_DIR = Path(__file__).resolve().parent.parent / "bpf"
BPF_MAIN = BPF_SRC_DIR / "xdp_vip.c"
PROG_FUNC = "xdp_vip"
HEARTBEAT_FUNC = "xdp_heartbeat"   # run through BPF_PROG_TEST_RUN, never attached
_HEARTBEAT_FRAME = bytes(14)       # the kernel wants at least an Ethernet header
DEFAULT_BPFFS_DIR = "/sys/fs/bpf/metalxdp"
PROG_PIN = "prog_xdp_vip"
HEARTBEAT_PIN = "prog_heartbeat"   # the heartbeat program is bound to the pinned mx_liveness
MAP_NAMES = ("mx_vips", "mx_stats", "mx_liveness", "mx_meta", "mx_global")

VIP_F_ETP_LOCAL_MISDIRECT = 1  # mirrors bpf/vip_consts.h; checked against it in the unit tests
VIP_F_HANDOFF = 2              # likewise


def source_version(cflags: Iterable[str] = ()) -> int:
    """64-bit hash of every bpf/*.c|h file and the cflags that change the maps or program:
    the pinned state is adopted only by an agent built from the same sources."""
    h = hashlib.sha256()
    for p in sorted(BPF_SRC_DIR.glob("*.[ch]")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    for f in cflags:
        h.update(f.encode() + b"\0")
    return int.from_bytes(h.digest()[:8], "little") or 1


def global_counter_names() -> dict[int, str]:
    """G_* indexes of the mx_global map, read from vip_consts.h (no copy kept here)."""
    text = (BPF_SRC_DIR / "vip_consts.h").read_text()
    return {int(v): n[2:].lower() for n, v in re.findall(r"#define (G_[A-Z_]+) (\d+)\b", text)
            if n != "G_COUNTERS"}



_kernel_hz: Optional[tuple[int, str]] = None   # (HZ, where it came from), once per process


# ---- the dataplane ---------------------------------------------------------------------------

class Dataplane:
    def __init__(self, bpffs_dir: Optional[str] = DEFAULT_BPFFS_DIR, *, xdp_mode: str = "auto",
                 detach_on_exit: bool = False, liveness_max_age_ms: int = 0,
                 cflags: Iterable[str] = ()):
        if xdp_mode not in ("auto", "native", "generic"):
            raise ValueError(f"xdp_mode must be auto, native or generic, not {xdp_mode!r}")
        self.bpffs_dir = os.path.abspath(bpffs_dir) if bpffs_dir else None
        self.xdp_mode = xdp_mode
        self.detach_on_exit = detach_on_exit or self.bpffs_dir is None
        self.liveness_max_age_ms = liveness_max_age_ms
        self.cflags = list(cflags)
        self.version = source_version(self.cflags)
        self.bpffs_path = self.bpffs_dir  # how this process reaches it (see resolve_bpffs_dir)
        self.adopted = False           # True when open() kept a pinned program of our version
        self.prog_fd = -1
        self._hb_fd = -1
        self.prog_id = 0
        self.attached: dict[int, str] = {}   # ifindex -> "native" | "generic"
        self._open = False
        self._tables: dict[str, Map] = {}     # name -> map (agent.bpfmap, by fd: no BCC here)
        self._free_slots: Optional[list[int]] = None   # a heap; read from the map on first use
        self._progs: dict[str, int] = {}      # function name -> fd, from the loader
        self._macs: dict[int, bytes] = {}    # ifindex -> MAC answered with there

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "Dataplane":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _pin(self, name: str) -> str:
        assert self.bpffs_path
        return os.path.join(self.bpffs_path, name)

    def _pinned_version(self) -> Optional[int]:
        fd = pinned_fd(self._pin("mx_meta"))
        if fd is None:
            return None
        try:
            key, value = ctypes.c_uint32(0), ctypes.c_uint64(0)  # struct meta {__u64 version}: frozen layout
            if libbpf().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) != 0:
                return None
            return value.value
        finally:
            os.close(fd)

    def open(self) -> "Dataplane":
        check_environment(self.bpffs_dir)
        if self.bpffs_dir:
            reached = resolve_bpffs_dir(self.bpffs_dir)
            if reached != self.bpffs_dir:
                log.info("bpffs reached through another path (ip netns exec hides /sys/fs/bpf)",
                         event="bpffsAlias", dir=self.bpffs_dir, via=reached)
            self.bpffs_path = reached
        cflags = [f"-I{BPF_SRC_DIR}", *self.cflags]
        prog_pin_fd = None
        if self.bpffs_dir:
            os.makedirs(self.bpffs_path, exist_ok=True)
            cflags.append(f'-DPIN_DIR="{self.bpffs_path}"')
            pinned = self._pinned_version()
            prog_pin_fd = pinned_fd(self._pin(PROG_PIN))
            hb_pin_fd = pinned_fd(self._pin(HEARTBEAT_PIN))
            maps_there = all(os.path.exists(self._pin(m)) for m in MAP_NAMES)
            if pinned == self.version and prog_pin_fd is not None and hb_pin_fd is not None and maps_there:
                self.adopted = True
                self._hb_fd = hb_pin_fd
            else:
                for fd in (prog_pin_fd, hb_pin_fd):
                    if fd is not None:
                        os.close(fd)
                prog_pin_fd = None
                if pinned is not None or os.listdir(self.bpffs_path):
                    log.info("pinned dataplane has another version: building a new one",
                             event="xdpVersionChange", old=f"{pinned or 0:016x}", new=f"{self.version:016x}",
                             dir=self.bpffs_dir)
                # The attached old program keeps its own maps alive; new pins get new maps.
                self._unpin_all()
        if self.adopted:
            # Compiled for the maps' layouts only, without PIN_DIR: BCC would open pinned maps by
            # id (BPF_MAP_GET_FD_BY_ID), which needs CAP_SYS_ADMIN the DaemonSet does not grant
            # ("could not open bpf map: mx_global, error: Operation not permitted" after a
            # restart). The pins are opened by path below (BPF_OBJ_GET: CAP_BPF is enough).
            cflags = [c for c in cflags if not c.startswith("-DPIN_DIR=")]
        # BCC (clang + LLVM, ~120 MB resident) runs in a short-lived child: agent.bpf_loader
        try:
            loaded = bpf_loader.load(BPF_MAIN, cflags, layout_only=self.adopted)
        except bpf_loader.LoadFailed as e:
            for fd in (prog_pin_fd, self._hb_fd if self.adopted else None):
                if fd is not None and fd >= 0:
                    os.close(fd)
            self._hb_fd = -1
            missing = missing_capabilities()
            if missing:   # BCC's "Failed to compile" also covers a map it was not allowed to create
                raise DataplaneError(f"BCC could not load {BPF_MAIN} ({e}): this process lacks the "
                                     f"capabilities {', '.join('CAP_' + c for c in missing)} (the DaemonSet "
                                     "adds BPF, PERFMON, NET_ADMIN, NET_RAW, NET_BIND_SERVICE: docs/install.md)") from e
            if e.stage == "load":
                raise EnvironmentProblem(f"the kernel refused the XDP program ({e}): the agent needs "
                                         "root or CAP_BPF+CAP_NET_ADMIN and a kernel with BPF syscall "
                                         "and XDP support") from e
            raise DataplaneError(f"BCC could not compile {BPF_MAIN} ({e}); its stderr above has "
                                 "clang's message. Kernel headers: "
                                 f"{kernel_headers_dir()}") from e
        self._progs = dict(loaded.functions)
        self._open = True
        try:
            if self.adopted:
                self.prog_fd = prog_pin_fd
                self._tables = {name: self._pinned_table(name, loaded.maps[name][1]) for name in MAP_NAMES}
            else:
                self._tables = {name: Map(name, fd, d["type"], d["key"], d["leaf"], d["max_entries"])
                                for name, (fd, d) in loaded.maps.items()}
                self.prog_fd = os.dup(self._progs[PROG_FUNC])
                self._hb_fd = os.dup(self._progs[HEARTBEAT_FUNC])
                if self.bpffs_dir:
                    check(libbpf().bpf_obj_pin(self.prog_fd, self._pin(PROG_PIN).encode()), "pin program")
                    check(libbpf().bpf_obj_pin(self._hb_fd, self._pin(HEARTBEAT_PIN).encode()), "pin heartbeat")
                    self.table("mx_meta")[0] = self.table("mx_meta").Leaf(self.version)
        except Exception:
            self._release()
            raise
        self.prog_id, _ = prog_info(self.prog_fd)
        self.heartbeat()   # before the window: a fresh map's heartbeat is 0, "long dead"
        self.set_liveness_max_age(self.liveness_max_age_ms)
        log.info("XDP dataplane ready", event="xdpLoaded", adopted=self.adopted, prog_id=self.prog_id,
                 version=f"{self.version:016x}", dir=self.bpffs_dir)
        return self

    def load_function(self, name: str) -> int:
        """fd of another XDP function of the compiled object (sharing its maps): benchmarks build
        with ``cflags=["-DMX_BENCH_HARNESS"]`` and use the wrappers of bpf/bench_harness.h. The
        loader loads every function of a fresh build; owned by the dataplane, closed with it."""
        if not self._open:
            raise DataplaneError("dataplane not open")
        try:
            return self._progs[name]
        except KeyError:
            raise DataplaneError(f"no function {name!r} loaded (adopted pinned state loads only "
                                 f"the pinned program; have: {sorted(self._progs)})") from None

    def close(self) -> None:
        """Keep the program attached and pinned (hitless restart) unless detach_on_exit."""
        if not self._open:
            return
        if self.detach_on_exit:
            # also where an earlier agent attached the program this one adopted: an agent that
            # never announced on an interface does not have it in ``attached`` (found by the e2e
            # uninstall after a rollout: the program stayed on a node whose agent was replaced)
            for ifindex in sorted(set(self.attached) | set(self._running_ours())):
                try:
                    self.detach(ifindex)
                except DataplaneError as e:
                    log.warning("could not detach", event="xdpDetachFailed", ifindex=ifindex, error=str(e))
            if self.bpffs_dir:
                self._unpin_all()
                try:
                    os.rmdir(self.bpffs_path)
                except OSError:
                    pass
        self._release()

    def _release(self) -> None:
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        if self._hb_fd >= 0:
            os.close(self._hb_fd)
            self._hb_fd = -1
        for t in self._tables.values():
            t.close()
        self._tables = {}
        self._free_slots = None
        for fd in self._progs.values():
            os.close(fd)
        self._progs = {}
        self._open = False

    def _running_ours(self) -> list[int]:
        """Interfaces of this network namespace that run our program now."""
        out = []
        for ifindex, _name in socket.if_nameindex():
            try:
                if self.prog_id and xdp_query(ifindex)[0] == self.prog_id:
                    out.append(ifindex)
            except DataplaneError:
                continue
        return out

    def _unpin_all(self) -> None:
        if not self.bpffs_dir or not os.path.isdir(self.bpffs_path):
            return
        for name in (*MAP_NAMES, PROG_PIN, HEARTBEAT_PIN):
            try:
                os.unlink(self._pin(name))
            except FileNotFoundError:
                pass

    @staticmethod
    def purge(bpffs_dir: str, ifnames: Iterable[IfRef] = ()) -> None:
        """Detach any metalxdp program from ``ifnames`` and remove the pins (cleanup tool)."""
        for ifname in ifnames:
            try:
                ifindex = interface_index(ifname)
            except DataplaneError:
                continue
            prog_id, mode = xdp_query(ifindex)
            if prog_id:
                fd = check(libbpf().bpf_prog_get_fd_by_id(prog_id), "bpf_prog_get_fd_by_id")
                try:
                    if prog_info(fd)[1].startswith(PROG_FUNC):
                        xdp_attach_fd(ifindex, -1, MODE_FLAGS.get(mode or "", 0), old_prog_fd=fd)
                finally:
                    os.close(fd)
        if os.path.isdir(bpffs_dir):
            for name in (*MAP_NAMES, PROG_PIN, HEARTBEAT_PIN):
                try:
                    os.unlink(os.path.join(bpffs_dir, name))
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(bpffs_dir)
            except OSError:
                pass

    # ---- tables ---------------------------------------------------------------------------
    def _pinned_table(self, name: str, desc: dict) -> Map:
        """The pinned map ``name``, typed by the loader's layout of the same sources."""
        fd = pinned_fd(self._pin(name))
        if fd is None:
            raise DataplaneError(f"pinned map {self._pin(name)} could not be opened")
        return Map(name, fd, desc["type"], desc["key"], desc["leaf"], desc["max_entries"])

    def table(self, name: str) -> Map:
        if not self._open:
            raise DataplaneError("dataplane not open")
        try:
            return self._tables[name]
        except KeyError:
            raise DataplaneError(f"no map {name!r}") from None

    @staticmethod
    def _addr_fields(ip: Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]) -> tuple[int, bytes]:
        addr = ipaddress.ip_address(ip)
        return addr.version, addr.packed.ljust(16, b"\0")

    def vip_key(self, ip, ifname: IfRef):
        """The mx_vips/mx_stats key, built with BCC's generated ctypes class."""
        family, packed = self._addr_fields(ip)
        key = self.table("mx_vips").Key()
        key.ifindex = interface_index(ifname)
        key.family = family
        ctypes.memmove(key.addr, packed, 16)
        return key

    @staticmethod
    def _key_ip(key) -> str:
        raw = bytes(key.addr)
        return str(ipaddress.ip_address(raw[:4] if key.family == 4 else raw))

    # ---- control ------------------------------------------------------------------------
    def set_interface(self, ifname: IfRef, mac: Optional[bytes] = None) -> int:
        """Record the MAC the program answers with on this interface (copied into each of its
        VIP entries, so the hot path does one lookup); returns its ifindex. ``mac`` defaults
        to the interface's own; non-Ethernet interfaces are refused."""
        ifindex = interface_index(ifname)
        if mac is None:
            name = socket.if_indextoname(ifindex) if isinstance(ifname, int) else ifname
            hwtype, mac = interface_mac(name)
            if hwtype != ARPHRD_ETHER:
                raise DataplaneError(f"{name} is not an Ethernet interface (ARPHRD {hwtype}): "
                                     "ARP/NDP answering needs Ethernet")
        mac = bytes(mac)
        self._macs[ifindex] = mac
        vips = self.table("mx_vips")
        for k, v in list(vips.items()):   # a changed MAC reaches the VIPs already announced
            if k.ifindex == ifindex and bytes(v.mac) != mac:
                ctypes.memmove(v.mac, mac, 6)
                vips[k] = v
        return ifindex

    def _free_slot(self) -> int:
        """The lowest counter slot no VIP uses. The free slots are read from the map once (what
        an adopted map holds), then kept here: this process is the map's only writer, and a scan
        per announce made 10,000 announces take minutes (each one read the whole map)."""
        if self._free_slots is None:
            used = {v.slot for v in self.table("mx_vips").values()}
            self._free_slots = [s for s in range(self.table("mx_stats").max_entries) if s not in used]
        if not self._free_slots:
            raise DataplaneError("no free counter slot: more VIPs than MAX_VIPS")
        return heapq.heappop(self._free_slots)

    def _release_slot(self, slot: int) -> None:
        if self._free_slots is not None:
            heapq.heappush(self._free_slots, slot)

    def _zero_slot(self, slot: int) -> None:
        stats = self.table("mx_stats")
        stats[stats.Key(slot)] = stats.Leaf()

    def announce(self, ip, ifname: IfRef, etp_local_misdirect: bool = False, handoff: bool = False) -> None:
        """Answer ARP/NS for ``ip`` on ``ifname`` (and count its traffic there). Re-announcing
        keeps the counters (also across agent restarts)."""
        key = self.vip_key(ip, ifname)
        if key.ifindex not in self._macs:
            self.set_interface(ifname)
        vips = self.table("mx_vips")
        leaf = vips.get(key)
        new = leaf is None
        if new:
            leaf = vips.Leaf()
            leaf.slot = self._free_slot()
        try:
            if new:
                self._zero_slot(leaf.slot)
            # handoff: the VIP moved to another node; answer only unicast probes (see vip_consts.h)
            leaf.flags = (VIP_F_ETP_LOCAL_MISDIRECT if etp_local_misdirect else 0) | (VIP_F_HANDOFF if handoff else 0)
            ctypes.memmove(leaf.mac, self._macs[key.ifindex], 6)
            vips[key] = leaf
        except BaseException:
            if new:   # the entry was not written: its slot is free again
                self._release_slot(leaf.slot)
            raise

    def withdraw(self, ip, ifname: IfRef) -> None:
        """Stop answering for ``ip`` on ``ifname``; its counters go too (the slot is zeroed
        after the entry is gone, so the program can no longer reach it)."""
        key = self.vip_key(ip, ifname)
        vips = self.table("mx_vips")
        leaf = vips.get(key)
        if leaf is None:
            return
        del vips[key]
        self._zero_slot(leaf.slot)
        self._release_slot(leaf.slot)

    def withdraw_all(self) -> None:
        """No VIP answered any more (the tests' clean slate); slots are zeroed when reused."""
        self.table("mx_vips").clear()
        self._free_slots = None

    def announced(self) -> list[tuple[str, int, int]]:
        """[(ip, ifindex, flags)] currently in the VIP map (after a restart: what survived)."""
        return sorted((self._key_ip(k), k.ifindex, v.flags) for k, v in self.table("mx_vips").items())

    def heartbeat(self) -> None:
        """Tell the liveness gate the agent is alive: runs xdp_heartbeat (BPF_PROG_TEST_RUN, a
        few µs), which stamps the kernel's jiffies and CLOCK_MONOTONIC into mx_liveness."""
        prog_test_run(self._hb_fd, _HEARTBEAT_FRAME)

    def kernel_hz(self) -> int:
        """The kernel's HZ: from the kernel config (/proc/config.gz or /boot), else measured by
        two heartbeats 250 ms apart; once per process."""
        global _kernel_hz
        if _kernel_hz is None:
            found = config_hz()
            if found is None:
                t = self.table("mx_liveness")
                self.heartbeat()
                a = t[0]
                time.sleep(0.25)
                self.heartbeat()
                b = t[0]
                measured = (b.heartbeat_jiffies - a.heartbeat_jiffies) * 1e9 / max(1, b.heartbeat_ns - a.heartbeat_ns)
                found = (snap_hz(measured), f"measured {measured:.1f}/s")
            _kernel_hz = found
            log.info("kernel tick rate for the liveness gate", event="kernelHz", hz=found[0], source=found[1])
        return _kernel_hz[0]

    def liveness(self) -> tuple[int, int, int]:
        """(max_age_ns, heartbeat_ns, now_ns) of the liveness gate, clocks in CLOCK_MONOTONIC
        (``agent.status_report.liveness_gate`` says whether it is open)."""
        leaf = self.table("mx_liveness")[0]
        return int(leaf.max_age_ns), int(leaf.heartbeat_ns), time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def set_liveness_max_age(self, ms: int) -> None:
        """Answers stop once the heartbeat is older than ``ms`` (to the tick); 0 disables the gate."""
        self.liveness_max_age_ms = ms
        hz = self.kernel_hz() if ms else 0
        t = self.table("mx_liveness")
        leaf = t[0]
        leaf.max_age_ns = int(ms) * 1_000_000
        leaf.max_age_jiffies = jiffies_for_ms(ms, hz) if ms else 0
        leaf.hz = hz
        t[0] = leaf

    def set_heartbeat_ns(self, ns: int) -> None:
        """Tests: pretend the last heartbeat was at ``ns`` (CLOCK_MONOTONIC; may be ahead)."""
        hz = self.kernel_hz()
        self.heartbeat()
        t = self.table("mx_liveness")
        leaf = t[0]
        shift = round((leaf.heartbeat_ns - ns) * hz / 1e9)
        leaf.heartbeat_jiffies = (leaf.heartbeat_jiffies - shift) & 0xFFFF_FFFF_FFFF_FFFF
        leaf.heartbeat_ns = ns
        t[0] = leaf

    # ---- counters -------------------------------------------------------------------------
    def counters(self) -> dict[tuple[str, int], dict[str, int]]:
        """{(ip, ifindex): {field: value summed over CPUs}}, fields from BCC's struct vip_stats."""
        t = self.table("mx_stats")
        fields = [f for f, _ in t.sLeaf._fields_]
        out = {}
        for k, v in self.table("mx_vips").items():
            per_cpu = t[t.Key(v.slot)]
            out[(self._key_ip(k), k.ifindex)] = {f: sum(getattr(c, f) for c in per_cpu) for f in fields}
        return out

    def vip_counters(self, ip, ifname: IfRef) -> dict[str, int]:
        return self.counters().get((str(ipaddress.ip_address(ip)), interface_index(ifname)), {})

    def global_counters(self) -> dict[str, int]:
        t = self.table("mx_global")
        return {name: sum(t[t.Key(i)]) for i, name in global_counter_names().items()}

    def xdp_state(self, now_ns: Optional[int] = None):
        """What the metrics need at scrape time (agent.metrics.XDPState): for every interface
        this process attached, whether the kernel still runs our program there (someone may
        have run ``ip link set dev X xdp off``); the liveness map; the global counters."""
        atts = []
        for ifindex, mode in sorted(self.attached.items()):
            try:
                name = socket.if_indextoname(ifindex)
                prog_id, _kernel_mode = xdp_query(ifindex)
            except (OSError, DataplaneError):   # the interface is gone
                name, prog_id = str(ifindex), 0
            atts.append(Attachment(name, mode, prog_id == self.prog_id))
        leaf = self.table("mx_liveness")[0]
        return XDPState(attachments=tuple(atts), heartbeat_ns=leaf.heartbeat_ns,
                        max_age_jiffies=leaf.max_age_jiffies, max_age_ns=leaf.max_age_ns, hz=leaf.hz,
                        now_ns=time.monotonic_ns() if now_ns is None else now_ns,
                        not_answered=self.global_counters())

    # ---- attach ------------------------------------------------------------------------
    def attach(self, ifname: IfRef, mode: Optional[str] = None) -> str:
        """Attach to ``ifname`` (call after filling the maps); returns the mode in use."""
        mode = mode or self.xdp_mode
        ifindex = interface_index(ifname)
        if ifindex not in self._macs:
            self.set_interface(ifname)
        current_id, current_mode = xdp_query(ifindex)
        if current_id == self.prog_id:
            self.attached[ifindex] = current_mode or "unknown"
            log.info("XDP program already attached: kept", event="xdpAdopted", ifname=str(ifname),
                     mode=current_mode, prog_id=self.prog_id)
            return self.attached[ifindex]
        if current_id:
            old_fd = check(libbpf().bpf_prog_get_fd_by_id(current_id), "bpf_prog_get_fd_by_id")
            try:
                old_name = prog_info(old_fd)[1]
                if not old_name.startswith(PROG_FUNC):
                    raise DataplaneError(f"{ifname} already runs another XDP program ({old_name!r}, id "
                                         f"{current_id}); metalxdp does not replace foreign programs")
                # An upgrade: swap in place, same mode, only if the old one is still there.
                xdp_attach_fd(ifindex, self.prog_fd, MODE_FLAGS.get(current_mode or "", 0), old_prog_fd=old_fd)
            finally:
                os.close(old_fd)
            self.attached[ifindex] = current_mode or "unknown"
            log.info("XDP program replaced atomically", event="xdpReplaced", ifname=str(ifname),
                     mode=current_mode, old_prog_id=current_id, prog_id=self.prog_id)
            return self.attached[ifindex]
        if mode in ("auto", "native"):
            try:
                xdp_attach_fd(ifindex, self.prog_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST)
                self.attached[ifindex] = "native"
                if isinstance(ifname, str) and interface_driver(ifname) == "veth":
                    log.warning("native XDP on a veth: replies (XDP_TX) are dropped unless the peer "
                                "veth runs an XDP program too (xdp_cli --pass-only), or use generic mode",
                                event="xdpVethNative", ifname=ifname)
            except DataplaneError as e:
                if mode == "native":
                    raise DataplaneError(f"native XDP on {ifname} failed: {e}") from e
                log.warning("native XDP unavailable, falling back to generic", event="xdpModeFallback",
                            ifname=str(ifname), error=str(e))
        if ifindex not in self.attached:
            xdp_attach_fd(ifindex, self.prog_fd, XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST)
            self.attached[ifindex] = "generic"
        log.info("XDP program attached", event="xdpAttached", ifname=str(ifname),
                 mode=self.attached[ifindex], prog_id=self.prog_id)
        return self.attached[ifindex]

    def detach(self, ifname: IfRef) -> None:
        """Detach our program (only ours: a replace-with-nothing against our fd)."""
        ifindex = interface_index(ifname)
        current_id, current_mode = xdp_query(ifindex)
        if current_id == self.prog_id:
            xdp_attach_fd(ifindex, -1, MODE_FLAGS.get(current_mode or "", 0), old_prog_fd=self.prog_fd)
            log.info("XDP program detached", event="xdpDetached", ifindex=ifindex)
        self.attached.pop(ifindex, None)

    # ---- testing ----------------------------------------------------------------------------
    def test_run(self, frame: bytes, ingress_ifindex: int = 1, repeat: int = 1) -> TestRunResult:
        return prog_test_run(self.prog_fd, frame, ingress_ifindex, repeat)


def attach_pass_program(ifname: str, mode: str = "native") -> int:
    """Attach bpf/xdp_pass.c (XDP_PASS for every frame) to ``ifname`` in the current netns and
    return its program id; an xdp_pass already there is kept. For veth peers in the lab: native
    XDP_TX on a veth is delivered only when its peer runs an XDP program. The attachment
    outlives this process; ``ip link set dev IF xdp off`` (or deleting the netns) removes it."""
    bcc = import_bcc()
    ifindex = interface_index(ifname)
    current_id, _ = xdp_query(ifindex)
    if current_id:
        fd = check(libbpf().bpf_prog_get_fd_by_id(current_id), "bpf_prog_get_fd_by_id")
        try:
            name = prog_info(fd)[1]
        finally:
            os.close(fd)
        if name == "xdp_pass":
            return current_id
        raise DataplaneError(f"{ifname} already runs XDP program {name!r}")
    check_environment(None)
    b = bcc.BPF(src_file=str(BPF_SRC_DIR / "xdp_pass.c").encode())
    try:
        fn = b.load_func(b"xdp_pass", bcc.BPF.XDP)
        xdp_attach_fd(ifindex, fn.fd, MODE_FLAGS[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST)
        return prog_info(fn.fd)[0]
    finally:
        b.cleanup()


# capability numbers (linux/capability.h) the XDP program needs; CAP_SYS_ADMIN covers all of them
_NEEDED_CAPS = {"NET_ADMIN": 12, "PERFMON": 38, "BPF": 39}
_CAP_SYS_ADMIN = 21


def missing_capabilities(status_text: Optional[str] = None) -> list[str]:
    """The capabilities of ``_NEEDED_CAPS`` not in this process's effective set (from
    /proc/self/status ``CapEff``); [] with CAP_SYS_ADMIN or when it cannot be read."""
    try:
        text = status_text if status_text is not None else Path("/proc/self/status").read_text()
        eff = int(next(line.split()[1] for line in text.splitlines() if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError, IndexError):
        return []
    if eff >> _CAP_SYS_ADMIN & 1:
        return []
    return [name for name, bit in _NEEDED_CAPS.items() if not eff >> bit & 1]
