"""Provisioning tools, not on the request path: the embedded amqtt broker (laptop demo, tests)
and the generator of broker users and ACLs from the server config.

- ``python -m provisioning.broker_auth``: Mosquitto dynamic-security JSON (and the same users
  and ACLs for the embedded broker) from a server config and a passwords file.
- ``python -m provisioning.embedded_broker``: the embedded broker in the foreground, and
  ``--hash-password`` for its password files.

The inference worker (``server_app``) imports :mod:`provisioning.embedded_broker` only when
``broker.host`` is ``embedded``; these tools read the server config through ``server_app``.
The README's layout section says which module of this package does what.
"""
