"""Embedded amqtt broker for ``broker.host: embedded`` and for tests.

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
  private temporary file (see :func:`hash_password`).
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

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

__all__ = [
    "AMQTT_AUTH_VERSION",
    "DEFAULT_HOST",
    "AuthEmbeddedBroker",
    "EmbeddedAuth",
    "EmbeddedAuthError",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "EmbeddedBrokerPortError",
    "build_broker_config",
    "embedded_broker",
    "hash_password",
    "load_embedded_auth",
    "main",
    "write_password_file",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883

_ANONYMOUS_PLUGIN = "amqtt.plugins.authentication.AnonymousAuthPlugin"
_FILE_AUTH_PLUGIN = "amqtt.plugins.authentication.FileAuthPlugin"
_ACL_PLUGIN = "amqtt.plugins.topic_checking.TopicAccessControlListPlugin"
# A user name no MQTT client can log in with (FileAuthPlugin refuses an empty
# or absent user name): keeps ``publish_acl`` non-empty, see the module doc.
_NOBODY = "\x00nobody"

_SPAWN_HINT = (
    "; note: the broker process is started with multiprocessing 'spawn', which re-imports the "
    "__main__ module: a script that starts a broker must do so under `if __name__ == '__main__':`"
)

_log = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started (or was used wrongly)."""


class EmbeddedBrokerPortError(EmbeddedBrokerError):
    """The embedded broker's address cannot be bound (port taken, or not allowed)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(reason)
        self.host = host
        self.port = port
        self.reason = reason


# --------------------------------------------------------------------------- config


def hash_password(password: str) -> str:
    """Return an Argon2id hash of ``password`` in the form amqtt's FileAuthPlugin reads.

    The cost is deliberately low (8 MiB, one pass, about 5 ms): amqtt verifies
    hashes inside its single event loop, so every CONNECT with a costly hash
    stalls the whole broker. The files we write are private (0600 in a 0700
    temporary directory) and live only as long as the broker.
    """
    from pwdlib.hashers.argon2 import Argon2Hasher

    return Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1).hash(password)


def write_password_file(path: str | Path, users: Mapping[str, str]) -> Path:
    """Write ``user:argon2-hash`` lines for ``users`` (user name -> password) to ``path``."""
    path = Path(path)
    for name in users:
        if not name or ":" in name or "\n" in name or name.strip() != name:
            raise EmbeddedBrokerError(f"invalid MQTT user name for the password file: {name!r}")
    lines = [f"{name}:{hash_password(password)}\n" for name, password in users.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


def build_broker_config(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    password_file: str | Path | None = None,
    topic_acl: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Build the amqtt 0.12 broker config (the ``plugins`` dict style of 0.12).

    - ``password_file`` None: anonymous clients allowed (any user name, no password check).
    - ``password_file`` given: only users in the file with the right password may connect.
    - ``topic_acl`` (user name -> topic filters) given: each user may publish and
      subscribe only within its filters; users not listed may do neither. In
      anonymous mode a client without a user name is looked up as ``"anonymous"``.
    - ``topic_acl`` None: no topic restrictions.

    No ``$SYS`` plugin and no packet/event logger plugins: they cost time per
    packet and nothing here reads them.
    """
    plugins: dict[str, Any] = {}
    if password_file is None:
        plugins[_ANONYMOUS_PLUGIN] = {"allow_anonymous": True}
    else:
        plugins[_FILE_AUTH_PLUGIN] = {"password_file": str(password_file)}
    if topic_acl is not None:
        acl = {user: [str(f) for f in filters] for user, filters in topic_acl.items()}
        if not acl:
            acl = {_NOBODY: []}
        # "acl" is the subscribe ACL; "subscribe_acl" is not accepted in 0.12.1.
        plugins[_ACL_PLUGIN] = {"acl": acl, "publish_acl": dict(acl)}
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{_bind_host(host)}:{port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": plugins,
    }


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _connect_host(host: str) -> str:
    """The address to reach a listener bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.strip("[]")


# --------------------------------------------------------------------------- serving


def _configure_logging(level: int) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s amqtt[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("amqtt", "transitions", "websockets"):
        logging.getLogger(name).setLevel(level)
    # amqtt 0.12 warns about its own deprecated config keys (for example "acl")
    # and about psutil; none of that is actionable at run time.
    warnings.simplefilter("ignore", DeprecationWarning)


def _listening_port(broker: Any, fallback: int) -> int:
    """The port the broker's default TCP listener is bound to (resolves port 0)."""
    servers = getattr(broker, "_servers", {})
    server = servers.get("default")
    sockets = getattr(getattr(server, "instance", None), "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    return fallback


async def _serve(
    config: dict[str, Any],
    *,
    stop: asyncio.Event,
    on_ready: Any,
    shutdown_timeout: float = 10.0,
) -> None:
    """Run an amqtt broker until ``stop`` is set; call ``on_ready(port)`` once it listens."""
    broker_cls = importlib.import_module("amqtt.broker").Broker
    broker = broker_cls(config)
    await broker.start()
    try:
        on_ready(_listening_port(broker, int(config["listeners"]["default"]["bind"].rsplit(":", 1)[1])))
        await stop.wait()
    finally:
        try:
            await asyncio.wait_for(broker.shutdown(), shutdown_timeout)
        except Exception as exc:  # a failed shutdown must not hide the real exit reason
            _log.warning("amqtt shutdown did not complete cleanly: %r", exc)


async def _child_async(config: dict[str, Any], conn: Connection) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_parent_message() -> None:
        # The parent sends "stop", or dies (EOF): either way we stop.
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = "stop"
        if message == "stop":
            loop.remove_reader(conn.fileno())
            stop.set()

    loop.add_reader(conn.fileno(), on_parent_message)

    def on_ready(port: int) -> None:
        conn.send(("ready", port))

    try:
        await _serve(config, stop=stop, on_ready=on_ready)
    except Exception as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ and str(exc.__cause__) not in str(exc) else ""
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}{cause}"))
        return 1
    return 0


def _port_in_use(bind: str) -> str | None:
    """A one-line reason when ``host:port`` (amqtt's ``bind`` form) cannot be bound, else None.

    Checked before amqtt starts, because amqtt logs a long traceback of its own for a
    port that is taken before reporting it. Same socket options as asyncio's server
    (SO_REUSEADDR), so a port in TIME_WAIT is not reported. Port 0 is always free.
    """
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _child_main(config: dict[str, Any], log_level: int, conn: Connection) -> None:
    """Entry point of the spawned broker process."""
    _configure_logging(log_level)
    taken = _port_in_use(config["listeners"]["default"]["bind"])
    if taken is not None:
        with contextlib.suppress(OSError):
            conn.send(("port_unavailable", taken))
        conn.close()
        sys.exit(1)
    code = asyncio.run(_child_async(config, conn))
    conn.close()
    sys.exit(code)


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
        return _connect_host(self.host)

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
                target=_child_main,
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


# --------------------------------------------------------------------------- users and ACLs from a file


AMQTT_AUTH_VERSION = 1  # of the amqtt-auth.json written by `python -m provisioning.broker_auth`


class EmbeddedAuthError(EmbeddedBrokerError):
    """An amqtt-auth.json that cannot be used (missing, malformed, an older version)."""


@dataclass(frozen=True, slots=True)
class EmbeddedAuth:
    password_file: Path
    subscribe_acl: dict[str, list[str]]
    publish_acl: dict[str, list[str]]


def load_embedded_auth(path: Path) -> EmbeddedAuth:
    """Read an ``amqtt-auth.json`` written by :func:`provisioning.broker_auth.generate`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EmbeddedAuthError(f"cannot read embedded broker auth file {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("version") != AMQTT_AUTH_VERSION:
        raise EmbeddedAuthError(f"{path}: not an amqtt auth file of version {AMQTT_AUTH_VERSION} (regenerate it)")
    acls: dict[str, dict[str, list[str]]] = {}
    for key in ("subscribe_acl", "publish_acl"):
        value = document.get(key)
        if not isinstance(value, dict) or not all(
            isinstance(u, str) and isinstance(fs, list) and all(isinstance(f, str) for f in fs)
            for u, fs in value.items()
        ):
            raise EmbeddedAuthError(f"{path}: '{key}' must map user names to lists of topic filters")
        acls[key] = {u: list(fs) for u, fs in value.items()}
    password_file = document.get("password_file")
    if not isinstance(password_file, str) or not password_file:
        raise EmbeddedAuthError(f"{path}: 'password_file' missing")
    resolved = Path(password_file) if Path(password_file).is_absolute() else path.parent / password_file
    if not resolved.is_file():
        raise EmbeddedAuthError(f"{path}: password file {resolved} not found")
    return EmbeddedAuth(resolved, acls["subscribe_acl"], acls["publish_acl"])


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
        plugin = config["plugins"].get(_ACL_PLUGIN)
        if plugin is None:
            raise EmbeddedAuthError("EmbeddedBroker did not configure amqtt's topic ACL plugin")
        plugin["publish_acl"] = {user: list(topics) for user, topics in self.publish_acl.items()}
        return config


def embedded_broker(auth_file: Path, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AuthEmbeddedBroker:
    """An embedded amqtt broker with the users and ACLs of ``auth_file`` (``amqtt-auth.json``)."""
    return AuthEmbeddedBroker(host, port, auth=load_embedded_auth(auth_file), **kwargs)


# --------------------------------------------------------------------------- CLI


def _load_acl_file(path: Path) -> dict[str, list[str]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EmbeddedBrokerError(f"cannot read ACL file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(user, str) and isinstance(filters, list) and all(isinstance(f, str) for f in filters)
        for user, filters in data.items()
    ):
        raise EmbeddedBrokerError(
            f"ACL file {path} must map user names to lists of topic filters, e.g. 'acme: [tenants/acme/#]'"
        )
    return data


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.embedded_broker",
        description="Run the embedded amqtt MQTT 3.1.1 broker in the foreground (Ctrl-C to stop).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 = free port (default %(default)s)"
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        help="amqtt password file, 'user:hash' lines (Argon2; make hashes with --hash-password); "
        "anonymous clients are refused when given",
    )
    parser.add_argument(
        "--acl-file",
        type=Path,
        help="YAML/JSON mapping user name -> list of topic filters the user may publish and subscribe to",
    )
    parser.add_argument("--log-level", default="WARNING", help="amqtt log level (default %(default)s)")
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from stdin, print its hash for a password file line, and exit",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.hash_password:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            print("no password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        if args.password_file is not None and not args.password_file.is_file():
            raise EmbeddedBrokerError(f"password file not found: {args.password_file}")
        topic_acl = _load_acl_file(args.acl_file) if args.acl_file is not None else None
        config = build_broker_config(args.host, args.port, password_file=args.password_file, topic_acl=topic_acl)
    except EmbeddedBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    level = logging.getLevelName(str(args.log_level).upper())
    if not isinstance(level, int):
        print(f"error: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    _configure_logging(level)
    taken = _port_in_use(config["listeners"]["default"]["bind"])
    if taken is not None:
        print(f"error: {taken} (--port)", file=sys.stderr)
        return 1

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def on_ready(port: int) -> None:
            auth = "password file" if args.password_file else "anonymous"
            print(f"amqtt broker listening on {args.host}:{port} (MQTT 3.1.1, {auth})", file=sys.stderr, flush=True)

        await _serve(config, stop=stop, on_ready=on_ready)

    try:
        asyncio.run(run())
    except Exception as exc:
        print(f"error: amqtt broker failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
