"""The passwords file of :mod:`provisioning.broker_auth` (``users: {name: password}``): read and
checked, the worker's password reconciled with the server config, missing ones generated and
written back (0600)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provisioning.access_plan import AccessPlan
from provisioning.atomic_file import atomic_write
from provisioning.auth_errors import AuthError
from server_app.config import ServerConfig
from server_app.errors import ConfigError

__all__ = ["Passwords", "ensure_passwords", "load_passwords"]


def load_passwords(path: Path) -> dict[str, Any]:
    """The passwords YAML as a mapping (``{}`` if the file does not exist)."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AuthError(f"cannot read passwords file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AuthError(f"passwords file {path}: top level must be a mapping like 'users: {{acme: ...}}'")
    users = data.get("users")
    if users is None:
        data["users"] = {}
    elif not isinstance(users, dict):
        raise AuthError(f"passwords file {path}: 'users' must map user names to passwords")
    for name, password in data["users"].items():
        if not isinstance(name, str):
            raise AuthError(f"passwords file {path}: user name {name!r} must be a string")
        if not isinstance(password, str):
            raise AuthError(
                f"passwords file {path}: the password of {name!r} must be a string "
                f"(got {type(password).__name__}; quote it in YAML)"
            )
        if not password or "\n" in password or "\r" in password or "\x00" in password:
            raise AuthError(f"passwords file {path}: the password of {name!r} is empty or contains a line break/NUL")
    return data

def _config_worker_password(config: ServerConfig) -> str | None:
    try:
        return config.broker.resolve_password()
    except ConfigError:
        return None  # e.g. /run/secrets/... that only exists inside the pod


@dataclass(frozen=True, slots=True)
class Passwords:
    by_user: dict[str, str]
    generated: list[str]
    unused: list[str]


def ensure_passwords(path: Path, plan: AccessPlan, config: ServerConfig, *, generate_missing: bool = True) -> Passwords:
    """Every planned user's password; generate missing ones and write them back (0600).

    The worker's password may also come from the server config (``broker.password`` or a
    readable ``broker.password_file``); if both places have one they must agree.
    """
    data = load_passwords(path)
    stored: dict[str, str] = dict(data.get("users", {}))
    from_config = _config_worker_password(config)
    worker = plan.worker_user
    if from_config is not None:
        if worker in stored and stored[worker] != from_config:
            raise AuthError(
                f"the password of worker user {worker!r} in {path} differs from the server config's "
                "broker.password/broker.password_file; keep one of them (or make them equal)"
            )
        stored.setdefault(worker, from_config)
    missing = [name for name in plan.names if name not in stored]
    if missing and not generate_missing:
        tenants = [n for n in missing if n != worker]
        parts = []
        if tenants:
            parts.append(f"tenant id(s) {tenants}")
        if worker in missing:
            parts.append(f"worker user {worker!r} (broker.username)")
        raise AuthError(f"{path}: no password for {' and '.join(parts)}; add them under 'users:' or drop --no-generate")
    for name in missing:
        stored[name] = secrets.token_urlsafe(24)
    if missing:
        users_out = dict(data.get("users", {}))
        for name in missing:
            users_out[name] = stored[name]
        data["users"] = users_out
        atomic_write(path, yaml.safe_dump(data, sort_keys=False).encode("utf-8"), 0o600)
    unused = sorted(set(stored) - set(plan.names))
    return Passwords({name: stored[name] for name in plan.names}, missing, unused)

