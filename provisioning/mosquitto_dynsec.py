"""Mosquitto's dynamic-security plugin: its JSON (users, hashes, roles and ACLs from the access plan)
and the mosquitto.conf lines that load it. :mod:`provisioning.broker_auth` writes both:

- ``mosquitto-dynsec.json``: the configuration file of Mosquitto's dynamic-security plugin
  (shipped with Mosquitto 2.0; Debian: ``mosquitto_dynamic_security.so``): one client per
  user with its PBKDF2-SHA512 password hash (base64 ``password``/``salt`` + ``iterations``,
  what ``mosquitto_ctrl dynsec`` writes) and one role per user with its ACLs. Everything
  not granted is denied: ``defaultACLAccess`` denies publishing, receiving and subscribing.
- ``mosquitto-auth.conf``: the lines mosquitto.conf needs for it (``allow_anonymous false``,
  ``plugin <mosquitto_dynamic_security.so>``, ``plugin_opt_config_file <the JSON>``), for
  ``include_dir`` or to copy; no ``password_file``/``acl_file``: they must not be used
  beside the plugin (Mosquitto consults an ``acl_file`` before any plugin).

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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisioning.access_plan import AccessPlan, UserAccess
from provisioning.auth_errors import AuthError
from provisioning.mosquitto_passwords import MOSQUITTO_ITERATIONS, dynsec_password

__all__ = [
    "DYNSEC_FILE",
    "DYNSEC_PLUGIN_PATHS",
    "MOSQUITTO_CONF_FILE",
    "dynsec_document",
    "dynsec_role_name",
    "find_dynsec_plugin",
    "mosquitto_conf_lines",
]

DYNSEC_FILE = "mosquitto-dynsec.json"
MOSQUITTO_CONF_FILE = "mosquitto-auth.conf"
# Where distributions install the plugin: Debian/Ubuntu (multiarch), the eclipse-mosquitto
# image and source builds. `--dynsec-plugin` names another.
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


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
