"""A real ``mosquitto`` process for tests: :class:`MosquittoBroker`.

It runs on a free 127.0.0.1 port with a generated mosquitto.conf, or a production one made
runnable by :func:`~tests.support.mosquitto_conf.rewrite_mosquitto_conf`; persistence and
log in a work dir; restart on the same port.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from tests.support.mosquitto_conf import MosquittoError, rewrite_mosquitto_conf, write_mosquitto_password_file
from tests.support.ports import LOCALHOST, free_port, port_is_open

__all__ = ["MosquittoBroker", "MosquittoError", "find_mosquitto"]

_log = logging.getLogger(__name__)

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
            "# generated by tests/support/mosquitto.py MosquittoBroker",
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
