"""Domain errors and the one table that maps them to wire error codes."""

from __future__ import annotations


class ServiceError(Exception):
    """Root of every error the service answers a request with."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class BadJson(ServiceError):
    """The payload is not valid UTF-8 JSON."""


class InvalidRequest(ServiceError):
    """The payload is JSON but not a valid inference request."""


class InvalidWindow(ServiceError):
    """The windows do not fit the model (shape, type, NaN or Inf)."""


class TooLarge(ServiceError):
    """The message or its batch exceeds the configured limits."""


class UnknownTenant(ServiceError):
    """The topic names a tenant that is not configured."""


class UnknownModel(ServiceError):
    """The topic names a model that is not configured or not loaded."""


class ModelNotAllowed(ServiceError):
    """The tenant exists but may not use this model."""


class Overloaded(ServiceError):
    """The worker's inbound queue is full."""


class RateLimited(ServiceError):
    """The tenant exceeded its rate limit."""


class InternalError(ServiceError):
    """An unexpected failure while serving the request."""


# The only place where domain errors become wire codes.
ERROR_CODES: dict[type[ServiceError], str] = {
    BadJson: "bad_json",
    InvalidRequest: "invalid_request",
    InvalidWindow: "invalid_window",
    TooLarge: "too_large",
    UnknownTenant: "unknown_tenant",
    UnknownModel: "unknown_model",
    ModelNotAllowed: "model_not_allowed",
    Overloaded: "overloaded",
    RateLimited: "rate_limited",
    InternalError: "internal",
}


def error_code(error: ServiceError) -> str:
    """Wire code for a domain error (subclasses map like their parent)."""
    for cls in type(error).__mro__:
        code = ERROR_CODES.get(cls)
        if code is not None:
            return code
    return "internal"


class ConfigError(Exception):
    """The server or tenant configuration is invalid (raised at start-up or reload)."""


class ModelLoadError(Exception):
    """A model version could not be loaded; the previous version keeps serving."""
