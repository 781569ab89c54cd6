"""The monitoring port of the agent and the controller: ``/metrics`` (Prometheus), ``/healthz``
(liveness) and ``/readyz`` (readiness), each answered from what the process really knows, and
404 for any other path.

Before this module the port was prometheus_client's ``start_http_server``, which answers every
path with the metrics: a probe on ``/healthz`` was green as soon as the process listened, even
with the informers never synced or the reconcile loop wedged. A kubelet now sees:

* ``/healthz``: 200 while the process's work loops are alive (``live()``), else 503 and why;
  the kubelet restarts the container after the probe's failureThreshold.
* ``/readyz``: 200 once the process can do its job (``ready()``: for the agent, the informers
  listed and a first reconcile pass ran; for the controller, its informers listed), else 503 and
  why. A DaemonSet rollout waits for it before the next node (``maxUnavailable``).

* ``/status`` (when the process gives a ``status`` callable): a JSON document of what it is
  doing, for ``metalxdp agent status`` (``agent.status_report`` describes the agent's).

Checks are callables returning ``(ok, reason)``; they are called per request and must be cheap.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest

# Every counter would otherwise carry a `<name>_created` twin (a timestamp, one more series per
# label set) that no MetalLB alert or dashboard reads. Process-wide in prometheus_client; both
# components expose their metrics only through this module.
disable_created_metrics()

Check = Callable[[], "tuple[bool, str]"]


LOOP_STUCK_S = 60.0   # a work loop (it passes at least once a second) silent this long is wedged


def loop_live(started: bool, last_pass: "float | None", now: float, stuck_s: float = LOOP_STUCK_S
              ) -> tuple[bool, str]:
    """Liveness of a loop that passes at least once a second: alive while starting, then while
    its last pass is younger than ``stuck_s``."""
    if not started or last_pass is None:
        return True, "starting"
    if now - last_pass > stuck_s:
        return False, f"the reconcile loop has not completed a pass for {now - last_pass:.0f}s"
    return True, "ok"


def _always() -> tuple[bool, str]:
    return True, "ok"


class MonitoringServer:
    """``MonitoringServer(port, host, registry, live=..., ready=..., status=...).start()``;
    ``.port`` is the bound port (pass 0 for a free one), ``.stop()`` closes it."""

    def __init__(self, port: int, host: str, registry, live: Check = _always, ready: Check = _always,
                 status: "Callable[[], dict] | None" = None):
        checks = {"/healthz": live, "/readyz": ready}
        paths = "/metrics, /healthz, /readyz" + (", /status" if status else "")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                if path == "/status" and status is not None:
                    try:
                        body, code = json.dumps(status(), default=str).encode(), 200
                    except Exception as e:  # noqa: BLE001 - say why instead of dropping the connection
                        body, code = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode(), 500
                    self._send(code, body, "application/json")
                    return
                check = checks.get(path)
                if check is None:
                    self._send(404, f"no such path {path}; GET {paths}\n".encode())
                    return
                try:
                    ok, why = check()
                except Exception as e:  # noqa: BLE001 - a failing check is a failed probe
                    ok, why = False, f"check failed: {type(e).__name__}: {e}"
                self._send(200 if ok else 503, (why + "\n").encode())

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):   # probes every few seconds: not worth a log line
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def start(self) -> "MonitoringServer":
        threading.Thread(target=self._server.serve_forever, name="monitoring", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
