"""Embedded amqtt broker for ``broker.host: embedded`` and for tests: the broker process and its handle.

The broker runs in its own process, started with the ``spawn`` multiprocessing
context, so its asyncio loop and its GIL never compete with the worker's threads.

What amqtt 0.12 gives us (checked against the installed 0.12.1 source):

- MQTT 3.1.1 only. An MQTT v5 CONNECT is answered with CONNACK 0x01
  (unacceptable protocol version) and the connection is closed.
- No shared subscriptions: ``$share/...`` is treated as a literal topic filter
  that never matches anything, so every worker must use a plain filter and
  every subscriber gets every message. One worker per embedded broker.
- Password-file auth (``FileAuthPlugin``): lines ``user:hash`` where the hash
  is Argon2 (via ``pwdlib``) or the deprecated ``$6$`` sha512-crypt (needs the
  ``crypt`` module, gone in Python 3.13). Mosquitto's ``$7$`` hashes are NOT
  understood. Hashes are verified in the broker's event loop, so a costly hash
  blocks every client for its duration; we write cheap Argon2 hashes into a
  private temporary file (see :func:`provisioning.amqtt_auth.hash_password`).
- Static per-user topic ACLs (``TopicAccessControlListPlugin``), no ``%u``
  substitution. Only the ``acl`` (subscribe) and ``publish_acl`` keys exist in
  the plugin's config dataclass in 0.12.1: ``subscribe_acl``/``receive_acl``,
  though mentioned in its docs and code, are rejected by the strict config
  loader. A denied SUBSCRIBE gets SUBACK 0x80; a denied PUBLISH is acknowledged
  (PUBACK) and silently dropped. With an empty ``publish_acl`` amqtt allows every
  publish, so we never pass an empty one.
- Anonymous mode (``AnonymousAuthPlugin``) marks every session anonymous, and
  amqtt does not queue QoS 1/2 messages for disconnected anonymous sessions
  (``clean_session=False`` then only keeps subscriptions while connected).
  With ``users`` set, persistent sessions work, in memory only: nothing
  survives a broker restart.
- amqtt delivers at the subscription's QoS, not ``min(publish QoS, subscription
  QoS)`` as MQTT requires.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from provisioning.amqtt_auth import EmbeddedAuth, load_embedded_auth, write_password_file
from provisioning.amqtt_config import ACL_PLUGIN, DEFAULT_HOST, build_broker_config, connect_host
from provisioning.amqtt_serve import child_main
from provisioning.broker_errors import EmbeddedAuthError, EmbeddedBrokerError, EmbeddedBrokerPortError

__all__ = ["AuthEmbeddedBroker", "EmbeddedBroker", "embedded_broker"]

_SPAWN_HINT = (
    "; note: the broker process is started with multiprocessing 'spawn', which re-imports the "
    "__main__ module: a script that starts a broker must do so under `if __name__ == '__main__':`"
)

# The name the embedded broker has always logged under.
_log = logging.getLogger("provisioning.embedded_broker")


def _mqtt_ping(host: str, port: int, timeout: float) -> int:
    """Send an MQTT 3.1.1 CONNECT and return the CONNACK return code.

    Proves that the broker accepts TCP connections and speaks MQTT. A refused
    CONNACK (auth enabled) still proves liveness.
    """
    client_id = f"embedded-broker-ping-{os.getpid()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x00"  # protocol 3.1.1, clean session, keepalive 0
    payload = struct.pack("!H", len(client_id)) + client_id
    body = variable + payload
    packet = b"\x10" + bytes([len(body)]) + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(packet)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError("connection closed before CONNACK")
            connack += chunk
        if connack[0] != 0x20:
            raise ConnectionError(f"expected CONNACK, got packet type {connack[0]:#x}")
        if connack[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return connack[3]


class EmbeddedBroker:
    """An amqtt 0.12 broker in a spawned child process.

    >>> with EmbeddedBroker(port=0) as broker:
    ...     connect_to(broker.host, broker.port)

    ``port=0`` picks a free port; ``.port`` is the actual one once started.
    ``users`` (user name -> password) turns on password auth and refuses
    anonymous clients; ``password_file`` does the same from an existing amqtt
    password file (``user:argon2-hash`` lines). ``topic_acl`` (user name ->
    topic filters) restricts publish and subscribe per user. amqtt logs at
    ``log_level`` (warnings only by default) to this process's stderr.
    """

    kind: ClassVar[str] = "amqtt"
    supports_shared_subscriptions: ClassVar[bool] = False
    supports_mqtt5: ClassVar[bool] = False

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        users: Mapping[str, str] | None = None,
        topic_acl: Mapping[str, Sequence[str]] | None = None,
        password_file: str | Path | None = None,
        log_level: int | str = logging.WARNING,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if users is not None and password_file is not None:
            raise EmbeddedBrokerError("give users or password_file, not both")
        if not 0 <= port <= 65535:
            raise EmbeddedBrokerError(f"invalid port {port}")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.users = dict(users) if users is not None else None
        self.topic_acl = {u: list(f) for u, f in topic_acl.items()} if topic_acl is not None else None
        self.password_file = Path(password_file) if password_file is not None else None
        level = logging.getLevelName(log_level.upper()) if isinstance(log_level, str) else log_level
        if not isinstance(level, int):
            raise EmbeddedBrokerError(f"unknown log level {log_level!r}")
        self.log_level: int = level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._tmpdir: Path | None = None

    # -- properties

    @property
    def port(self) -> int:
        """The listening port (the requested one until started)."""
        return self._port if self._port is not None else self._requested_port

    @property
    def connect_host(self) -> str:
        """Where a client on this machine connects (``host`` unless it is a wildcard)."""
        return connect_host(self.host)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def auth_enabled(self) -> bool:
        return self.users is not None or self.password_file is not None

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port}, {state}, pid={self.pid})"

    # -- lifecycle

    def config(self) -> dict[str, Any]:
        """The amqtt config the child process is started with."""
        password_file: Path | None = self.password_file
        if self.users is not None:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="amqtt-broker-"))
            password_file = write_password_file(self._tmpdir / "passwd", self.users)
        return build_broker_config(
            self.host, self._requested_port, password_file=password_file, topic_acl=self.topic_acl
        )

    def start(self) -> EmbeddedBroker:
        """Start the broker process and wait (bounded) until it answers an MQTT CONNECT."""
        if self._process is not None:
            raise EmbeddedBrokerError(f"{self!r} already started")
        if self.password_file is not None and not self.password_file.is_file():
            raise EmbeddedBrokerError(f"password file not found: {self.password_file}")
        try:
            config = self.config()
            ctx = multiprocessing.get_context("spawn")
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            self._conn = parent_conn
            self._process = ctx.Process(
                target=child_main,
                args=(config, self.log_level, child_conn),
                name=f"amqtt-broker-{self.host}:{self._requested_port}",
                daemon=True,
            )
            self._process.start()
            child_conn.close()
            self._port = self._wait_ready(parent_conn, self._process)
            self._wait_accepting()
        except BaseException:
            self.stop()
            raise
        _log.debug("embedded amqtt broker listening on %s:%s (pid %s)", self.host, self.port, self.pid)
        return self

    def _wait_ready(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> int:
        where = f"{self.host}:{self._requested_port or '<free port>'}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                has_message = conn.poll(0.05)
            except (EOFError, OSError):
                has_message = False
            if has_message:
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    kind, value = "error", "broker process closed its pipe before listening" + _SPAWN_HINT
                if kind == "ready":
                    return int(value)
                if kind == "port_unavailable":
                    raise EmbeddedBrokerPortError(self.host, self._requested_port, str(value))
                raise EmbeddedBrokerError(f"embedded amqtt broker failed to start on {where}: {value}")
            if not process.is_alive():
                raise EmbeddedBrokerError(
                    f"embedded amqtt broker process exited with code {process.exitcode} "
                    f"before listening on {where} (see its stderr){_SPAWN_HINT}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedBrokerError(
                    f"embedded amqtt broker did not listen on {where} within {self.start_timeout:.0f} s"
                )

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise EmbeddedBrokerError(f"embedded amqtt broker on {self.host}:{self.port} exited during start")
            try:
                _mqtt_ping(self.connect_host, self.port, timeout=2.0)
                return
            except OSError as exc:
                last_error = exc
                time.sleep(0.02)
        raise EmbeddedBrokerError(
            f"embedded amqtt broker on {self.host}:{self.port} does not answer MQTT CONNECT: {last_error}"
        )

    def stop(self) -> None:
        """Stop the broker: SIGTERM (graceful amqtt shutdown), join, SIGKILL as a last resort.

        Idempotent; also removes the temporary password file.
        """
        process, self._process = self._process, None
        conn, self._conn = self._conn, None
        if process is not None:
            if process.is_alive():
                process.terminate()
                process.join(self.stop_timeout)
            if process.is_alive():
                _log.warning("embedded amqtt broker pid %s ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.join(5.0)
            with contextlib.suppress(ValueError):
                process.close()
        if conn is not None:
            conn.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._port = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class AuthEmbeddedBroker(EmbeddedBroker):
    """EmbeddedBroker with separate subscribe and publish ACLs.

    EmbeddedBroker applies one ``topic_acl`` to both; the generated rules differ (a tenant
    reads ``tenants/<t>/#`` but writes only its requests), so the publish ACL replaces the
    copy in the amqtt config here.
    """

    def __init__(self, host: str, port: int, *, auth: EmbeddedAuth, **kwargs: Any) -> None:
        super().__init__(host, port, password_file=auth.password_file, topic_acl=auth.subscribe_acl, **kwargs)
        # amqtt allows every publish when publish_acl is empty: never pass an empty one.
        self.publish_acl = {user: list(topics) for user, topics in auth.publish_acl.items() if topics}
        if not self.publish_acl:
            raise EmbeddedAuthError("the embedded broker auth file grants no publish rights to anyone")

    def config(self) -> dict[str, Any]:
        config = super().config()
        plugin = config["plugins"].get(ACL_PLUGIN)
        if plugin is None:
            raise EmbeddedAuthError("EmbeddedBroker did not configure amqtt's topic ACL plugin")
        plugin["publish_acl"] = {user: list(topics) for user, topics in self.publish_acl.items()}
        return config


def embedded_broker(auth_file: Path, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AuthEmbeddedBroker:
    """An embedded amqtt broker with the users and ACLs of ``auth_file`` (``amqtt-auth.json``)."""
    return AuthEmbeddedBroker(host, port, auth=load_embedded_auth(auth_file), **kwargs)

