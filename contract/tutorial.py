"""The original tutorial's payloads, both directions, with the original server's leniency.

Request: a flat JSON object `{"norm_1": f, ..., "norm_N": f}`, already normalised, `norm_1`
the NEWEST reading. Like the original server, every other key is ignored (a whole CSV row
with `norm_value` is a valid request) and numeric strings are read with `float()`; NaN and
Inf are still refused. Reply: `{"<MODEL_NAME_UPPER>": f}`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from contract.errors import InvalidWindow, RequestError
from contract.oip import MAX_WINDOW_LENGTH, DecodedRequest, load_json_object

CONTENT_TYPE = "application/json"
PREFIX = "norm_"


def _reading(key: str, value: Any, request_id: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidWindow(f"{key} must be a number or a numeric string", request_id)
    try:
        reading = float(value)
    except (ValueError, OverflowError):
        raise InvalidWindow(f"{key} is not a number: {str(value)[:40]!r}", request_id) from None
    if not math.isfinite(reading):
        raise InvalidWindow(f"{key} must be finite", request_id)
    return reading


def decode_request(payload: bytes, *, max_bytes: int) -> DecodedRequest:
    """Server side: `norm_1..norm_N` -> one window, oldest reading first (normalised)."""
    body = load_json_object(payload, max_bytes, "the tutorial's norm_1..norm_N values")
    raw_id = body.get("id")
    request_id = raw_id if isinstance(raw_id, str) and raw_id else None
    values: dict[int, float] = {}
    for key, value in body.items():
        suffix = key[len(PREFIX) :] if key.startswith(PREFIX) else ""
        if suffix.isdigit() and 1 <= int(suffix) <= MAX_WINDOW_LENGTH:
            values[int(suffix)] = _reading(key, value, request_id)
    count = len(values)
    if count == 0 or sorted(values) != list(range(1, count + 1)):
        raise InvalidWindow("request needs norm_1..norm_N with no gaps", request_id)
    oldest_first = [values[i] for i in range(count, 0, -1)]
    with np.errstate(over="ignore"):  # beyond float32 becomes Inf, refused just below
        windows = np.array(oldest_first, dtype=np.float32).reshape(1, count, 1)
    if not np.isfinite(windows).all():
        raise InvalidWindow("values beyond float32", request_id)
    return DecodedRequest(request_id, windows, normalized=True)


def encode_response(model_name: str, forecast: float) -> bytes:
    return orjson.dumps({model_name.upper(): forecast})


def encode_error(request_id: str | None, error: RequestError) -> bytes:
    """The same error body as the Open Inference Protocol's (the tutorial had none)."""
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}
    body["error"] = error.message
    body["parameters"] = {"code": error.code}
    return orjson.dumps(body)


# --------------------------------------------------------------------------- client side


def encode_request(window: np.ndarray | Sequence[float], offset: float, scale: float) -> bytes:
    """Raw readings, oldest first -> the tutorial's flat request (`norm_1` the newest)."""
    values = [(float(v) - offset) / scale for v in window]
    return orjson.dumps({f"{PREFIX}{i}": v for i, v in enumerate(reversed(values), start=1)})

