"""``metalxdp agent status``: the node-side view of what FRR shows from the router's side
(``show bgp summary``, ``show bfd peers``), plus membership, the XDP dataplane and the per-VIP
counters, decoded.

The agent builds the document (``Agent.status_document``, served as JSON on its monitoring
port at ``/status``); this module holds the pure parts: the pieces of the document that need
arithmetic or renaming (uptime, liveness gate, BFD diagnostics in FRR's words) and the text
rendering. No I/O.

Document (the JSON ``agent status --json`` prints)::

    {"node": "node1", "time": 1764774000.0,
     "config": {"loaded": true, "stale": false},
     "bgp": {"sessions": [{"peer", "address", "myASN", "peerASN", "state", "upSince", "prefixesSent"}]},
     "bfd": {"peers": [{"peer", "local", "status", "uptime", "diagnostic", "id", "remote-id",
                        "receive-interval", "transmit-interval", "detect-multiplier",
                        "remote-receive-interval", "remote-transmit-interval", "remote-detect-multiplier"}]},
     "membership": {"enabled": true, "self": "node1", "members": [...], "states": {name: state}},
     "xdp": {"enabled": true, "programId": 42, "adopted": false, "requestedMode": "auto",
             "interfaces": [{"name", "ifindex", "mode"}], "pinDir": "...",
             "liveness": {"enabled", "open", "ageMs", "maxAgeMs"}},
     "vips": [{"ip", "interface", "service", "flags": [...], "counters": {...}}],
     "services": [{"service", "protocol", "announced", "reason", "detail"}]}

The BFD entries use FRR's JSON names (``show bfd peers json``) so a test or an operator can
compare the two sides key by key.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Optional

# FRR's words for the RFC 5880 §4.1 diagnostic codes (bfdd's diag2str)
FRR_DIAG = {
    "none": "ok",
    "control_detection_expired": "control detection time expired",
    "echo_failed": "echo-function",
    "neighbor_down": "neighbor signaled session down",
    "forwarding_reset": "forwarding plane reset",
    "path_down": "path down",
    "concat_path_down": "concatenated path down",
    "admin_down": "administratively down",
    "reverse_concat_path_down": "reverse concatenated path down",
}

# VIP map flags (bpf/vip_maps.h), as the operator reads them
VIP_FLAGS = {1: "etpLocalMisdirect", 2: "handoff"}


def frr_uptime(seconds: Optional[float]) -> str:
    """FRR's Up/Down column: hh:mm:ss below a day, 1d02h03m below a week, then 01w2d03h;
    "never" for a session that is not up."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d == 0:
        return f"{h:02d}:{m:02d}:{sec:02d}"
    if d < 7:
        return f"{d}d{h:02d}h{m:02d}m"
    return f"{d // 7:02d}w{d % 7}d{h:02d}h"


def liveness_gate(max_age_ns: int, heartbeat_ns: int, now_ns: int) -> dict:
    """The split-brain gate as the XDP program sees it: answering (``open``) while the last
    heartbeat is younger than the max age; a max age of 0 disables the gate (always open)."""
    age_ms = max(0, now_ns - heartbeat_ns) / 1e6 if heartbeat_ns else None
    if not max_age_ns:
        return {"enabled": False, "open": True, "ageMs": age_ms, "maxAgeMs": 0}
    return {"enabled": True, "open": age_ms is not None and age_ms * 1e6 < max_age_ns,
            "ageMs": None if age_ms is None else round(age_ms, 1), "maxAgeMs": max_age_ns // 1_000_000}


def vip_flags(flags: int) -> list[str]:
    return [name for bit, name in sorted(VIP_FLAGS.items()) if flags & bit] + \
        ([f"0x{flags & ~sum(VIP_FLAGS):x}"] if flags & ~sum(VIP_FLAGS) else [])


def bfd_entry(info: Mapping[str, Any], local_timers: tuple[int, int, int], now: float) -> dict:
    """One ``agent.bfd.runner.SessionInfo`` (as a dict) -> FRR's ``show bfd peers json`` keys.
    ``local_timers``: the BFDProfile's (receive ms, transmit ms, detect multiplier)."""
    rx, tx, mult = local_timers
    up_since = info.get("up_since")
    state = str(info.get("state", "")).lower()
    return {"peer": info["peer"], "local": info.get("local"), "multihop": bool(info.get("multihop")),
            "profile": info.get("profile"),
            "status": {"admindown": "shutdown"}.get(state, state),
            "uptime": int(now - up_since) if up_since and state == "up" else 0,
            "diagnostic": FRR_DIAG.get(str(info.get("local_diag")), str(info.get("local_diag"))),
            "remote-status": str(info.get("remote_state", "")).lower(),
            "id": info.get("local_discr"), "remote-id": info.get("remote_discr"),
            "receive-interval": rx, "transmit-interval": tx, "detect-multiplier": mult,
            "remote-receive-interval": int(info.get("remote_receive_interval_ms") or 0),
            "remote-transmit-interval": int(info.get("remote_transmit_interval_ms") or 0),
            "remote-detect-multiplier": info.get("remote_detect_multiplier"),
            "control-packet-input": info.get("control_packet_input"),
            "control-packet-output": info.get("control_packet_output")}


# ---- text ------------------------------------------------------------------------------------

def text_table(headers: list[str], rows: Iterable[list[Any]]) -> list[str]:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(headers), *(fmt(r) for r in rows)]


def format_agent_status(doc: Mapping[str, Any], now: Optional[float] = None) -> str:
    """The document as text: one section per subsystem, FRR-like where FRR has an equivalent."""
    now = doc.get("time", time.time()) if now is None else now
    out = [f"Node {doc.get('node')}"]
    cfg = doc.get("config") or {}
    out.append("Config: " + ("not loaded" if not cfg.get("loaded") else
                             "stale (the last change failed to parse; the previous one is in force)"
                             if cfg.get("stale") else "loaded"))

    out += ["", "BGP sessions (show bgp summary):"]
    sessions = (doc.get("bgp") or {}).get("sessions") or []
    if sessions:
        out += ["  " + line for line in text_table(
            ["Peer", "Neighbor", "V", "AS", "LocalAS", "Up/Down", "State/PfxSnt"],
            [[s["peer"], s["address"], 4, s["peerASN"], s["myASN"],
              frr_uptime(now - s["upSince"] if s.get("upSince") else None),
              s["prefixesSent"] if s["state"] == "Established" else s["state"]] for s in sessions])]
    else:
        out.append("  no BGP session (no BGPPeer selects this node)")

    out += ["", "BFD peers (show bfd peers):"]
    peers = (doc.get("bfd") or {}).get("peers") or []
    for p in peers:
        out += [f"  peer {p['peer']} local-address {p.get('local')}{' multihop' if p.get('multihop') else ''}",
                f"    ID: {p.get('id')}", f"    Remote ID: {p.get('remote-id')}",
                f"    Status: {p['status']}", f"    Uptime: {p.get('uptime', 0)} second(s)",
                f"    Diagnostics: {p.get('diagnostic')}", f"    Profile: {p.get('profile')}",
                "    Local timers:", f"      Detect-multiplier: {p['detect-multiplier']}",
                f"      Receive interval: {p['receive-interval']}ms",
                f"      Transmission interval: {p['transmit-interval']}ms",
                "    Remote timers:", f"      Detect-multiplier: {p['remote-detect-multiplier']}",
                f"      Receive interval: {p['remote-receive-interval']}ms",
                f"      Transmission interval: {p['remote-transmit-interval']}ms"]
    if not peers:
        out.append("  no BFD session (no BGPPeer of this node has a bfdProfile)")

    out += ["", "Membership:"]
    m = doc.get("membership") or {}
    if not m.get("enabled"):
        out.append("  disabled (no memberlist secret): every node counts as alive for the L2 election")
    else:
        states = m.get("states") or {}
        out.append(f"  this node sees {len(m.get('members') or [])} alive: {', '.join(m.get('members') or [])}")
        others = {n: st for n, st in sorted(states.items()) if n not in (m.get("members") or [])}
        if others:
            out.append("  not alive: " + ", ".join(f"{n} ({st})" for n, st in others.items()))

    out += ["", "XDP:"]
    x = doc.get("xdp") or {}
    if not x.get("enabled"):
        out.append("  off (--xdp-mode off: no ARP/NDP answered here)")
    else:
        gate = x.get("liveness") or {}
        out.append(f"  program id {x.get('programId')}{' (adopted from the previous agent)' if x.get('adopted') else ''}, "
                   f"requested mode {x.get('requestedMode')}, pinned in {x.get('pinDir')}")
        ifs = x.get("interfaces") or []
        out.append("  attached: " + (", ".join(f"{i['name']} ({i['mode']})" for i in ifs) if ifs else "nowhere yet"))
        if not gate.get("enabled"):
            out.append("  liveness gate: off")
        else:
            out.append(f"  liveness gate: {'open (answering)' if gate.get('open') else 'CLOSED (not answering)'}, "
                       f"heartbeat {gate.get('ageMs')} ms ago, max age {gate.get('maxAgeMs')} ms")

    out += ["", "VIPs (XDP counters):"]
    vips = doc.get("vips") or []
    if vips:
        keys = sorted({k for v in vips for k in (v.get("counters") or {})})
        out += ["  " + line for line in text_table(
            ["VIP", "Interface", "Service", "Flags", *keys],
            [[v["ip"], v["interface"], v.get("service") or "-", ",".join(v.get("flags") or []) or "-",
              *((v.get("counters") or {}).get(k, 0) for k in keys)] for v in vips])]
    else:
        out.append("  none in the XDP map")

    out += ["", "Services:"]
    svcs = doc.get("services") or []
    if svcs:
        out += ["  " + line for line in text_table(
            ["Service", "Protocol", "Announced", "Reason", "Detail"],
            [[s["service"], s["protocol"], "yes" if s["announced"] else "no", s.get("reason") or "-",
              s.get("detail") or ""] for s in svcs])]
    else:
        out.append("  no LoadBalancer Service with an IP")
    return "\n".join(out) + "\n"
