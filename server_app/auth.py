"""Broker users and topic ACLs generated from the server config (the one source of who exists).

``python -m server_app.auth --config server.yaml --passwords passwords.yaml --out DIR`` writes:

- ``mosquitto.passwd``: Mosquitto password file, ``user:$7$<iterations>$<salt>$<hash>``
  (PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte digest, base64), the format
  ``mosquitto_passwd`` 2.x writes; pure Python, no ``mosquitto_passwd`` needed.
- ``mosquitto.acl``: Mosquitto ``acl_file``. No anonymous section (anonymous clients get
  nothing); one ``user`` section per tenant and one for the worker service user.
- ``amqtt.passwd`` and ``amqtt-auth.json``: the same users and rules for the embedded amqtt
  broker (Argon2 hashes; separate subscribe and publish ACLs, see :func:`embedded_broker`).

Who may do what (tenant ``t``, worker service user ``w`` = ``broker.username``, shared group
``g`` = ``broker.shared_group``):

==========  ====================================================================
tenant t    write ``tenants/t/models/+/requests``; read ``tenants/t/#``;
            tutorial tenants also write their ``in_queue`` and read their ``out_queue``
worker w    read ``tenants/+/models/+/requests`` and every tutorial ``in_queue``;
            write ``tenants/+/#`` and every tutorial ``out_queue``; readwrite
            ``service/workers/#`` (status, will)
==========  ====================================================================

The worker writes ``tenants/+/#``, not just ``tenants/+/models/+/responses`` and
``tenants/+/errors``: it honours an MQTT v5 ResponseTopic anywhere in the requesting tenant's
own ``tenants/<t>/`` namespace, and a narrower rule would make Mosquitto drop such answers
silently. Mosquitto 2.0's ``acl_file`` has no ``deny``, so this also lets the worker write
request topics; the worker itself must never answer onto a topic it subscribes to.

Mosquitto and shared subscriptions, checked against Mosquitto 2.0.11: the ``acl_file``
does not refuse SUBSCRIBE packets at all (every SUBACK grants the QoS); what it enforces is
``read`` access on the *topic of each message* at delivery, and ``write`` access on PUBLISH
(v3.1.1: acknowledged and silently dropped; v5: PUBACK reason 0x87). A message reaching a
``$share/g/tenants/+/models/+/requests`` subscriber is therefore checked against
``tenants/<t>/models/<m>/requests``: the plain-topic ``read`` rule is the one that matters.
Brokers that do check the subscription filter itself (the ``acl-file`` plugin of newer
Mosquitto) see the literal ``$share/g/...`` filter, so the worker also gets a ``read`` rule
for that exact form. Only the configured group: another group name is not granted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from server_app import protocol
from server_app.broker import EmbeddedBroker, hash_password
from server_app.config import ServerConfig, load_config
from server_app.errors import ConfigError

__all__ = [
    "AMQTT_AUTH_FILE",
    "AMQTT_PASSWORD_FILE",
    "MOSQUITTO_ACL_FILE",
    "MOSQUITTO_PASSWORD_FILE",
    "AccessPlan",
    "AuthEmbeddedBroker",
    "AuthError",
    "EmbeddedAuth",
    "Rule",
    "UserAccess",
    "access_plan",
    "amqtt_auth_document",
    "embedded_broker",
    "ensure_passwords",
    "generate",
    "load_embedded_auth",
    "main",
    "mosquitto_hash",
    "render_mosquitto_acl",
    "render_mosquitto_passwd",
    "verify_mosquitto_hash",
]

MOSQUITTO_PASSWORD_FILE = "mosquitto.passwd"
MOSQUITTO_ACL_FILE = "mosquitto.acl"
AMQTT_PASSWORD_FILE = "amqtt.passwd"
AMQTT_AUTH_FILE = "amqtt-auth.json"

MOSQUITTO_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes (`-I` changes it there)
_SALT_BYTES = 12
_DIGEST = "sha512"
AMQTT_AUTH_VERSION = 1
_ACL_PLUGIN = "amqtt.plugins.topic_checking.TopicAccessControlListPlugin"

Access = Literal["read", "write", "readwrite"]


class AuthError(ConfigError):
    """The config, the passwords file or a generated file is unusable; the message says why."""


# --------------------------------------------------------------------------- hashing


def mosquitto_hash(password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None) -> str:
    """``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``, as ``mosquitto_passwd`` writes it."""
    if iterations < 1:
        raise AuthError(f"iterations must be positive, got {iterations}")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Check ``password`` against a ``$7$`` (PBKDF2-SHA512) or ``$6$`` (salted SHA-512) hash."""
    parts = hashed.strip().split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            salt, digest = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
            got = hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations, len(digest))
            return hmac.compare_digest(got, digest)
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
            return hmac.compare_digest(hashlib.sha512(password.encode("utf-8") + salt).digest(), digest)
    except ValueError:
        return False
    return False


# --------------------------------------------------------------------------- who may do what


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    topic: str

    @property
    def reads(self) -> bool:
        return self.access in ("read", "readwrite")

    @property
    def writes(self) -> bool:
        return self.access in ("write", "readwrite")


@dataclass(frozen=True, slots=True)
class UserAccess:
    name: str
    role: Literal["tenant", "worker"]
    rules: tuple[Rule, ...]

    def subscribe_filters(self) -> list[str]:
        """What an amqtt subscribe ACL needs: read rules (no ``$share`` forms: amqtt has none)."""
        return _unique(r.topic for r in self.rules if r.reads and not r.topic.startswith("$share/"))

    def publish_topics(self) -> list[str]:
        return _unique(r.topic for r in self.rules if r.writes)


@dataclass(frozen=True, slots=True)
class AccessPlan:
    users: tuple[UserAccess, ...]
    worker_user: str
    shared_group: str | None

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.users]


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _check_user_name(name: str, what: str) -> None:
    bad = [c for c in name if c in ":+#/" or c.isspace() or not c.isprintable()]
    if not name or bad:
        raise AuthError(
            f"{what} {name!r} cannot be an MQTT user name in a password/ACL file "
            f"(empty, or contains {sorted(set(bad))!r}: ':', '+', '#', '/', white space and control characters "
            "are not allowed)"
        )


def _check_topic(topic: str, where: str) -> None:
    if not topic or any(not c.isprintable() for c in topic):
        raise AuthError(f"{where}: topic {topic!r} is empty or contains control characters")


def access_plan(config: ServerConfig) -> AccessPlan:
    """Users and their rules, from the server config alone."""
    worker = config.broker.username
    if not worker:
        raise AuthError(
            "broker.username is not set: the worker service user is missing. Set broker.username "
            "(e.g. inference-worker) in the server config; the ACL gives that user the worker's rights."
        )
    _check_user_name(worker, "broker.username")
    if worker in config.tenants:
        raise AuthError(
            f"broker.username {worker!r} is also a tenant id: the worker user would get the tenant's rules "
            "and the tenant the worker's. Use a distinct name for the worker service user."
        )
    group = config.broker.shared_group
    users: list[UserAccess] = []
    worker_rules: list[Rule] = []

    def worker_reads(topic_filter: str) -> None:
        worker_rules.append(Rule("read", topic_filter))
        if group:
            worker_rules.append(Rule("read", protocol.subscription_filter(topic_filter, group)))

    worker_reads(protocol.REQUEST_FILTER)
    # Responses, errors and v5 response topics inside the tenant's namespace (module doc).
    worker_rules.append(Rule("write", "tenants/+/#"))
    for tenant_id, tenant in sorted(config.tenants.items()):
        _check_user_name(tenant_id, "tenant id")
        rules = [
            Rule("write", protocol.request_topic(tenant_id, "+")),
            Rule("read", f"tenants/{tenant_id}/#"),
        ]
        if tenant.in_queue:
            _check_topic(tenant.in_queue, f"tenants.{tenant_id}.in_queue")
            rules.append(Rule("write", tenant.in_queue))
            worker_reads(tenant.in_queue)
        if tenant.out_queue:
            _check_topic(tenant.out_queue, f"tenants.{tenant_id}.out_queue")
            rules.append(Rule("read", tenant.out_queue))
            worker_rules.append(Rule("write", tenant.out_queue))
        users.append(UserAccess(tenant_id, "tenant", tuple(rules)))
    worker_rules.append(Rule("readwrite", "service/workers/#"))
    users.append(UserAccess(worker, "worker", tuple(dict.fromkeys(worker_rules))))
    return AccessPlan(tuple(users), worker, group)


# --------------------------------------------------------------------------- rendering


def render_mosquitto_acl(plan: AccessPlan, source: str = "the server config") -> str:
    lines = [
        f"# Mosquitto acl_file generated by `python -m server_app.auth` from {source}.",
        "# Do not edit: change the server config and regenerate. Mosquitto re-reads it on SIGHUP.",
        "# No rules before the first `user` line: anonymous clients may do nothing.",
        "# Use with: allow_anonymous false, per_listener_settings false, password_file <mosquitto.passwd>.",
    ]
    for user in plan.users:
        lines.append("")
        lines.append(f"# {user.role}")
        lines.append(f"user {user.name}")
        lines.extend(f"topic {rule.access} {rule.topic}" for rule in user.rules)
    return "\n".join(lines) + "\n"


def render_mosquitto_passwd(
    plan: AccessPlan, passwords: Mapping[str, str], *, iterations: int = MOSQUITTO_ITERATIONS
) -> str:
    missing = [name for name in plan.names if name not in passwords]
    if missing:
        raise AuthError(f"no password for user(s) {missing}")
    return "".join(f"{name}:{mosquitto_hash(passwords[name], iterations=iterations)}\n" for name in plan.names)


def amqtt_auth_document(plan: AccessPlan, password_file: str = AMQTT_PASSWORD_FILE) -> dict[str, Any]:
    """What :func:`load_embedded_auth` reads: password file (relative to the JSON) and both ACLs."""
    return {
        "version": AMQTT_AUTH_VERSION,
        "password_file": password_file,
        "subscribe_acl": {u.name: u.subscribe_filters() for u in plan.users},
        "publish_acl": {u.name: u.publish_topics() for u in plan.users},
    }


# --------------------------------------------------------------------------- passwords


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


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


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
        _atomic_write(path, yaml.safe_dump(data, sort_keys=False).encode("utf-8"), 0o600)
    unused = sorted(set(stored) - set(plan.names))
    return Passwords({name: stored[name] for name in plan.names}, missing, unused)


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True, slots=True)
class Generated:
    mosquitto_passwd: Path
    mosquitto_acl: Path
    amqtt_passwd: Path
    amqtt_auth: Path
    plan: AccessPlan
    generated_passwords: list[str]
    unused_passwords: list[str]


def generate(
    config_path: Path,
    passwords_path: Path,
    out_dir: Path,
    *,
    generate_missing: bool = True,
    iterations: int = MOSQUITTO_ITERATIONS,
    config: ServerConfig | None = None,
) -> Generated:
    """Write the four files into ``out_dir``; see the module docstring."""
    config = config if config is not None else load_config(config_path)
    plan = access_plan(config)
    passwords = ensure_passwords(passwords_path, plan, config, generate_missing=generate_missing)
    out_dir.mkdir(parents=True, exist_ok=True)
    mosq_pw = out_dir / MOSQUITTO_PASSWORD_FILE
    mosq_acl = out_dir / MOSQUITTO_ACL_FILE
    amqtt_pw = out_dir / AMQTT_PASSWORD_FILE
    amqtt_auth = out_dir / AMQTT_AUTH_FILE
    _atomic_write(mosq_pw, render_mosquitto_passwd(plan, passwords.by_user, iterations=iterations).encode(), 0o600)
    _atomic_write(mosq_acl, render_mosquitto_acl(plan, config_path.name).encode(), 0o644)
    amqtt_lines = "".join(f"{name}:{hash_password(passwords.by_user[name])}\n" for name in plan.names)
    _atomic_write(amqtt_pw, amqtt_lines.encode(), 0o600)
    document = amqtt_auth_document(plan, AMQTT_PASSWORD_FILE)
    _atomic_write(amqtt_auth, (json.dumps(document, indent=2) + "\n").encode(), 0o644)
    return Generated(mosq_pw, mosq_acl, amqtt_pw, amqtt_auth, plan, passwords.generated, passwords.unused)


# --------------------------------------------------------------------------- embedded broker


@dataclass(frozen=True, slots=True)
class EmbeddedAuth:
    password_file: Path
    subscribe_acl: dict[str, list[str]]
    publish_acl: dict[str, list[str]]


def load_embedded_auth(path: Path) -> EmbeddedAuth:
    """Read an ``amqtt-auth.json`` written by :func:`generate`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AuthError(f"cannot read embedded broker auth file {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("version") != AMQTT_AUTH_VERSION:
        raise AuthError(f"{path}: not an amqtt auth file of version {AMQTT_AUTH_VERSION} (regenerate it)")
    acls: dict[str, dict[str, list[str]]] = {}
    for key in ("subscribe_acl", "publish_acl"):
        value = document.get(key)
        if not isinstance(value, dict) or not all(
            isinstance(u, str) and isinstance(fs, list) and all(isinstance(f, str) for f in fs)
            for u, fs in value.items()
        ):
            raise AuthError(f"{path}: '{key}' must map user names to lists of topic filters")
        acls[key] = {u: list(fs) for u, fs in value.items()}
    password_file = document.get("password_file")
    if not isinstance(password_file, str) or not password_file:
        raise AuthError(f"{path}: 'password_file' missing")
    resolved = Path(password_file) if Path(password_file).is_absolute() else path.parent / password_file
    if not resolved.is_file():
        raise AuthError(f"{path}: password file {resolved} not found")
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
            raise AuthError("the embedded broker auth file grants no publish rights to anyone")

    def config(self) -> dict[str, Any]:
        config = super().config()
        plugin = config["plugins"].get(_ACL_PLUGIN)
        if plugin is None:
            raise AuthError("EmbeddedBroker did not configure amqtt's topic ACL plugin")
        plugin["publish_acl"] = {user: list(topics) for user, topics in self.publish_acl.items()}
        return config


def embedded_broker(auth_file: Path, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AuthEmbeddedBroker:
    """An embedded amqtt broker with the users and ACLs of ``auth_file`` (``amqtt-auth.json``)."""
    return AuthEmbeddedBroker(host, port, auth=load_embedded_auth(auth_file), **kwargs)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server_app.auth",
        description=(
            "Generate broker users and topic ACLs from the server config: a Mosquitto password file "
            f"({MOSQUITTO_PASSWORD_FILE}) and acl_file ({MOSQUITTO_ACL_FILE}), and the same for the embedded "
            f"amqtt broker ({AMQTT_PASSWORD_FILE}, {AMQTT_AUTH_FILE}). Users: every tenant id, and the worker "
            "service user broker.username."
        ),
        epilog=(
            "Passwords come from the --passwords YAML ({users: {acme: '...', inference-worker: '...'}}); the "
            "worker's may also come from broker.password/broker.password_file. A user without a password gets a "
            "random one, WRITTEN BACK into the --passwords file (mode 0600; YAML comments in it are not kept), "
            "unless --no-generate is given. Users in the passwords file but not in the config are left out of "
            "the generated files. Mosquitto needs: password_file, acl_file, allow_anonymous false, "
            "per_listener_settings false."
        ),
    )
    parser.add_argument("--config", type=Path, required=True, help="server config (YAML or JSON)")
    parser.add_argument("--passwords", type=Path, required=True, help="passwords YAML (created if missing)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the generated files")
    parser.add_argument(
        "--no-generate", action="store_true", help="fail instead of generating passwords for users without one"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=MOSQUITTO_ITERATIONS,
        help="PBKDF2 iterations of the Mosquitto hashes (default %(default)s, as mosquitto_passwd 2.0)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = generate(
            args.config, args.passwords, args.out, generate_missing=not args.no_generate, iterations=args.iterations
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in (result.mosquitto_passwd, result.mosquitto_acl, result.amqtt_passwd, result.amqtt_auth):
        print(f"wrote {path}")
    print(f"users: {', '.join(result.plan.names)} (worker: {result.plan.worker_user})")
    if result.generated_passwords:
        print(
            f"generated passwords for {', '.join(result.generated_passwords)}; written to {args.passwords} (0600)",
            file=sys.stderr,
        )
        if result.plan.worker_user in result.generated_passwords:
            print(
                f"note: the worker needs its new password: put it in broker.password_file (user "
                f"{result.plan.worker_user!r})",
                file=sys.stderr,
            )
    if result.unused_passwords:
        print(
            f"note: {args.passwords} has passwords for users not in the config, left out: "
            f"{', '.join(result.unused_passwords)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
