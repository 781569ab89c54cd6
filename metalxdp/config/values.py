"""Parsing of the scalar value formats inside metallb.io resources.

- pool addresses: CIDR, ``start-end`` range (summarised to CIDRs), as MetalLB's ``ParseCIDR``
- IP addresses as Go's ``net.ParseIP`` accepts them (no zones, no leading zeros)
- durations as Go's ``time.ParseDuration`` / ``metav1.Duration`` ("90s", "1m30s", "300ms")
- BGP communities: legacy ``a:b`` (uint16 each) or ``large:a:b:c`` (uint32 each)

Each function raises ``ValueError`` with a user-facing reason; the parser wraps it in a
``ConfigError`` carrying the object and field.
"""
from __future__ import annotations

import ipaddress
import re

from .types import Community, IPAddress, IPNetwork


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4 like Go's To4()."""
    if not isinstance(text, str) or "%" in text or text != text.strip() or not text:
        raise ValueError(f"{text!r} is not an IP address")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_pool_address(entry: str) -> list[IPNetwork]:
    """One ``spec.addresses`` entry -> CIDRs. ``198.18.0.0/24``, ``198.18.0.5-198.18.0.9``, ``fc00::/120``.

    A single address must be written as a range ``a-a`` or as ``/32`` / ``/128``, as in MetalLB.
    Host bits in a CIDR are masked off (Go's ParseCIDR does the same).
    """
    if "-" not in entry:
        if "/" not in entry:
            raise ValueError(f"invalid CIDR {entry!r}: write a single address as {entry}/32 "
                             f"(or /128 for IPv6) or as a range {entry}-{entry}")
        addr, _, plen = entry.partition("/")
        if not plen.isdigit():
            raise ValueError(f"invalid CIDR {entry!r}: prefix length must be a number")
        try:
            ip = parse_ip(addr)
            return [ipaddress.ip_network((ip, int(plen)), strict=False)]  # (address, length): no re-parse
        except ValueError:
            raise ValueError(f"invalid CIDR {entry!r}") from None
    start_text, _, end_text = entry.partition("-")
    try:
        start = parse_ip(start_text.strip())
    except ValueError:
        raise ValueError(f"invalid IP range {entry!r}: invalid start IP {start_text.strip()!r}") from None
    try:
        end = parse_ip(end_text.strip())
    except ValueError:
        raise ValueError(f"invalid IP range {entry!r}: invalid end IP {end_text.strip()!r}") from None
    if start.version != end.version:
        raise ValueError(f"invalid IP range {entry!r}: start and end must both be IPv4 or both IPv6")
    if start > end:
        raise ValueError(f"invalid IP range {entry!r}: start IP {start} is after the end IP {end}")
    return list(ipaddress.summarize_address_range(start, end))


def networks_overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration string -> seconds. "90s" -> 90.0, "1m30s" -> 90.0, "0" -> 0.0."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration")
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, like 90s or 1m30s")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}: use a number with a unit "
                             f"(ns, us, ms, s, m, h), like 90s or 1m30s")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Seconds -> the Go/metav1 text form ("1m30s", "3s", "500ms"); used by conversion."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms" if ms < 1000 else f"{ms / 1000:g}s"
    s = ms // 1000
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    out = ""
    if h:
        out += f"{h}h"
    if h or m:
        out += f"{m}m"
    return out + f"{sec}s"


class CommunityFormatError(ValueError):
    """Not shaped like a community at all: may be an alias of a Community not created yet."""


def parse_community(text: str) -> Community:
    """``a:b`` (0..65535 each) or ``large:a:b:c`` (0..4294967295 each), like MetalLB's community.New."""
    fields = text.split(":")
    if len(fields) == 2:
        values = []
        for part in fields:
            if not part.isdigit() or int(part) > 0xFFFF:
                raise ValueError(f"invalid community value {text!r}: both parts of a:b must be "
                                 f"numbers 0-65535 (or use large:a:b:c)")
            values.append(int(part))
        return Community(f"{values[0]}:{values[1]}", large=False)
    if len(fields) == 4:
        if fields[0] != "large":
            raise ValueError(f"invalid community value {text!r}: a 4-part community must be large:a:b:c")
        values = []
        for part in fields[1:]:
            if not part.isdigit() or int(part) > 0xFFFFFFFF:
                raise ValueError(f"invalid community value {text!r}: parts of large:a:b:c must be "
                                 f"numbers 0-4294967295")
            values.append(int(part))
        return Community("large:%d:%d:%d" % tuple(values), large=True)
    raise CommunityFormatError(f"invalid community format {text!r}: expected a:b, large:a:b:c "
                               f"or the name of an alias defined in a Community resource")


def community_sort_key(c: Community) -> tuple[int, int, int]:
    """MetalLB's ordering: a legacy a:b sorts as the large community (a<<16|b):0:0."""
    if c.large:
        _, a, b, d = c.value.split(":")
        return int(a), int(b), int(d)
    a, b = c.value.split(":")
    return (int(a) << 16) | int(b), 0, 0
