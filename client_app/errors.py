"""The tenant client's exceptions (all importable from `client_app.client` too)."""

from __future__ import annotations


class ClientError(Exception):
    """Root of the client's errors."""


class ClientConnectError(ClientError):
    """The broker could not be reached, refused the connection or the subscriptions."""


class RequestTimeout(ClientError):
    """No answer within ``request_timeout_s`` (or the client closed first)."""


__all__ = ["ClientConnectError", "ClientError", "RequestTimeout"]
