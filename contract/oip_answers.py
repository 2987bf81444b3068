"""Client side: reading the service's answers (JSON, or binary tensors in either framing)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from contract import oip_binary
from contract.errors import InvalidRequest

_NUMBER_TYPES = frozenset((int, float))


def load_answer(payload: bytes, header_length: str | None = None) -> dict[str, Any]:
    """Client side: an answer payload (JSON, or binary in either framing) -> its JSON body,
    binary outputs turned into `data` lists. Raises ValueError for a malformed payload."""
    try:
        header, tensor_bytes, _ = oip_binary.split(payload, header_length)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None
    body = orjson.loads(header)
    if not isinstance(body, dict):
        raise ValueError("an answer must be a JSON object")
    if tensor_bytes is None:
        return body
    offset = 0
    for output in body.get("outputs") or []:
        size = (output.get("parameters") or {}).get("binary_data_size") if isinstance(output, dict) else None
        if size is None:
            continue
        dtype = oip_binary.DTYPES.get(str(output.get("datatype")))
        if type(size) is not int or dtype is None or size % dtype.itemsize or offset + size > len(tensor_bytes):
            raise ValueError("binary output does not match the bytes after the header")
        output["data"] = np.frombuffer(tensor_bytes[offset : offset + size], dtype=dtype).tolist()
        offset += size
    if offset != len(tensor_bytes):
        raise ValueError(f"{len(tensor_bytes) - offset} bytes after the binary outputs")
    return body


@dataclass(frozen=True, slots=True)
class Forecast:
    """A decoded inference response."""

    id: str | None
    model_name: str | None
    model_version: str | None
    values: tuple[float, ...]
    shape: tuple[int, ...]
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A decoded error response."""

    id: str | None
    code: str
    message: str
    parameters: dict[str, Any]


def decode_answer(body: dict[str, Any]) -> Forecast | ErrorAnswer:
    """Client side: a parsed answer -> Forecast or ErrorAnswer. Malformed answers become
    ErrorAnswer with code `bad_response`."""
    raw_id = body.get("id")
    answer_id = raw_id if isinstance(raw_id, str) else None
    parameters = body.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    error = body.get("error")
    if error is not None:
        code = parameters.get("code")
        return ErrorAnswer(answer_id, str(code) if code is not None else "unknown", str(error), parameters)
    outputs = body.get("outputs")
    output = outputs[0] if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict) else {}
    data, shape = output.get("data"), output.get("shape")
    if (
        not isinstance(data, list)
        or not all(type(v) in _NUMBER_TYPES and math.isfinite(v) for v in data)
        or not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or math.prod(shape) != len(data)
    ):
        return ErrorAnswer(answer_id, "bad_response", "expected outputs[0] with numeric data matching its shape", {})
    model_name, version = body.get("model_name"), body.get("model_version")
    return Forecast(
        answer_id,
        str(model_name) if model_name is not None else None,
        str(version) if version is not None else None,
        tuple(float(v) for v in data),
        tuple(shape),
        parameters,
    )
