"""What comes back for one request: `Answer`, and the parsing of reply payloads into it.

Open Inference Protocol replies carry ``outputs[0]`` of shape ``[n, H]``: ``n`` the windows
sent, ``H`` the model's horizon (1 for a one-step model; step 1 first). Older or foreign
servers may answer a one-step forecast as ``[n]`` or any other shape of ``n`` numbers, which
is still read as one step per window. Tutorial replies are ``{"MODEL": value}``: one step,
normalised, turned back into raw units with the tenant's normalisation (unless the client
sent normalised data as it was, see `TenantClient`).

Pure functions: the network thread calls them; they never raise on a bad payload (a
malformed answer becomes an `Answer` with ``error_code`` ``bad_response``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from contract import oip_answers

Steps = tuple[tuple[float, ...], ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one request: forecasts (raw units) or a structured error.

    ``forecasts`` holds step 1 of each window (``windows`` numbers); ``steps`` holds each
    window's whole horizon (step 1 first) when the model forecasts more than one step, and is
    ``None`` for one-step answers and errors."""

    id: str
    windows: int
    sent_at: float  # time.monotonic() when published
    received_at: float  # time.monotonic() when the network thread got the reply
    forecasts: tuple[float, ...] | None
    model_name: str | None = None
    model_version: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    steps: Steps | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def latency_ms(self) -> float:
        return (self.received_at - self.sent_at) * 1000.0

    @property
    def horizon(self) -> int:
        """Forecast steps per window (1 for one-step models and for errors)."""
        return len(self.steps[0]) if self.steps else 1

    def window_steps(self) -> Steps | None:
        """Each window's forecasts for steps 1..horizon (one-step answers: one each); None on error."""
        if self.steps is not None:
            return self.steps
        if self.forecasts is None:
            return None
        return tuple((value,) for value in self.forecasts)


@dataclass(frozen=True, slots=True)
class Sent:
    """What a reply is parsed against: the request as it was sent."""

    id: str
    windows: int
    sent_at: float


def error_text(body: dict[str, Any]) -> str:
    """`code: message` of an error body, for logs and the uncorrelated-errors list."""
    decoded = oip_answers.decode_answer(body)
    if isinstance(decoded, oip_answers.ErrorAnswer):
        return f"{decoded.code}: {decoded.message}"[:300]
    return str(body)[:200]


def _failed(sent: Sent, received_at: float, code: str, message: str, model_name: str | None = None) -> Answer:
    return Answer(sent.id, sent.windows, sent.sent_at, received_at, None, model_name=model_name,
                  error_code=code, error_message=message)


def split_horizon(values: tuple[float, ...], shape: tuple[int, ...], windows: int) -> Steps | None:
    """The values of an ``[n, H]`` output as n rows of H (n = `windows`, H >= 1); any other
    shape holding exactly `windows` numbers is one step per window; else None."""
    if len(shape) == 2 and shape[0] == windows and shape[1] >= 1 and len(values) == windows * shape[1]:
        horizon = shape[1]
        return tuple(values[i * horizon : (i + 1) * horizon] for i in range(windows))
    if len(values) == windows:
        return tuple((value,) for value in values)
    return None


def parse_oip_reply(sent: Sent, body: dict[str, Any], received_at: float) -> Answer:
    """An Open Inference Protocol reply (already JSON-decoded) -> Answer."""
    decoded = oip_answers.decode_answer(body)
    if isinstance(decoded, oip_answers.ErrorAnswer):
        return _failed(sent, received_at, decoded.code, decoded.message)
    rows = split_horizon(decoded.values, decoded.shape, sent.windows)
    if rows is None:
        return _failed(
            sent, received_at, "bad_response",
            f"expected outputs[0] of shape [{sent.windows}, H] (one row of H forecast steps per window sent), "
            f"got shape {list(decoded.shape)}",
            decoded.model_name,
        )
    horizon = len(rows[0])
    return Answer(
        sent.id,
        sent.windows,
        sent.sent_at,
        received_at,
        tuple(row[0] for row in rows),
        model_name=decoded.model_name,
        model_version=decoded.model_version,
        steps=rows if horizon > 1 else None,
    )


def parse_tutorial_reply(
    sent: Sent, body: dict[str, Any], received_at: float, model: str, offset: float, scale: float
) -> Answer:
    """A tutorial reply ``{"MODEL": value}`` (or an error body) -> Answer in the units
    ``value * scale + offset`` (offset 0, scale 1: left normalised)."""
    if "error" in body:
        decoded = oip_answers.decode_answer(body)
        if isinstance(decoded, oip_answers.ErrorAnswer):
            return _failed(sent, received_at, decoded.code, decoded.message)
        return _failed(sent, received_at, "unknown", "")
    values = [v for v in body.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(body) != 1 or len(values) != 1 or not math.isfinite(values[0]):
        return _failed(sent, received_at, "bad_response", f"expected one {{MODEL: value}} pair, got {str(body)[:200]}")
    return Answer(sent.id, sent.windows, sent.sent_at, received_at, (float(values[0]) * scale + offset,),
                  model_name=model)
