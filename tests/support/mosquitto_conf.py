"""The files a test Mosquitto reads: a production mosquitto.conf made runnable here, password files.

- :func:`rewrite_mosquitto_conf`: only listeners, persistence location, log destination, pid
  file and run-as user change (for example in the mosquitto.conf of a Kubernetes ConfigMap).
- :func:`write_mosquitto_password_file` with ``mosquitto_passwd -U``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import LOCALHOST, free_port


class MosquittoError(RuntimeError):
    """Mosquitto is missing, misconfigured or did not start."""


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
