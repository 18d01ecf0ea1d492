"""The operator's HTTP endpoint (``policybot run --http HOST:PORT``): ``/healthz`` and
``/metrics``. Off by default; a tiny threaded stdlib server, so nothing else to run."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.errors import ConfigError
from bot.metrics import REGISTRY

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, dict[str, Any]]]


def parse_bind(bind: str) -> tuple[str, int]:
    """``127.0.0.1:9108`` or ``[::1]:9108`` → (host, port); port 0 picks a free one."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--http: expected HOST:PORT such as 127.0.0.1:9108, got {bind!r}")
    return host, int(port)


@contextmanager
def serving(bind: str, health: Health) -> Iterator[tuple[str, int]]:
    """Serve /healthz and /metrics on ``bind`` while the block runs; yields the address."""
    host, port = parse_bind(bind)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            log.debug("http %s", format % args)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, detail = health()
                body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}).encode()
                self._send(200 if ok else 503, "application/json", body)
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ConfigError(f"--http: cannot listen on {bind}: {exc.strerror}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="policybot-http", daemon=True)
    thread.start()
    log.info("serving /healthz and /metrics on http://%s:%d", host, server.server_address[1])
    try:
        yield host, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
