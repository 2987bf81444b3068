"""Actual readings tenants publish on `tenants/<t>/actuals`, to score forecasts against."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from contract.errors import BadJson, InvalidRequest, TooLarge
from contract.oip import check_size, number_parameter, series_info

MAX_ACTUALS_PER_MESSAGE = 1000


@dataclass(frozen=True, slots=True)
class Actual:
    """One observed reading of a series, at `time` on the series' own clock (as in requests)."""

    series: str
    time: float
    value: float


def decode_actuals(payload: bytes, *, max_bytes: int) -> list[Actual]:
    """`{"series", "time", "value"}` or a list of them (at most MAX_ACTUALS_PER_MESSAGE)."""
    check_size(payload, max_bytes)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"payload is not valid UTF-8 JSON: {exc}") from None
    items = body if isinstance(body, list) else [body]
    if len(items) > MAX_ACTUALS_PER_MESSAGE:
        raise TooLarge(f"{len(items)} actuals in one message, the limit is {MAX_ACTUALS_PER_MESSAGE}")
    actuals = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequest('actuals are objects {"series": str, "time": number, "value": number}')
        info = series_info({"series": item.get("series"), "time": item.get("time")}, None)
        value = number_parameter(item, "value", None)
        if info is None or info.time is None or value is None:
            raise InvalidRequest('each actual needs "series" (string), "time" and "value" (numbers)')
        actuals.append(Actual(info.series, info.time, value))
    return actuals
