"""The error of the broker users/ACL generator (:mod:`provisioning.broker_auth`): a config, a passwords
file or a generated file it cannot use. A :class:`~server_app.errors.ConfigError`, so callers that
report config errors report it too."""

from __future__ import annotations

from server_app.errors import ConfigError

__all__ = ["AuthError"]


class AuthError(ConfigError):
    """The config, the passwords file or a generated file is unusable; the message says why."""

