"""Request errors and their wire codes: the one table clients and the server share.

An error answer carries the human message in `error` (the Open Inference Protocol's error
body) and the machine-readable code in `parameters.code` (see `oip.encode_error`).
"""

from __future__ import annotations

from typing import ClassVar


class RequestError(Exception):
    """Root of every error a request is answered with. `code` is the wire code."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Set where the error is raised, when the payload's id is already known (decoding).
        self.request_id = request_id


class BadJson(RequestError):
    """The payload is not valid UTF-8 JSON (or nests too deep, or has numbers beyond float64)."""

    code = "bad_json"


class InvalidRequest(RequestError):
    """The payload is JSON but not a valid inference request."""

    code = "invalid_request"


class InvalidWindow(RequestError):
    """The windows do not fit the model (shape, type, NaN or Inf)."""

    code = "invalid_window"


class TooLarge(RequestError):
    """The message or its batch exceeds the configured limits."""

    code = "too_large"


class UnknownTenant(RequestError):
    """The topic names a tenant that is not configured."""

    code = "unknown_tenant"


class UnknownModel(RequestError):
    """The topic names a model that is not configured or not loaded."""

    code = "unknown_model"


class ModelNotAllowed(RequestError):
    """The tenant exists but may not use this model."""

    code = "model_not_allowed"


class Overloaded(RequestError):
    """The worker cannot serve the request within its latency budget; retry later."""

    code = "overloaded"


class RateLimited(RequestError):
    """The tenant exceeded its rate limit; retry later."""

    code = "rate_limited"


class RetainedRequest(RequestError):
    """A retained message on a request topic: stale by definition, never served."""

    code = "retained_request"


class AnswerRefused(RequestError):
    """The broker refused to deliver the answer (e.g. not authorised on the response topic)."""

    code = "answer_refused"


class InternalError(RequestError):
    """An unexpected failure while serving the request."""

    code = "internal"


ERROR_CODES: frozenset[str] = frozenset(
    cls.code
    for cls in (
        BadJson, InvalidRequest, InvalidWindow, TooLarge, UnknownTenant, UnknownModel, ModelNotAllowed,
        Overloaded, RateLimited, RetainedRequest, AnswerRefused, InternalError,
    )
)
