"""Structured logging: one JSON object per line, with MetalLB's event names where one exists.

    log = get_logger("controller")
    log.info("IP address assigned by controller", event="ipAllocated", ip="192.0.2.10", service="ns/svc")

prints ``{"ts": "...", "level": "info", "component": "controller", "event": "ipAllocated", ...}``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = {"all": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
          "warn": logging.WARNING, "error": logging.ERROR, "none": logging.CRITICAL + 10}


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name.removeprefix("metalxdp."),
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


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
