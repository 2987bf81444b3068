"""HTTP endpoints for Kubernetes probes and Prometheus: /healthz, /readyz, /metrics (and the
live console's page and JSON when the worker adds them: `routes`, server_app/console.py).

The endpoint is for the kubelet's probes and one metrics scraper, not for the public, and it
must never cost the worker more than a few threads:

- every connection has a socket timeout (`timeout_s`): a client that connects and sends
  nothing, or stops half way, is closed after it, and its thread ends;
- at most `max_connections` connections are handled at once; beyond that a connection gets
  an immediate `503` and is closed by the accepting thread, which never blocks on it;
- one request per connection (HTTP/1.0), so a kept-alive connection cannot hold a thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_CONNECTIONS = 8

_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nbusy\n"
)


class HealthPortError(RuntimeError):
    """The health endpoint cannot listen on its address (`health.host`, `health.port`)."""


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with at most `max_connections` handler threads."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's default 5 makes bursts retry SYNs for seconds)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.rejected = 0
        if ":" in address[0]:  # an IPv6 pod address (dual-stack clusters)
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._reject(request)
            self.rejected += 1
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _reject(self, request: socket.socket) -> None:
        """Answer 503 without waiting (the accepting thread must never block) and close."""
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY)
        self.shutdown_request(request)


class HealthServer:
    """`alive()` backs /healthz, `ready()` backs /readyz, `metrics()` renders /metrics."""

    def __init__(
        self,
        host: str,
        port: int,
        alive: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        metrics: Callable[[], bytes],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        routes: Mapping[str, Callable[[], tuple[bytes, str]]] | None = None,
    ) -> None:
        """`routes`: more GET paths, each a callable returning (body, content type)."""
        if timeout_s <= 0 or max_connections < 1:
            raise ValueError("timeout_s must be > 0 and max_connections >= 1")
        checks = {"/healthz": alive, "/readyz": ready}
        extra = dict(routes or {})

        class Handler(BaseHTTPRequestHandler):
            # StreamRequestHandler applies it to the socket: reads and writes that stall
            # for this long raise TimeoutError, and the connection is closed.
            timeout = timeout_s

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics(), "text/plain; version=0.0.4")
                elif path in checks:
                    ok, detail = checks[path]()
                    self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain")
                elif path in extra:
                    body, content_type = extra[path]()
                    self._send(200, body, content_type)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                if content_type.startswith("text/html"):  # the console: its own files only, never framed
                    self.send_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
                pass

        try:
            self._server = _BoundedHTTPServer((host, port), Handler, max_connections)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise HealthPortError(
                f"health.port {port}: cannot listen on {host}:{port} ({reason}); "
                "set another health.port (null disables the endpoint)"
            ) from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def rejected(self) -> int:
        """Connections refused because `max_connections` were busy."""
        return self._server.rejected

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever(), which must be running
            self._server.shutdown()
        self._server.server_close()
