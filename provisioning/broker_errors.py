"""The embedded broker's errors: it cannot start, its port cannot be bound, its auth file is unusable."""

from __future__ import annotations

__all__ = ["EmbeddedAuthError", "EmbeddedBrokerError", "EmbeddedBrokerPortError"]


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started (or was used wrongly)."""


class EmbeddedBrokerPortError(EmbeddedBrokerError):
    """The embedded broker's address cannot be bound (port taken, or not allowed)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(reason)
        self.host = host
        self.port = port
        self.reason = reason


class EmbeddedAuthError(EmbeddedBrokerError):
    """An amqtt-auth.json that cannot be used (missing, malformed, an older version)."""
