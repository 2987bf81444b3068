"""The embedded amqtt broker's users and ACLs on disk: Argon2 password files (``user:hash`` lines,
what amqtt's FileAuthPlugin reads) and ``amqtt-auth.json`` (password file + subscribe and publish
ACLs), written by :mod:`provisioning.broker_auth` from the access plan and read by
:func:`provisioning.amqtt_broker.embedded_broker`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.broker_errors import EmbeddedAuthError, EmbeddedBrokerError

if TYPE_CHECKING:
    from provisioning.access_plan import AccessPlan

__all__ = [
    "AMQTT_AUTH_FILE",
    "AMQTT_AUTH_VERSION",
    "AMQTT_PASSWORD_FILE",
    "EmbeddedAuth",
    "amqtt_auth_document",
    "hash_password",
    "load_embedded_auth",
    "write_password_file",
]

AMQTT_PASSWORD_FILE = "amqtt.passwd"
AMQTT_AUTH_FILE = "amqtt-auth.json"
AMQTT_AUTH_VERSION = 1  # of the amqtt-auth.json written by `python -m provisioning.broker_auth`


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


@dataclass(frozen=True, slots=True)
class EmbeddedAuth:
    password_file: Path
    subscribe_acl: dict[str, list[str]]
    publish_acl: dict[str, list[str]]


def load_embedded_auth(path: Path) -> EmbeddedAuth:
    """Read an ``amqtt-auth.json`` written by :func:`provisioning.auth_files.generate`."""
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


def amqtt_auth_document(plan: AccessPlan, password_file: str = AMQTT_PASSWORD_FILE) -> dict[str, Any]:
    """What :func:`load_embedded_auth` reads: password file (relative to
    the JSON) and both ACLs."""
    return {
        "version": AMQTT_AUTH_VERSION,
        "password_file": password_file,
        "subscribe_acl": {u.name: u.subscribe_filters() for u in plan.users},
        "publish_acl": {u.name: u.publish_topics() for u in plan.users},
    }

