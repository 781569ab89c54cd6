"""agent.bpfmap (BPF maps through the bpf syscall, no BCC) and agent.bpf_loader (BCC in a
short-lived child). The layout decoder and CPU-list parser are tables; the rest runs against
the real kernel (root, BCC and kernel headers: fails with the reason, never skips)."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import bpf_loader
from agent.bpfmap import Map, decode_type, parse_cpu_list
from agent.dataplane import BPF_MAIN, BPF_SRC_DIR, MAP_NAMES, Dataplane, DataplaneError
from agent.libbpf import DataplaneError as LibDataplaneError

ROOT = Path(__file__).resolve().parents[2]


def layout(cls) -> list:
    """(name, ctype, offset, size) of every field, nested structs flattened by name."""
    if not hasattr(cls, "_fields_"):
        return [(cls.__name__, ctypes.sizeof(cls))]
    out = []
    for f in cls._fields_:
        d = getattr(cls, f[0])
        out.append((f[0], f[1].__name__ if hasattr(f[1], "__name__") else str(f[1]), d.offset, d.size))
    return out


@pytest.mark.parametrize("desc, size, fields", [
    ("unsigned int", 4, None),
    ("unsigned long long", 8, None),
    (["vip_key", [["ifindex", "unsigned int"], ["family", "unsigned char"], ["pad", "unsigned char", [3]],
                  ["addr", "unsigned char", [16]]], "struct"], 24,
     [("ifindex", 0, 4), ("family", 4, 1), ("pad", 5, 3), ("addr", 8, 16)]),
    (["p", [["a", "unsigned char"], ["b", "unsigned int"]], "struct_packed"], 5, [("a", 0, 1), ("b", 1, 4)]),
    (["u", [["a", "unsigned char"], ["b", "unsigned long long"]], "union"], 8, [("a", 0, 1), ("b", 0, 8)]),
    (["bits", [["lo", "unsigned int", 3], ["hi", "unsigned int", 29]], "struct"], 4, None),
    (["outer", [["x", "unsigned short"], ["", [["y", "unsigned short"]], "struct"]], "struct"], 4, None),
    (["nodesc", [["x", "int"]]], 4, [("x", 0, 4)]),   # kind omitted: a struct
])
def test_decode_type_builds_bcc_s_layouts(desc, size, fields):
    cls = decode_type(desc)
    assert ctypes.sizeof(cls) == size
    if fields:
        assert [(n, o, s) for n, _t, o, s in layout(cls)] == fields


def test_decode_type_anonymous_member_is_reachable_by_its_fields_name():
    cls = decode_type(["outer", [["x", "unsigned short"], ["", [["y", "unsigned short"]], "struct"]], "struct"])
    v = cls()
    v.y = 7
    assert v.y == 7 and getattr(v, "__anon0").y == 7


def test_decode_type_bitfields_pack_into_one_word():
    cls = decode_type(["bits", [["lo", "unsigned int", 3], ["hi", "unsigned int", 29]], "struct"])
    v = cls()
    v.lo, v.hi = 5, 1
    assert bytes(v) == (5 | 1 << 3).to_bytes(4, sys.byteorder)


@pytest.mark.parametrize("desc", [
    "__int256",                                   # unknown C type
    ["s", [["x"]], "struct"],                     # field without a type
    ["s", [["x", "int", "bogus"]], "struct"],     # unknown third element
    ["s"],                                        # no field list
    42,
])
def test_decode_type_refuses_what_it_cannot_decode(desc):
    with pytest.raises(LibDataplaneError):
        decode_type(desc)


@pytest.mark.parametrize("text, n", [("0", 1), ("0-1\n", 2), ("0-3,5", 6), ("0,2-7", 8), ("0-127", 128)])
def test_parse_cpu_list(text, n):
    assert parse_cpu_list(text) == n


def test_loader_layouts_equal_bcc_s_own_tables():
    """The child's descriptors decode to BCC's own ctypes classes, field for field."""
    import bcc
    b = bcc.BPF(src_file=str(BPF_MAIN).encode(), cflags=[f"-I{BPF_SRC_DIR}"])
    try:
        loaded = bpf_loader.load(BPF_MAIN, [f"-I{BPF_SRC_DIR}"], layout_only=True)
        assert set(MAP_NAMES) <= set(loaded.maps)
        for name in MAP_NAMES:
            fd, d = loaded.maps[name]
            assert fd == -1   # layout only: nothing loaded, nothing handed over
            theirs = b[name.encode()]
            assert layout(decode_type(d["key"])) == layout(theirs.Key), name
            assert layout(decode_type(d["leaf"])) == layout(getattr(theirs, "sLeaf", theirs.Leaf)), name
            assert d["max_entries"] == theirs.max_entries
    finally:
        b.cleanup()


def test_a_map_through_the_syscall_reads_writes_deletes_and_iterates():
    loaded = bpf_loader.load(BPF_MAIN, [f"-I{BPF_SRC_DIR}"])
    maps = {n: Map(n, fd, d["type"], d["key"], d["leaf"], d["max_entries"]) for n, (fd, d) in loaded.maps.items()}
    for fd in loaded.functions.values():
        import os
        os.close(fd)
    try:
        vips = maps["mx_vips"]
        assert len(vips) == 0 and vips.items() == []
        keys = []
        for i in range(3):
            k = vips.Key()
            k.ifindex, k.family = i + 1, 4
            v = vips.Leaf()
            v.slot = 10 + i
            vips[k] = v
            keys.append(k)
        assert len(vips) == 3
        assert sorted(v.slot for v in vips.values()) == [10, 11, 12]
        assert vips[keys[1]].slot == 11 and vips.get(vips.Key()) is None
        del vips[keys[1]]
        with pytest.raises(KeyError):
            del vips[keys[1]]
        with pytest.raises(KeyError):
            vips[keys[1]]
        vips.clear()
        assert len(vips) == 0
        stats = maps["mx_stats"]                    # per-CPU array of structs
        assert stats.percpu and len(stats[0]) == stats.ncpus
        per_cpu = stats.Leaf()
        field = stats.sLeaf._fields_[0][0]
        for i in range(stats.ncpus):
            setattr(per_cpu[i], field, i + 1)
        stats[5] = per_cpu
        assert sum(getattr(c, field) for c in stats[5]) == sum(range(1, stats.ncpus + 1))
        stats.clear()
        assert sum(getattr(c, field) for c in stats[5]) == 0
        g = maps["mx_global"]                       # per-CPU array of u64
        g[1] = [7] * g.ncpus
        assert sum(g[g.Key(1)]) == 7 * g.ncpus
        with pytest.raises(IndexError):
            g[g.max_entries]
        with pytest.raises(TypeError):
            del g[0]
    finally:
        for m in maps.values():
            m.close()


def test_the_agent_process_never_imports_bcc():
    """BCC (and LLVM) load in the loader child only; the dataplane's process stays small."""
    code = textwrap.dedent("""
        import json, sys
        from agent.dataplane import Dataplane
        d = Dataplane(None).open()
        d.set_interface(1, bytes(6)); d.announce("192.0.2.200", 1)
        print(json.dumps({"bcc": "bcc" in sys.modules, "announced": d.announced()}))
        d.close()
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"bcc": False, "announced": [["192.0.2.200", 1, 0]]}


def test_a_compile_error_in_the_child_is_reported_with_bcc_s_reason():
    with pytest.raises(DataplaneError, match=r"BCC could not compile .*xdp_vip\.c"):
        Dataplane(None, cflags=["-DMAX_VIPS=this is not C"]).open()


def test_load_function_names_what_was_loaded():
    d = Dataplane(None).open()
    try:
        assert d.load_function("xdp_heartbeat") > 0
        with pytest.raises(DataplaneError, match="no function 'xdp_nope' loaded"):
            d.load_function("xdp_nope")
    finally:
        d.close()
    with pytest.raises(DataplaneError, match="not open"):
        d.table("mx_vips")
