"""The health endpoint: loopback by default, idle connections closed, a bounded number of threads.

No timing is asserted: the tests use a small configurable timeout and wait with generous
deadlines for what must happen, then count threads and connections.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from server_app.config import HealthConfig, load_config, parse_config
from server_app.health import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_S, HealthPortError, HealthServer

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0  # generous: only a hung or broken server takes this long


def _handler_threads() -> list[threading.Thread]:
    # ThreadingMixIn names each connection's thread after its target, process_request_thread.
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S:.0f} s: {what}"
        time.sleep(0.02)


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed `sock` (EOF after whatever it sent)."""
    sock.settimeout(DEADLINE_S)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.fixture
def make_server() -> Iterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def factory(timeout_s: float = DEFAULT_TIMEOUT_S, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> HealthServer:
        server = HealthServer(
            "127.0.0.1", 0, lambda: (True, "ok"), lambda: (True, "ready"), lambda: b"m 1\n",
            timeout_s=timeout_s, max_connections=max_connections,
        )
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE_S) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_endpoints_answer(make_server: Callable[..., HealthServer]) -> None:
    server = make_server()
    assert _get(server.port, "/healthz") == (200, b"ok\n")
    assert _get(server.port, "/readyz") == (200, b"ready\n")
    assert _get(server.port, "/metrics") == (200, b"m 1\n")
    assert _get(server.port, "/nope")[0] == 404


def test_an_idle_connection_is_closed_after_the_timeout(make_server: Callable[..., HealthServer]) -> None:
    server = make_server(timeout_s=0.2)
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        _wait_until(lambda: len(_handler_threads()) == 1, "the idle connection has a handler thread")
        assert _closed_by_server(idle)  # it never sent a byte; the server hung up
    _wait_until(lambda: not _handler_threads(), "the handler thread ended")
    assert _get(server.port, "/healthz")[0] == 200


def test_a_half_sent_request_is_closed_after_the_timeout(make_server: Callable[..., HealthServer]) -> None:
    server = make_server(timeout_s=0.2)
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        assert _closed_by_server(slow)
    _wait_until(lambda: not _handler_threads(), "the handler thread ended")


def test_many_idle_connections_hold_at_most_max_connections_threads(
    make_server: Callable[..., HealthServer],
) -> None:
    limit, idle_count = 4, 60
    server = make_server(timeout_s=600.0, max_connections=limit)  # idle sockets stay for the whole test
    before = threading.active_count()
    peak = 0
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.create_connection(("127.0.0.1", server.port))) for _ in range(idle_count)]

        def all_seen() -> bool:
            nonlocal peak
            peak = max(peak, len(_handler_threads()))
            return server.rejected == idle_count - limit and len(_handler_threads()) == limit

        _wait_until(all_seen, f"{limit} connections handled and {idle_count - limit} refused")
        assert peak <= limit
        assert threading.active_count() - before <= limit
        # A probe arriving now is answered at once with 503, not queued behind the idle ones.
        assert _get(server.port, "/healthz") == (503, b"busy\n")
        refused = [s for s in sockets if _readable(s)]
        assert len(refused) == idle_count - limit
        for sock in refused:
            assert sock.recv(4096).startswith(b"HTTP/1.0 503")
    # The idle clients went away: the threads end and the endpoint serves again.
    _wait_until(lambda: not _handler_threads(), "handler threads ended after the clients closed")
    assert _get(server.port, "/healthz") == (200, b"ok\n")


def _readable(sock: socket.socket) -> bool:
    """The server already sent something (or closed): refused sockets are, held idle ones are not.

    No waiting needed: the server counts a refusal after sending it, and on loopback a sent
    segment is in the receiver's queue when send() returns."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_idle_connections_time_out_and_free_their_slots(make_server: Callable[..., HealthServer]) -> None:
    limit = 3
    server = make_server(timeout_s=0.3, max_connections=limit)
    with ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", server.port))) for _ in range(limit)]
        for sock in idle:
            assert _closed_by_server(sock)
    _wait_until(lambda: not _handler_threads(), "handler threads ended")
    assert _get(server.port, "/readyz") == (200, b"ready\n")
    assert server.rejected == 0


def test_default_bind_is_loopback(make_server: Callable[..., HealthServer]) -> None:
    assert HealthConfig().host == "127.0.0.1"
    assert DEFAULT_MAX_CONNECTIONS >= 2  # a probe and a scrape at once
    minimal = parse_config("models: {lstm: {repository: models/lstm}}\ntenants: {acme: {models: [lstm]}}\n")
    assert minimal.health.host == "127.0.0.1"
    assert load_config(REPO / "examples" / "server.yaml").health.host == "127.0.0.1"
    server = HealthServer(minimal.health.host, 0, lambda: (True, ""), lambda: (True, ""), lambda: b"")
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_host_env_names_the_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_POD_IP", "127.0.0.2")
    assert HealthConfig.model_validate({"host_env": "TEST_POD_IP"}).host == "127.0.0.2"
    monkeypatch.setenv("TEST_POD_IP", "")
    assert HealthConfig.model_validate({"host_env": "TEST_POD_IP"}).host == "127.0.0.1"  # the fallback
    monkeypatch.delenv("TEST_POD_IP")
    assert HealthConfig.model_validate({"host_env": "TEST_POD_IP", "host": "::1"}).host == "::1"


def test_a_taken_port_is_a_one_line_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HealthPortError, match=rf"^health\.port {port}: .*127\.0\.0\.1:{port}"):
            HealthServer("127.0.0.1", port, lambda: (True, ""), lambda: (True, ""), lambda: b"")
