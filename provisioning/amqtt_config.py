"""The amqtt 0.12 broker config (the ``plugins`` dict style of 0.12): listener, anonymous or
password-file auth, per-user topic ACLs; and where a client reaches a listener bound to a host.
What amqtt 0.12 can and cannot do: :mod:`provisioning.amqtt_broker`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ACL_PLUGIN", "DEFAULT_HOST", "DEFAULT_PORT", "build_broker_config", "connect_host"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883

_ANONYMOUS_PLUGIN = "amqtt.plugins.authentication.AnonymousAuthPlugin"
_FILE_AUTH_PLUGIN = "amqtt.plugins.authentication.FileAuthPlugin"
ACL_PLUGIN = "amqtt.plugins.topic_checking.TopicAccessControlListPlugin"
# A user name no MQTT client can log in with (FileAuthPlugin refuses an empty
# or absent user name): keeps ``publish_acl`` non-empty, see provisioning.amqtt_broker.
_NOBODY = "\x00nobody"


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
        plugins[ACL_PLUGIN] = {"acl": acl, "publish_acl": dict(acl)}
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{_bind_host(host)}:{port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": plugins,
    }


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def connect_host(host: str) -> str:
    """The address to reach a listener bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.strip("[]")
