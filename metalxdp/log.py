"""Structured logging: one compact JSON object per line, as MetalLB writes them, with MetalLB's
event names where one exists.

    log = get_logger("controller")
    log.info("IP address assigned by controller", event="ipAllocated", ip=["192.0.2.200"], service="ns/svc")

prints (``format_lines``)::

    {"level":"info","ts":"2026-12-03T15:10:00.123Z","component":"controller","event":"ipAllocated","ip":"192.0.2.200","msg":"IP address assigned by controller","service":"ns/svc"}

Why this exact shape: troubleshooting guides written for MetalLB (the seeds, OpenShift's docs)
tell the reader to look for ``"event":"ipAllocated","ip":"172.22.0.201","msg":"IP address
assigned by controller`` in the controller's log. So the line is compact (no spaces after
separators), ``event``, ``ip`` and ``msg`` come in that order, next to each other, after the
fixed ``level``/``ts``/``component`` head, and ``ip`` is a single string. A list of addresses
(a dual-stack Service: one per address family) gives one line per address, each with its own
``ip`` string, so a grep for either address finds its line. Other fields follow in the call's
order.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Iterable, Mapping, Optional

LEVELS = {"all": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
          "warn": logging.WARNING, "error": logging.ERROR, "none": logging.CRITICAL + 10}

# fields placed right after the head, in this order (MetalLB's greppable sequence)
_LEADING = ("event", "ip")


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


def format_lines(level: str, created: float, component: str, msg: str, fields: Mapping[str, Any],
                 error: Optional[str] = None) -> list[str]:
    """The JSON line(s) for one log call (pure: the formatter's whole logic). More than one line
    only when ``fields["ip"]`` is a list of several addresses (one line per address)."""
    ips = fields.get("ip")
    per_ip: Iterable[Any] = [ips]
    if isinstance(ips, (list, tuple, set, frozenset)):
        per_ip = [str(i) for i in ips] if len(ips) else [None]
    lines = []
    for ip in per_ip:
        out: dict[str, Any] = {"level": level, "ts": _timestamp(created), "component": component}
        for k in _LEADING:
            v = ip if k == "ip" else fields.get(k)
            if v is not None:
                out[k] = str(v) if k == "ip" else v
        out["msg"] = msg
        for k, v in fields.items():
            if k not in _LEADING and k not in out:
                out[k] = v
        if error is not None:
            out["error"] = error
        lines.append(json.dumps(out, default=str, separators=(",", ":"), ensure_ascii=False))
    return lines


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(format_lines(
            record.levelname.lower().replace("warning", "warn"), record.created,
            record.name.removeprefix("metalxdp."), record.getMessage(), getattr(record, "fields", {}),
            self.formatException(record.exc_info) if record.exc_info else None))


class StructuredLogger:
    """A thin wrapper so call sites pass fields as keywords: ``log.info(msg, event=..., ip=...)``."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger

    def _log(self, level: int, msg: str, exc_info: bool = False, **fields: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, extra={"fields": fields}, exc_info=exc_info)

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, **fields)

    def error(self, msg: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, msg, exc_info=exc_info, **fields)


_configured = False


def setup(level: str = "info", stream=None) -> None:
    """Send all metalxdp loggers to ``stream`` (stderr) as JSON lines at ``level`` (MetalLB's names)."""
    global _configured
    root = logging.getLogger("metalxdp")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JSONFormatter())
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False
    _configured = True


def get_logger(component: str) -> StructuredLogger:
    if not _configured:
        setup()
    return StructuredLogger(logging.getLogger(f"metalxdp.{component}"))
