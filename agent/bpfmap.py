"""BPF maps driven through the bpf syscall (libbpf's thin wrappers, ctypes), without BCC.

The long-running agent never imports BCC: ``agent.bpf_loader`` compiles and loads the program
in a short-lived child, which hands over the program and map fds and each map's key/leaf
layout as BCC describes it (its JSON type descriptors). ``decode_type`` turns a descriptor
into a ctypes class the same way BCC does, and ``Map`` offers the small dict-like surface of
a BCC table that the dataplane uses (``Key``, ``Leaf``, ``sLeaf``, ``[]``, ``get``, ``items``,
``values``, ``clear``, ``len``, ``max_entries``).
"""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Iterator, Optional

from .libbpf import DataplaneError, libbpf

# BCC's names of C types in its descriptors (bcc.BPF.str2ctype)
_CTYPES = {
    "_Bool": ctypes.c_bool, "char": ctypes.c_char, "wchar_t": ctypes.c_wchar,
    "unsigned char": ctypes.c_ubyte, "short": ctypes.c_short, "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int, "unsigned int": ctypes.c_uint, "long": ctypes.c_long,
    "unsigned long": ctypes.c_ulong, "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong, "float": ctypes.c_float, "double": ctypes.c_double,
    "long double": ctypes.c_longdouble, "__int128": ctypes.c_int64 * 2,
    "unsigned __int128": ctypes.c_uint64 * 2,
}
_KINDS = ("struct", "union", "struct_packed")

# uapi enum bpf_map_type: the kinds the dataplane's maps use
MAP_TYPES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array"}
BPF_ANY = 0


def decode_type(desc):
    """A ctypes type from a BCC type descriptor: a C type name, or
    ``[name, [[field, type], [field, type, [n]], [field, type, bits], ...], kind]``."""
    if isinstance(desc, str):
        try:
            return _CTYPES[desc]
        except KeyError:
            raise DataplaneError(f"unknown C type {desc!r} in a map layout") from None
    if not isinstance(desc, list) or len(desc) < 2 or not isinstance(desc[1], list):
        raise DataplaneError(f"cannot decode map layout {desc!r}")
    anon, fields = [], []
    for f in desc[1]:
        if len(f) == 2:
            fields.append((f[0], decode_type(f[1])))
        elif len(f) == 3 and isinstance(f[2], list):
            fields.append((f[0], decode_type(f[1]) * f[2][0]))
        elif len(f) == 3 and isinstance(f[2], int) and not isinstance(f[2], bool):
            fields.append((f[0], decode_type(f[1]), f[2]))
        elif len(f) == 3 and f[2] in _KINDS:
            name = f[0] or f"__anon{len(anon)}"
            if not f[0]:
                anon.append(name)
            fields.append((name, decode_type(f)))
        else:
            raise DataplaneError(f"cannot decode field {f!r} of map layout {desc[0]!r}")
    kind = desc[2] if len(desc) > 2 else "struct"
    base = ctypes.Union if kind == "union" else ctypes.Structure
    ns = {"_anonymous_": anon, "_fields_": fields}
    if kind == "struct_packed":
        ns["_pack_"] = 1
    return type(str(desc[0]), (base,), ns)


def parse_cpu_list(text: str) -> int:
    """How many CPUs a kernel cpu list names ("0-3,5" -> 5; the highest index + 1, as the
    kernel sizes per-CPU values by the possible CPUs)."""
    top = -1
    for part in text.strip().split(","):
        if not part:
            continue
        top = max(top, int(part.split("-")[-1]))
    return top + 1


def possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        return parse_cpu_list(f.read())


class Map:
    """One BPF map by fd (owned: ``close()`` closes it)."""

    def __init__(self, name: str, fd: int, map_type: str, key_desc, leaf_desc, max_entries: int,
                 ncpus: Optional[int] = None):
        if map_type not in MAP_TYPES.values():
            raise DataplaneError(f"map {name}: type {map_type!r} is not supported")
        self.name, self.map_fd, self.map_type, self.max_entries = name, fd, map_type, int(max_entries)
        self.Key = decode_type(key_desc)
        self.percpu = map_type.startswith("percpu_")
        self.is_array = map_type.endswith("array")
        leaf = decode_type(leaf_desc)
        if self.percpu:
            self.sLeaf = leaf
            self.ncpus = ncpus or possible_cpus()
            size = ctypes.sizeof(leaf)
            self._elem = leaf if size % 8 == 0 else type(
                f"{name}_elem", (ctypes.Structure,), {"_fields_": [("v", leaf), ("_pad", ctypes.c_ubyte * (8 - size % 8))]})
            self.Leaf = self._elem * self.ncpus
        else:
            self.Leaf = leaf

    # ---- syscalls -----------------------------------------------------------------------
    def _key(self, key):
        if isinstance(key, int):
            if not self.is_array:
                raise TypeError(f"map {self.name}: integer keys only for arrays")
            if not 0 <= key < self.max_entries:
                raise IndexError(f"map {self.name}: index {key} out of range 0..{self.max_entries - 1}")
            return self.Key(key)
        return key

    def _lookup(self, key):
        value = self.Leaf()
        ret = libbpf().bpf_map_lookup_elem(self.map_fd, ctypes.byref(key), ctypes.byref(value))
        if ret < 0:
            err = -ret if ret != -1 else ctypes.get_errno()
            if err == errno.ENOENT:
                return None
            raise DataplaneError(f"lookup in {self.name}: {os.strerror(err)}")
        return value

    def _out(self, value):
        if not self.percpu:
            return value
        return [e.v if self._elem is not self.sLeaf else e for e in value]

    def get(self, key, default=None):
        value = self._lookup(self._key(key))
        return default if value is None else self._out(value)

    def __getitem__(self, key):
        value = self._lookup(self._key(key))
        if value is None:
            raise KeyError(key)
        return self._out(value)

    def __setitem__(self, key, value) -> None:
        key = self._key(key)
        if self.percpu and not isinstance(value, self.Leaf):
            buf = self.Leaf()
            for i, v in enumerate(value):
                if self._elem is self.sLeaf:
                    buf[i] = v
                else:
                    buf[i].v = v
            value = buf
        ret = libbpf().bpf_map_update_elem(self.map_fd, ctypes.byref(key), ctypes.byref(value), BPF_ANY)
        if ret < 0:
            err = -ret if ret != -1 else ctypes.get_errno()
            raise DataplaneError(f"update of {self.name}: {os.strerror(err)}")

    def __delitem__(self, key) -> None:
        if self.is_array:
            raise TypeError(f"map {self.name}: array entries cannot be deleted (write zeroes)")
        key = self._key(key)
        ret = libbpf().bpf_map_delete_elem(self.map_fd, ctypes.byref(key))
        if ret < 0:
            err = -ret if ret != -1 else ctypes.get_errno()
            if err == errno.ENOENT:
                raise KeyError(key)
            raise DataplaneError(f"delete from {self.name}: {os.strerror(err)}")

    def keys(self) -> Iterator:
        if self.is_array:
            for i in range(self.max_entries):
                yield self.Key(i)
            return
        prev, key = None, self.Key()
        while True:
            nxt = self.Key()
            ret = libbpf().bpf_map_get_next_key(self.map_fd, None if prev is None else ctypes.byref(prev),
                                                ctypes.byref(nxt))
            if ret < 0:
                err = -ret if ret != -1 else ctypes.get_errno()
                if err == errno.ENOENT:
                    return
                raise DataplaneError(f"iterating {self.name}: {os.strerror(err)}")
            yield nxt
            prev = nxt

    def items(self) -> list:
        out = []
        for k in list(self.keys()):
            v = self._lookup(k)
            if v is not None:   # deleted while iterating
                out.append((k, self._out(v)))
        return out

    def values(self) -> list:
        return [v for _, v in self.items()]

    def clear(self) -> None:
        """Hash: delete every entry; array: zero every entry."""
        if self.is_array:
            for k in self.keys():
                self[k] = self.Leaf()
            return
        for k in list(self.keys()):
            try:
                del self[k]
            except KeyError:
                pass

    def __len__(self) -> int:
        return self.max_entries if self.is_array else sum(1 for _ in self.keys())

    def close(self) -> None:
        if self.map_fd >= 0:
            os.close(self.map_fd)
            self.map_fd = -1
