"""A lab backend "pod": an HTTP server that answers with its name and node (IPv4 and IPv6).
Run: ``python -m metalxdp.rig.httpd --name web-1 --node node2 --port 8080``."""
from __future__ import annotations

import argparse
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--port", type=int, default=8080)
    a = ap.parse_args()
    body = f"{a.name} on {a.node}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    _DualStack(("::", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
