"""Broker users and topic rights generated from the server config (the one source of who exists).

``python -m provisioning.broker_auth --config server.yaml --passwords passwords.yaml --out DIR`` writes:

- ``mosquitto-dynsec.json``: the configuration file of Mosquitto's dynamic-security plugin
  (shipped with Mosquitto 2.0; Debian: ``mosquitto_dynamic_security.so``): one client per
  user with its PBKDF2-SHA512 password hash (base64 ``password``/``salt`` + ``iterations``,
  what ``mosquitto_ctrl dynsec`` writes) and one role per user with its ACLs. Everything
  not granted is denied: ``defaultACLAccess`` denies publishing, receiving and subscribing.
- ``mosquitto-auth.conf``: the lines mosquitto.conf needs for it (``allow_anonymous false``,
  ``plugin <mosquitto_dynamic_security.so>``, ``plugin_opt_config_file <the JSON>``), for
  ``include_dir`` or to copy; no ``password_file``/``acl_file``: they must not be used
  beside the plugin (Mosquitto consults an ``acl_file`` before any plugin).
- ``amqtt.passwd`` and ``amqtt-auth.json``: the same users and rules for the embedded amqtt
  broker (Argon2 hashes; separate subscribe and publish ACLs, see :func:`provisioning.embedded_broker.embedded_broker`).

Who may do what (tenant ``t``, worker service user ``w`` = ``broker.username``, shared group
``g`` = ``broker.shared_group``):

==========  ====================================================================
tenant t    publish ``tenants/t/models/+/requests``; receive ``tenants/t/#``;
            subscribe ``tenants/t/#`` and ``$share/+/tenants/t/#``;
            tutorial tenants also publish their ``in_queue``, receive and subscribe
            their ``out_queue``
worker w    subscribe exactly the filters the worker subscribes (literal:
            ``$share/g/tenants/+/models/+/requests``, or the plain filter when
            ``g`` is null, and the same form of every tutorial ``in_queue``);
            receive ``tenants/+/models/+/requests`` and every ``in_queue``;
            publish ``tenants/+/#`` and every tutorial ``out_queue``; publish,
            receive and subscribe ``service/workers/#`` (status, will); receive and
            subscribe ``$SYS/broker/#`` (the broker's own counters: drops, clients)
==========  ====================================================================

Why the plugin and not the ``acl_file`` (issue 11), checked against Mosquitto 2.0.11:

- The ``acl_file`` never checks SUBSCRIBE. A tenant subscribing
  ``$share/<g>/tenants/+/models/+/requests`` (any group name) joined the workers'
  round-robin; its ``read`` rule then dropped the other tenants' requests it was dealt.
  The plugin checks every SUBSCRIBE: ``subscribeLiteral`` matches the filter string exactly
  (``$share/<group>/`` included), ``subscribePattern`` matches filters inside the ACL's
  filter; anything else is refused with SUBACK 0x87 (MQTT 5) / 0x80 (MQTT 3.1.1). A tenant
  can therefore not subscribe the request filter in any form, shared or plain.
- ``publishClientReceive`` is checked per delivered message against its real topic, as
  the ``acl_file``'s ``read`` was: a second line of defence.
- The worker writes ``tenants/+/#``, not just responses and errors: it honours an MQTT v5
  ResponseTopic anywhere in the requesting tenant's own ``tenants/<t>/`` namespace, and a
  narrower rule would make Mosquitto drop such answers silently. The worker must never
  answer onto a topic it subscribes to (its own code enforces that).

What the broker cannot do here (Mosquitto 2.0.11), and what we do instead:

- Client ids: a client record's ``clientid`` binds a *user* to one id; nothing stops another
  user from connecting with a worker's id, which takes over the worker's session (the CONNACK
  even reports the session present). Worker client ids are therefore secret:
  :func:`server_app.client_ids.worker_client_id` derives them by HMAC from the worker's
  password, so a tenant can neither know nor guess them (see that module).
- Retained messages: neither the plugin nor the ``acl_file`` of 2.0 has a per-user retain
  right, and ``retain_available false`` is broker-wide (it would disconnect the workers,
  whose status and will are retained). A tenant can retain a message on its own request
  topic; Mosquitto 2.0.11 even hands stored retained messages to a new ``$share``
  subscriber. The worker must subscribe with MQTT 5 retain handling 2 (no stored retained
  messages on subscribe) and/or treat a message with the retain flag as refused; the
  broker bounds each message by ``max_packet_size`` and all of them by ``memory_limit``.
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

from contract import topics
from provisioning.embedded_broker import AMQTT_AUTH_VERSION, hash_password
from server_app.config import ServerConfig, load_config
from server_app.errors import ConfigError

__all__ = [
    "AMQTT_AUTH_FILE",
    "AMQTT_PASSWORD_FILE",
    "DYNSEC_FILE",
    "DYNSEC_PLUGIN_PATHS",
    "MOSQUITTO_CONF_FILE",
    "AccessPlan",
    "AuthError",
    "Rule",
    "Subscription",
    "UserAccess",
    "access_plan",
    "amqtt_auth_document",
    "dynsec_document",
    "dynsec_password",
    "ensure_passwords",
    "find_dynsec_plugin",
    "generate",
    "main",
    "mosquitto_conf_lines",
    "mosquitto_hash",
    "verify_dynsec_password",
    "verify_mosquitto_hash",
]

DYNSEC_FILE = "mosquitto-dynsec.json"
MOSQUITTO_CONF_FILE = "mosquitto-auth.conf"
AMQTT_PASSWORD_FILE = "amqtt.passwd"
AMQTT_AUTH_FILE = "amqtt-auth.json"
# Where distributions install the plugin: Debian/Ubuntu (multiarch), the eclipse-mosquitto
# image and source builds. `--dynsec-plugin` names another.
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)

MOSQUITTO_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes (`-I` changes it there)
_SALT_BYTES = 12
_DIGEST = "sha512"

Access = Literal["read", "write", "readwrite"]


class AuthError(ConfigError):
    """The config, the passwords file or a generated file is unusable; the message says why."""


# --------------------------------------------------------------------------- hashing


def _pbkdf2(password: str, iterations: int, salt: bytes | None) -> tuple[bytes, bytes]:
    if iterations < 1:
        raise AuthError(f"iterations must be positive, got {iterations}")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    return salt, hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations)


def mosquitto_hash(password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None) -> str:
    """``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``, as ``mosquitto_passwd`` writes it."""
    salt, digest = _pbkdf2(password, iterations, salt)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def dynsec_password(
    password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None
) -> dict[str, Any]:
    """A dynamic-security client's ``password``, ``salt`` (base64) and ``iterations``: the same
    PBKDF2-HMAC-SHA512 as :func:`mosquitto_hash`, in the plugin's JSON fields."""
    salt, digest = _pbkdf2(password, iterations, salt)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def verify_dynsec_password(password: str, client: Mapping[str, Any]) -> bool:
    """Check ``password`` against a dynamic-security client record (see :func:`dynsec_password`)."""
    try:
        salt = base64.b64decode(str(client["salt"]), validate=True)
        digest = base64.b64decode(str(client["password"]), validate=True)
        iterations = int(client["iterations"])
    except (KeyError, TypeError, ValueError):
        return False
    got = hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations, len(digest))
    return hmac.compare_digest(got, digest)


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
class Subscription:
    """A filter a user may SUBSCRIBE: ``literal`` only that exact string (``$share/g/...``
    included), else any filter inside it (``tenants/acme/#`` admits ``tenants/acme/+/x``)."""

    topic_filter: str
    literal: bool


@dataclass(frozen=True, slots=True)
class UserAccess:
    name: str
    role: Literal["tenant", "worker"]
    rules: tuple[Rule, ...]
    """``read``: may receive messages whose topic matches; ``write``: may publish there."""
    subscriptions: tuple[Subscription, ...] = ()
    """What it may SUBSCRIBE (Mosquitto's dynamic-security plugin checks it; see module doc)."""

    def subscribe_filters(self) -> list[str]:
        """What an amqtt subscribe ACL needs: the read rules (amqtt has no ``$share`` and no
        ``$SYS`` counters worth reading: ``$`` topics are left out)."""
        return _unique(r.topic for r in self.rules if r.reads and not r.topic.startswith("$"))

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
    worker_subs: list[Subscription] = []

    def worker_reads(topic_filter: str) -> None:
        # Exactly the filter the worker subscribes (server_app.worker.subscriptions), nothing
        # wider: not the plain form when a group is configured, not another group.
        worker_rules.append(Rule("read", topic_filter))
        worker_subs.append(Subscription(topics.subscription_filter(topic_filter, group), literal=True))

    worker_reads(topics.REQUEST_FILTER)
    # Responses, errors and v5 response topics inside the tenant's namespace (module doc).
    worker_rules.append(Rule("write", "tenants/+/#"))
    for tenant_id, tenant in sorted(config.tenants.items()):
        _check_user_name(tenant_id, "tenant id")
        namespace = f"tenants/{tenant_id}/#"
        rules = [Rule("write", topics.request_topic(tenant_id, "+")), Rule("read", namespace)]
        # Its own namespace, also shared between its own consumers ($share/<any>/...): only
        # its own messages can reach such a subscription.
        subs = [Subscription(namespace, literal=False), Subscription(f"$share/+/{namespace}", literal=False)]
        if tenant.in_queue:
            _check_topic(tenant.in_queue, f"tenants.{tenant_id}.in_queue")
            rules.append(Rule("write", tenant.in_queue))
            worker_reads(tenant.in_queue)
        if tenant.out_queue:
            _check_topic(tenant.out_queue, f"tenants.{tenant_id}.out_queue")
            rules.append(Rule("read", tenant.out_queue))
            subs.append(Subscription(tenant.out_queue, literal=False))
            worker_rules.append(Rule("write", tenant.out_queue))
        users.append(UserAccess(tenant_id, "tenant", tuple(rules), tuple(subs)))
    worker_rules.append(Rule("readwrite", "service/workers/#"))
    worker_subs.append(Subscription("service/workers/#", literal=False))
    # The broker's own counters ($SYS/broker/publish/messages/dropped, clients, heap): the one
    # place where loss inside the broker shows.
    worker_rules.append(Rule("read", "$SYS/broker/#"))
    worker_subs.append(Subscription("$SYS/broker/#", literal=False))
    users.append(UserAccess(worker, "worker", tuple(dict.fromkeys(worker_rules)), tuple(dict.fromkeys(worker_subs))))
    return AccessPlan(tuple(users), worker, group)


# --------------------------------------------------------------------------- rendering


def _dynsec_acls(user: UserAccess) -> list[dict[str, Any]]:
    acls: list[dict[str, Any]] = []
    for rule in user.rules:
        if rule.writes:
            acls.append({"acltype": "publishClientSend", "topic": rule.topic, "allow": True})
        if rule.reads:
            acls.append({"acltype": "publishClientReceive", "topic": rule.topic, "allow": True})
    for sub in user.subscriptions:
        kind = "subscribeLiteral" if sub.literal else "subscribePattern"
        acls.append({"acltype": kind, "topic": sub.topic_filter, "allow": True})
    return acls


def dynsec_role_name(user: UserAccess) -> str:
    return f"{user.role}-{user.name}"


def dynsec_document(
    plan: AccessPlan,
    passwords: Mapping[str, str],
    *,
    iterations: int = MOSQUITTO_ITERATIONS,
    source: str = "the server config",
) -> dict[str, Any]:
    """The dynamic-security plugin's config file: every user a client with its own role.

    No client has a ``clientid``: that field would bind the *user* to one client id (one
    connection per tenant, one per worker user); it does not reserve an id against other
    users. Worker ids are kept from tenants by :mod:`server_app.client_ids` instead.
    """
    missing = [name for name in plan.names if name not in passwords]
    if missing:
        raise AuthError(f"no password for user(s) {missing}")
    clients = [
        {
            "username": user.name,
            "textname": f"{user.role} (generated by python -m provisioning.broker_auth from {source})",
            **dynsec_password(passwords[user.name], iterations=iterations),
            "roles": [{"rolename": dynsec_role_name(user)}],
            "groups": [],
        }
        for user in plan.users
    ]
    roles = [{"rolename": dynsec_role_name(user), "acls": _dynsec_acls(user)} for user in plan.users]
    return {
        # Deny whatever no role allows. The plugin's own default lets every client receive
        # (publishClientReceive true); here receiving is granted per topic as well.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def find_dynsec_plugin() -> Path | None:
    """The dynamic-security plugin of the Mosquitto installed here, if any."""
    for candidate in DYNSEC_PLUGIN_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def mosquitto_conf_lines(dynsec_file: Path | str, plugin: Path | str) -> list[str]:
    """The mosquitto.conf lines that put the generated users and ACLs in force."""
    return [
        "# Generated by `python -m provisioning.broker_auth`: users and ACLs from the dynamic-security plugin.",
        "# No password_file / acl_file beside it: Mosquitto 2.0 consults an acl_file before any plugin,",
        "# and the acl_file does not check SUBSCRIBE (issue 11).",
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {plugin}",
        f"plugin_opt_config_file {dynsec_file}",
    ]


def amqtt_auth_document(plan: AccessPlan, password_file: str = AMQTT_PASSWORD_FILE) -> dict[str, Any]:
    """What :func:`provisioning.embedded_broker.load_embedded_auth` reads: password file (relative to
    the JSON) and both ACLs."""
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


# What older versions wrote for Mosquitto's password_file/acl_file: still in force if a
# mosquitto.conf names them, and the acl_file lets any tenant join the workers' subscription.
LEGACY_MOSQUITTO_FILES = ("mosquitto.passwd", "mosquitto.acl")


@dataclass(frozen=True, slots=True)
class Generated:
    dynsec: Path
    mosquitto_conf: Path
    amqtt_passwd: Path
    amqtt_auth: Path
    plan: AccessPlan
    generated_passwords: list[str]
    unused_passwords: list[str]
    legacy_files: list[Path]

    @property
    def files(self) -> list[Path]:
        return [self.dynsec, self.mosquitto_conf, self.amqtt_passwd, self.amqtt_auth]


def generate(
    config_path: Path,
    passwords_path: Path,
    out_dir: Path,
    *,
    generate_missing: bool = True,
    iterations: int = MOSQUITTO_ITERATIONS,
    config: ServerConfig | None = None,
    dynsec_plugin: Path | None = None,
    dynsec_path: Path | None = None,
) -> Generated:
    """Write the four files into ``out_dir``; see the module docstring.

    ``dynsec_plugin``: the plugin's path for ``mosquitto-auth.conf`` (default: the one
    installed here, else the Debian path). ``dynsec_path``: where Mosquitto will find the JSON
    (default: its absolute path in ``out_dir``), e.g. a Secret's mount path in a pod.
    """
    config = config if config is not None else load_config(config_path)
    plan = access_plan(config)
    passwords = ensure_passwords(passwords_path, plan, config, generate_missing=generate_missing)
    out_dir.mkdir(parents=True, exist_ok=True)
    dynsec = out_dir / DYNSEC_FILE
    mosq_conf = out_dir / MOSQUITTO_CONF_FILE
    amqtt_pw = out_dir / AMQTT_PASSWORD_FILE
    amqtt_auth = out_dir / AMQTT_AUTH_FILE
    document = dynsec_document(plan, passwords.by_user, iterations=iterations, source=config_path.name)
    _atomic_write(dynsec, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    plugin = dynsec_plugin or find_dynsec_plugin() or Path(DYNSEC_PLUGIN_PATHS[0])
    conf_lines = mosquitto_conf_lines(dynsec_path or dynsec.resolve(), plugin)
    _atomic_write(mosq_conf, ("\n".join(conf_lines) + "\n").encode(), 0o644)
    amqtt_lines = "".join(f"{name}:{hash_password(passwords.by_user[name])}\n" for name in plan.names)
    _atomic_write(amqtt_pw, amqtt_lines.encode(), 0o600)
    amqtt_document = amqtt_auth_document(plan, AMQTT_PASSWORD_FILE)
    _atomic_write(amqtt_auth, (json.dumps(amqtt_document, indent=2) + "\n").encode(), 0o644)
    legacy = [out_dir / name for name in LEGACY_MOSQUITTO_FILES if (out_dir / name).exists()]
    return Generated(dynsec, mosq_conf, amqtt_pw, amqtt_auth, plan, passwords.generated, passwords.unused, legacy)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.broker_auth",
        description=(
            "Generate broker users and ACLs from the server config: the configuration of Mosquitto's "
            f"dynamic-security plugin ({DYNSEC_FILE}) and the mosquitto.conf lines that load it "
            f"({MOSQUITTO_CONF_FILE}), and the same users and rules for the embedded amqtt broker "
            f"({AMQTT_PASSWORD_FILE}, {AMQTT_AUTH_FILE}). Users: every tenant id, and the worker service user "
            "broker.username."
        ),
        epilog=(
            "Passwords come from the --passwords YAML ({users: {acme: '...', inference-worker: '...'}}); the "
            "worker's may also come from broker.password/broker.password_file. A user without a password gets a "
            "random one, WRITTEN BACK into the --passwords file (mode 0600; YAML comments in it are not kept), "
            "unless --no-generate is given. Users in the passwords file but not in the config are left out of "
            "the generated files. Mosquitto needs the lines of mosquitto-auth.conf (allow_anonymous false, "
            "plugin, plugin_opt_config_file) and no password_file/acl_file; restart it after regenerating."
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
        help="PBKDF2 iterations of the Mosquitto hashes (default %(default)s, as mosquitto_ctrl 2.0)",
    )
    parser.add_argument(
        "--dynsec-plugin",
        type=Path,
        default=None,
        help="path of mosquitto_dynamic_security.so for mosquitto-auth.conf (default: the installed one)",
    )
    parser.add_argument(
        "--dynsec-path",
        type=Path,
        default=None,
        help=f"where the broker reads {DYNSEC_FILE} (default: its path in --out), e.g. a Secret's mount path",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = generate(
            args.config,
            args.passwords,
            args.out,
            generate_missing=not args.no_generate,
            iterations=args.iterations,
            dynsec_plugin=args.dynsec_plugin,
            dynsec_path=args.dynsec_path,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in result.files:
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
    if result.legacy_files:
        print(
            f"warning: {', '.join(str(p) for p in result.legacy_files)} from an older version: no longer written. "
            "Remove password_file/acl_file from mosquitto.conf (the acl_file lets a tenant join the workers' "
            f"subscription) and load {DYNSEC_FILE} as {MOSQUITTO_CONF_FILE} shows; then delete them.",
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
