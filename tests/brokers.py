"""Real MQTT brokers and a paho test client for the test suites.

- :func:`free_port` picks a free TCP port on 127.0.0.1.
- :class:`MosquittoBroker` runs ``mosquitto -c <conf>`` on a free 127.0.0.1 port with
  a generated (or rewritten) mosquitto.conf, persistence and a log file in a work dir.
- :func:`rewrite_mosquitto_conf` makes a production mosquitto.conf (for example the one
  in a Kubernetes ConfigMap) runnable here: only listeners, persistence location, log
  destination, pid file and run-as user change.
- :class:`BrokerHandle` is what the parametrized ``broker`` fixture yields.
- :class:`MqttProbe` is a paho 2.x client with bounded waits, for tests.

Import from test modules as ``from tests.brokers import MqttProbe``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

if TYPE_CHECKING:
    from provisioning.embedded_broker import EmbeddedBroker

__all__ = [
    "BrokerHandle",
    "MosquittoBroker",
    "MosquittoError",
    "MqttProbe",
    "MqttProbeError",
    "ReceivedMessage",
    "find_mosquitto",
    "free_port",
    "rewrite_mosquitto_conf",
]

LOCALHOST = "127.0.0.1"
_log = logging.getLogger(__name__)


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port_open(host: str, port: int, timeout: float) -> bool:
    """Poll until a TCP connect to ``host:port`` succeeds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.01)
    return False


def port_is_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# =========================================================================== Mosquitto


class MosquittoError(RuntimeError):
    """Mosquitto is missing, misconfigured or did not start."""


_INSTALL_HINT = (
    "the mosquitto broker is required by these tests and was not found "
    "(looked for `mosquitto` on PATH and /usr/sbin/mosquitto). "
    "Install it: `apt-get install mosquitto mosquitto-clients`"
)


def find_mosquitto() -> Path:
    """Path of the mosquitto executable; :class:`MosquittoError` with install advice if absent."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise MosquittoError(_INSTALL_HINT)


def find_mosquitto_passwd() -> Path:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise MosquittoError("mosquitto_passwd not found. Install it: `apt-get install mosquitto`")


def write_mosquitto_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file for ``users`` (name -> password) with ``mosquitto_passwd -U``."""
    path.write_text("".join(f"{name}:{password}\n" for name, password in users.items()), encoding="utf-8")
    path.chmod(0o600)
    result = subprocess.run(
        [str(find_mosquitto_passwd()), "-U", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise MosquittoError(f"mosquitto_passwd -U failed: {result.stderr.strip() or result.stdout.strip()}")
    return path


_LISTENER_RE = re.compile(r"^\s*(listener|port)\s+(\d+)(?:\s+(\S+))?\s*$")
_DROP_KEYS = frozenset({"log_dest", "user", "pid_file", "bind_address", "bind_interface"})


@dataclass(frozen=True)
class RewrittenConf:
    """Result of :func:`rewrite_mosquitto_conf`."""

    text: str
    port: int
    """The new port of the first listener (the MQTT one, by convention)."""
    listener_ports: dict[int, int]
    """Original listener port -> new local port, for every listener in the file."""


def rewrite_mosquitto_conf(
    text: str,
    *,
    port: int,
    persistence_location: Path,
    log_file: Path,
    host: str = LOCALHOST,
    file_map: Mapping[str, str | Path] | None = None,
    port_for: Callable[[], int] = free_port,
) -> RewrittenConf:
    """Make a production mosquitto.conf runnable on this machine; change nothing else.

    - ``listener N [addr]`` / ``port N``: the first becomes ``listener <port> <host>``,
      later ones get a fresh free port each (``listener_ports`` maps old -> new).
    - ``persistence_location`` points into the work dir (added if absent).
    - ``log_dest`` lines are replaced by one ``log_dest file <log_file>``.
    - ``user`` and ``pid_file`` lines are dropped; ``user root`` is added when running
      as root (otherwise mosquitto drops to user ``mosquitto`` and cannot write the
      work dir). ``bind_address``/``bind_interface`` are dropped (listeners bind ``host``).
    - ``file_map`` replaces whole-word paths (e.g. ``/mosquitto/config/passwd`` ->
      a file in the work dir) anywhere in option values.
    Everything else (``set_tcp_nodelay``, ``allow_anonymous``, ``acl_file``, queue
    limits, ``per_listener_settings``...) is kept exactly, since that is what a
    manifest test wants to exercise.
    """
    out: list[str] = []
    listener_ports: dict[int, int] = {}
    first_port: int | None = None
    saw_persistence_location = False
    mapping = {str(k): str(v) for k, v in (file_map or {}).items()}
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        key = stripped.split(None, 1)[0]
        if mapping:
            parts = stripped.split()
            parts = [mapping.get(p, p) for p in parts]
            line = " ".join(parts)
        match = _LISTENER_RE.match(line)
        if match:
            original = int(match.group(2))
            new = port if first_port is None else port_for()
            if first_port is None:
                first_port = new
            listener_ports[original] = new
            out.append(f"listener {new} {host}")
            continue
        if key in _DROP_KEYS:
            out.append(f"# (dropped for local test run) {stripped}")
            continue
        if key == "persistence_location":
            out.append(f"persistence_location {persistence_location}/")
            saw_persistence_location = True
            continue
        out.append(line)
    if first_port is None:
        raise MosquittoError("mosquitto.conf has no `listener` (or `port`) line to rewrite")
    out.append("")
    out.append("# added for the local test run")
    if not saw_persistence_location:
        out.append(f"persistence_location {persistence_location}/")
    out.append(f"log_dest file {log_file}")
    if os.geteuid() == 0:
        out.append("user root")
    return RewrittenConf(text="\n".join(out) + "\n", port=first_port, listener_ports=listener_ports)


class MosquittoBroker:
    """A real ``mosquitto`` process on 127.0.0.1 for tests.

    The generated mosquitto.conf (see :meth:`render_conf`)::

        listener <port> 127.0.0.1
        set_tcp_nodelay true          # paho + Nagle + delayed ACK = 40 ms stalls
        allow_anonymous true          # default; false when a password file is given
        persistence true              # restart() keeps sessions and queued QoS>0 messages
        persistence_location <workdir>/
        max_queued_messages 100000    # default 1000: a burst to a slow QoS 1 subscriber
                                      # is silently DROPPED beyond that
        max_inflight_messages 1000    # default 20 unacked QoS>0 messages per v3.1.1
                                      # subscriber (v5 clients: their receive maximum);
                                      # bounded (not 0) so flow control still exists
        log_dest file <workdir>/mosquitto.log

    ``conf_text`` replaces all of that with a given file, rewritten by
    :func:`rewrite_mosquitto_conf` (only listener/persistence/log/user lines change).
    ``users`` (name -> password) writes a password file with ``mosquitto_passwd``;
    ``acl_text`` writes an ACL file. :meth:`restart` reuses the same port and work
    dir; :meth:`stop` sends SIGTERM so mosquitto saves its persistence database.
    """

    kind: Literal["mosquitto"] = "mosquitto"
    supports_shared_subscriptions = True
    supports_mqtt5 = True

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        port: int | None = None,
        host: str = LOCALHOST,
        allow_anonymous: bool | None = None,
        persistence: bool = True,
        persistence_location: Path | str | None = None,
        password_file: Path | str | None = None,
        users: Mapping[str, str] | None = None,
        acl_file: Path | str | None = None,
        acl_text: str | None = None,
        extra_conf: Sequence[str] = (),
        conf_text: str | None = None,
        file_map: Mapping[str, str | Path] | None = None,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 1000,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        executable: Path | str | None = None,
    ) -> None:
        if password_file is not None and users is not None:
            raise ValueError("give password_file or users, not both")
        if acl_file is not None and acl_text is not None:
            raise ValueError("give acl_file or acl_text, not both")
        self.executable = Path(executable) if executable is not None else find_mosquitto()
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(host)
        self.persistence = persistence
        self.persistence_location = (
            Path(persistence_location) if persistence_location is not None else self.workdir / "data"
        )
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.output_path = self.workdir / "mosquitto.out"
        self.password_file = Path(password_file) if password_file is not None else None
        self.users = dict(users) if users is not None else None
        self.acl_file = Path(acl_file) if acl_file is not None else None
        self.acl_text = acl_text
        has_passwords = self.password_file is not None or self.users is not None
        self.allow_anonymous = (not has_passwords) if allow_anonymous is None else allow_anonymous
        self.extra_conf = list(extra_conf)
        self.conf_text = conf_text
        self.file_map = dict(file_map or {})
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.listener_ports: dict[int, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    # -- configuration

    def _prepare_auth_files(self) -> None:
        if self.users is not None and self.password_file is None:
            self.password_file = write_mosquitto_password_file(self.workdir / "passwd", self.users)
        if self.acl_text is not None and self.acl_file is None:
            self.acl_file = self.workdir / "acl"
            self.acl_file.write_text(self.acl_text, encoding="utf-8")

    def render_conf(self) -> str:
        """The mosquitto.conf text :meth:`start` writes (after auth files are prepared)."""
        self.persistence_location.mkdir(parents=True, exist_ok=True)
        if self.conf_text is not None:
            rewritten = rewrite_mosquitto_conf(
                self.conf_text,
                port=self.port,
                host=self.host,
                persistence_location=self.persistence_location,
                log_file=self.log_path,
                file_map=self.file_map,
                port_for=lambda: free_port(self.host),
            )
            self.listener_ports = rewritten.listener_ports
            extra = "".join(f"{line}\n" for line in self.extra_conf)
            return rewritten.text + extra
        lines = [
            "# generated by tests/brokers.py MosquittoBroker",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "set_tcp_nodelay true",
            f"allow_anonymous {str(self.allow_anonymous).lower()}",
            f"persistence {str(self.persistence).lower()}",
            f"persistence_location {self.persistence_location}/",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to `mosquitto` and cannot write workdir
        lines.extend(self.extra_conf)
        self.listener_ports = {self.port: self.port}
        return "\n".join(lines) + "\n"

    # -- lifecycle

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def connect_host(self) -> str:
        return self.host

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MosquittoBroker:
        """Write the conf, start mosquitto, wait (bounded) until the port accepts connections.

        If the port was picked automatically and mosquitto exits because it is taken
        (a race with another process), a new free port is tried, twice at most.
        """
        if self.is_running():
            raise MosquittoError(f"{self!r} is already running")
        self._prepare_auth_files()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except MosquittoError:
                if attempt + 1 < attempts and "Address already in use" in self.log_tail():
                    self.port = free_port(self.host)
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.conf_path.write_text(self.render_conf(), encoding="utf-8")
        self._close_output()
        self._output = self.output_path.open("ab")
        self._process = subprocess.Popen(
            [str(self.executable), "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # a Ctrl-C on the test run must not hit it first
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                self._close_output()
                raise MosquittoError(
                    f"mosquitto exited with code {code} while starting on {self.host}:{self.port}\n{self.describe()}"
                )
            if port_is_open(self.host, self.port) and self._process.poll() is None:
                return
            time.sleep(0.01)
        self.kill()
        raise MosquittoError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within "
            f"{self.start_timeout:.0f} s\n{self.describe()}"
        )

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (mosquitto then saves its persistence db), wait, SIGKILL as a last resort.

        Returns the exit code (None if it was not running). Keeps the work dir.
        """
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout if timeout is None else timeout)
                except subprocess.TimeoutExpired:
                    _log.warning("mosquitto pid %s ignored SIGTERM; killing it", process.pid)
                    process.kill()
                    process.wait(5.0)
            code = process.returncode
        self._close_output()
        return code

    def kill(self) -> None:
        """SIGKILL: no persistence save, like a crashed pod."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5.0)
        self._close_output()

    def restart(self, *, kill: bool = False) -> MosquittoBroker:
        """Stop (or kill) and start again on the SAME port with the same persistence dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        fixed, self._fixed_port = self._fixed_port, True
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def close(self) -> None:
        """Stop, and remove the work dir if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    # -- diagnostics

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of mosquitto's log file and of its stdout/stderr."""
        chunks = []
        for path in (self.log_path, self.output_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                if text:
                    chunks.append(f"--- {path.name} (last {min(lines, len(text))} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks) if chunks else "(no mosquitto output)"

    def describe(self) -> str:
        """Conf file path and log tail, for failure messages."""
        return f"conf: {self.conf_path}\n{self.log_tail()}"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"MosquittoBroker({self.host}:{self.port}, {state}, workdir={self.workdir})"

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# =========================================================================== broker handle


@dataclass(frozen=True)
class BrokerHandle:
    """What the parametrized ``broker`` fixture yields: where a broker is and what it can do."""

    kind: Literal["mosquitto", "amqtt"]
    host: str
    port: int
    supports_shared_subscriptions: bool
    supports_mqtt5: bool
    server: MosquittoBroker | EmbeddedBroker = field(repr=False)

    @property
    def protocol(self) -> Literal["3.1.1", "5"]:
        """The best MQTT protocol version this broker speaks."""
        return "5" if self.supports_mqtt5 else "3.1.1"

    def probe(self, **kwargs: Any) -> MqttProbe:
        """A connected :class:`MqttProbe` on this broker (close it, or use ``with``)."""
        kwargs.setdefault("protocol", self.protocol)
        return MqttProbe(self.host, self.port, **kwargs).connect()

    def log_tail(self) -> str:
        if isinstance(self.server, MosquittoBroker):
            return self.server.log_tail()
        return "(amqtt logs to the test process's stderr)"

    @classmethod
    def for_mosquitto(cls, server: MosquittoBroker) -> BrokerHandle:
        return cls("mosquitto", server.connect_host, server.port, True, True, server)

    @classmethod
    def for_amqtt(cls, server: EmbeddedBroker) -> BrokerHandle:
        return cls(
            "amqtt",
            server.connect_host,
            server.port,
            server.supports_shared_subscriptions,
            server.supports_mqtt5,
            server,
        )


# =========================================================================== MQTT probe


class MqttProbeError(RuntimeError):
    """The probe could not connect, subscribe or publish."""

    def __init__(self, message: str, reason_code: ReasonCode | int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True)
class ReceivedMessage:
    """One message a :class:`MqttProbe` received."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    received_at: float
    """``time.monotonic()`` when the probe's network thread got it."""

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def response_topic(self) -> str | None:
        return getattr(self.properties, "ResponseTopic", None) if self.properties is not None else None

    @property
    def correlation_data(self) -> bytes | None:
        return getattr(self.properties, "CorrelationData", None) if self.properties is not None else None

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        if self.properties is None:
            return []
        return list(getattr(self.properties, "UserProperty", []))


Payload = bytes | bytearray | str | Mapping[str, Any] | list[Any]
_probe_ids = itertools.count(1)


def _encode_payload(payload: Payload) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _protocol_constant(protocol: str | int) -> MQTTProtocolVersion:
    if protocol in ("5", 5):
        return MQTTProtocolVersion.MQTTv5
    if protocol in ("3.1.1", "311", 4):
        return MQTTProtocolVersion.MQTTv311
    raise ValueError(f"unsupported MQTT protocol {protocol!r}: use '3.1.1' or '5'")


class MqttProbe:
    """A paho-mqtt 2.x test client with bounded waits.

    - ``TCP_NODELAY`` is set on the socket in ``on_connect`` (every (re)connect).
    - Received messages are collected in a thread-safe list; :meth:`wait_for` waits
      for a count or a predicate, with a timeout and a helpful error.
    - :meth:`publish` and :meth:`subscribe` wait for the broker's acknowledgement.
    - paho's network thread reconnects by itself after a broker restart
      (:meth:`wait_connected` waits for that).

    ``clean_session`` means clean session (3.1.1) or clean start (5). For a
    persistent session give a fixed ``client_id`` and ``clean_session=False``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        protocol: str | int = "3.1.1",
        clean_session: bool = True,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        session_expiry_s: int | None = None,
        max_inflight: int = 1000,
    ) -> None:
        self.host = host
        self.port = port
        self.protocol = _protocol_constant(protocol)
        self.client_id = client_id or f"probe-{os.getpid()}-{next(_probe_ids)}-{uuid.uuid4().hex[:6]}"
        self.username = username
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.session_expiry_s = session_expiry_s
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._connected = False
        self._connack: ReasonCode | None = None
        self._session_present: bool | None = None
        self._disconnects = 0
        self._last_disconnect: ReasonCode | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._unsubacks: dict[int, list[ReasonCode]] = {}
        self._callback_errors: list[BaseException] = []
        self._closed = False
        self._loop_started = False

        v5 = self.protocol == mqtt.MQTTv5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else clean_session,
            protocol=self.protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(max_inflight)
        # paho sleeps in min(delay, 1 s) steps before reconnecting, and loop_stop() waits
        # for that sleep: sub-second delays (floats work; paho annotates int) keep both
        # reconnects after a broker restart and close() after a broker died fast.
        self.client.reconnect_delay_set(min_delay=cast(int, 0.1), max_delay=cast(int, 0.5))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe

    # -- paho callbacks (network thread): record and notify only

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._cond:
            self._connack = reason_code
            self._connected = not reason_code.is_failure
            self._session_present = bool(flags.session_present)
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
            self._disconnects += 1
            self._last_disconnect = reason_code
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            received = ReceivedMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                properties=getattr(message, "properties", None),
                received_at=time.monotonic(),
            )
        except Exception as exc:  # never let an exception kill paho's network thread
            with self._cond:
                self._callback_errors.append(exc)
            return
        with self._cond:
            self._messages.append(received)
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._unsubacks[mid] = list(reason_codes)
            self._cond.notify_all()

    # -- connection

    def connect(self, timeout: float | None = None) -> MqttProbe:
        """Connect and wait for CONNACK; :class:`MqttProbeError` (with ``reason_code``) if refused."""
        timeout = self.connect_timeout if timeout is None else timeout
        properties: Properties | None = None
        if self.protocol == mqtt.MQTTv5 and self.session_expiry_s is not None:
            from paho.mqtt.packettypes import PacketTypes

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry_s
        with self._cond:
            self._connack = None
            disconnects_before = self._disconnects
        try:
            if self.protocol == mqtt.MQTTv5:
                self.client.connect(
                    self.host, self.port, self.keepalive, clean_start=self.clean_session, properties=properties
                )
            else:
                self.client.connect(self.host, self.port, self.keepalive)
        except OSError as exc:
            raise MqttProbeError(f"{self.client_id}: cannot reach {self.host}:{self.port}: {exc}") from exc
        if not self._loop_started:
            self.client.loop_start()
            self._loop_started = True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._connack is None and self._disconnects == disconnects_before:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            connack = self._connack
            closed_early = self._disconnects != disconnects_before and connack is None
        if connack is not None and not connack.is_failure:
            return self
        self._stop_loop()
        where = f"{self.host}:{self.port}"
        if connack is not None:
            raise MqttProbeError(
                f"{self.client_id}: broker {where} refused the connection: {connack} ({connack.value:#04x})",
                connack,
            )
        if closed_early:
            raise MqttProbeError(f"{self.client_id}: broker {where} closed the connection before CONNACK")
        raise MqttProbeError(f"{self.client_id}: no CONNACK from {where} within {timeout:.1f} s")

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def session_present(self) -> bool | None:
        """The CONNACK session-present flag of the latest connection."""
        with self._cond:
            return self._session_present

    @property
    def connack(self) -> ReasonCode | None:
        with self._cond:
            return self._connack

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until paho's loop has (re)connected, e.g. after a broker restart."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id}: not reconnected within {timeout:.1f} s")
                self._cond.wait(remaining)

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id}: still connected after {timeout:.1f} s")
                self._cond.wait(remaining)

    # -- subscribe / publish

    def subscribe(
        self, filters: str | Iterable[str], qos: int = 1, *, timeout: float = 10.0, check: bool = True
    ) -> list[int]:
        """Subscribe and wait for SUBACK; returns the granted QoS / reason code per filter.

        With ``check`` (default) a refused filter (reason code >= 0x80) raises.
        """
        topics = [filters] if isinstance(filters, str) else list(filters)
        result, mid = self.client.subscribe([(t, qos) for t in topics])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttProbeError(f"{self.client_id}: subscribe {topics} failed: {mqtt.error_string(result)}")
        codes = self._wait_ack(self._subacks, mid, timeout, f"SUBACK for {topics}")
        values = [code.value for code in codes]
        if check and any(code.is_failure for code in codes):
            raise MqttProbeError(f"{self.client_id}: subscription to {topics} refused: {values}", codes[0])
        return values

    def unsubscribe(self, filters: str | Iterable[str], *, timeout: float = 10.0) -> None:
        topics = [filters] if isinstance(filters, str) else list(filters)
        result, mid = self.client.unsubscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttProbeError(f"{self.client_id}: unsubscribe {topics} failed: {mqtt.error_string(result)}")
        self._wait_ack(self._unsubacks, mid, timeout, f"UNSUBACK for {topics}")

    def _wait_ack(self, acks: dict[int, list[ReasonCode]], mid: int, timeout: float, what: str) -> list[ReasonCode]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id}: no {what} within {timeout:.1f} s")
                self._cond.wait(remaining)
            return acks.pop(mid)

    def publish(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 1,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        wait: bool = True,
        timeout: float = 10.0,
    ) -> mqtt.MQTTMessageInfo:
        """Publish (dicts/lists as compact JSON) and, with ``wait``, block until done.

        Done means PUBACK (QoS 1) / PUBCOMP (QoS 2) received, or written to the socket (QoS 0).
        """
        info = self.client.publish(topic, _encode_payload(payload), qos, retain=retain, properties=properties)
        if wait:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                raise MqttProbeError(f"{self.client_id}: publish to {topic!r} failed: {exc}") from exc
            if not info.is_published():
                raise TimeoutError(f"{self.client_id}: publish to {topic!r} not acknowledged within {timeout:.1f} s")
        return info

    @staticmethod
    def v5_properties(
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> Properties:
        """PUBLISH properties for MQTT v5 (response topic, correlation data, user properties)."""
        from paho.mqtt.packettypes import PacketTypes

        props = Properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        if user_properties:
            props.UserProperty = list(user_properties)
        return props

    # -- received messages

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of everything received so far."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(
        self,
        condition: int | Callable[[ReceivedMessage], bool] = 1,
        timeout: float = 10.0,
        *,
        count: int = 1,
        topic: str | None = None,
    ) -> list[ReceivedMessage]:
        """Wait until enough messages arrived; return the matching ones (in arrival order).

        - ``wait_for(5)``: at least 5 messages (matching ``topic``, an MQTT filter, if given).
        - ``wait_for(pred, count=3)``: at least 3 messages for which ``pred(msg)`` is true.
        Raises ``TimeoutError`` listing what did arrive.
        """
        if isinstance(condition, int):
            wanted = condition
            predicate: Callable[[ReceivedMessage], bool] = lambda _m: True  # noqa: E731
        else:
            wanted = count
            predicate = condition

        def matching() -> list[ReceivedMessage]:
            return [
                m for m in self._messages if (topic is None or mqtt.topic_matches_sub(topic, m.topic)) and predicate(m)
            ]

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = matching()
                if len(found) >= wanted:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.topic for m in self._messages[-10:]]
                    raise TimeoutError(
                        f"{self.client_id}: wanted {wanted} matching message(s)"
                        f"{f' on {topic!r}' if topic else ''} within {timeout:.1f} s, got {len(found)} "
                        f"(of {len(self._messages)} received; last topics: {seen}); "
                        f"connected={self._connected}"
                    )
                self._cond.wait(remaining)

    def assert_no_messages(self, within: float = 0.5, *, topic: str | None = None) -> None:
        """Wait ``within`` seconds and fail if any message (on ``topic``) arrived meanwhile or before."""
        time.sleep(within)
        with self._cond:
            got = [m for m in self._messages if topic is None or mqtt.topic_matches_sub(topic, m.topic)]
        assert not got, f"{self.client_id}: expected no messages, got {[(m.topic, m.payload[:60]) for m in got]}"

    @property
    def callback_errors(self) -> list[BaseException]:
        with self._cond:
            return list(self._callback_errors)

    # -- shutdown

    def _stop_loop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._loop_started:
            self.client.loop_stop()
            self._loop_started = False

    def close(self) -> None:
        """Send DISCONNECT (a persistent session stays on the broker) and stop the network thread."""
        if self._closed:
            return
        self._closed = True
        self._stop_loop()

    def __enter__(self) -> MqttProbe:
        if not self.connected:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MqttProbe({self.client_id!r} -> {self.host}:{self.port}, connected={self.connected})"
