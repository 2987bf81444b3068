"""The MQTT client id a worker connects with: secret, so that no tenant can take its session over.

Mosquitto 2.0 (and MQTT itself) lets any authenticated client connect with any client id; a
second connection with an id already in use closes the first and, with a persistent session,
inherits it: its subscriptions and the messages queued for it. A tenant connecting with a
worker's id therefore kicked the worker off and collected (and, lacking the read right,
dropped) the requests the broker had dealt to it (issue 11). Measured on Mosquitto 2.0.11
with the dynamic-security plugin: the takeover works across user names (CONNACK session
present). What the broker offers does not close it:

- a dynamic-security client record's ``clientid`` binds a *user* to one id (that user may
  then only connect as that id); it does not reserve the id against other users;
- ``use_username_as_clientid`` (per listener) would give each tenant one connection in all;
- ``clientid_prefixes`` is broker-wide and says nothing about who uses which prefix.

So the worker's id on the broker is not its public name. The public worker id (host name,
``inference-N`` on Kubernetes, ``worker.id``) stays what answers, status topics and metrics
show; the client id is that name plus an HMAC-SHA256 tag keyed by the worker service user's
password, which tenants never have. It is stable for a given worker id and password, so a
restarted pod with the same name resumes its persistent session as before; changing the
worker password changes every worker's client id (the old sessions expire after
``broker.session_expiry_s``: roll the workers as for any restart). The broker's own logs and
``$SYS`` show client ids: only operators and the worker user can read those.

Without a password (a broker without authentication, e.g. the plain laptop set-up) there is
no secret and no tenant account either: the client id is the worker id, as before.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

__all__ = ["TAG_HEX_CHARS", "worker_client_id"]

TAG_HEX_CHARS = 32  # 128 bits: not guessable; ids stay well under any broker's length limit
_CONTEXT = b"mqtt-inference/worker-client-id/v1\x00"


class _HasPassword(Protocol):
    def resolve_password(self) -> str | None: ...


def worker_client_id(broker: _HasPassword, worker_id: str) -> str:
    """``<worker_id>-<128-bit HMAC tag>`` when the worker logs in with a password, else ``worker_id``.

    ``broker`` is the worker's broker settings (``config.broker``); its password (inline or
    from ``password_file``) is the key.
    """
    secret = broker.resolve_password()
    if not secret:
        return worker_id
    tag = hmac.new(secret.encode("utf-8"), _CONTEXT + worker_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{worker_id}-{tag[:TAG_HEX_CHARS]}"
