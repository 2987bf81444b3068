"""Open Inference Protocol (KServe / Triton v2 REST) payloads, both directions.

The rules, strict or lenient, are in the README's protocol section and pinned by the tables
in tests/contract/test_oip_rules.py. In short: what the specification allows is accepted
(no `id`, nested `data`, integer and FP16/FP64 datatypes, shape `[n, window_length]` for
one feature), what it forbids is refused (inputs without `name`, `datatype` or `shape`,
a non-string `id`), and every answer validates against the specification's schemas.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from contract import oip_binary
from contract.errors import BadJson, InvalidRequest, InvalidWindow, RequestError, TooLarge
from contract.oip_binary import BinaryForm

CONTENT_TYPE = "application/json"
MAX_ID_LENGTH = 256
MAX_WINDOW_LENGTH = 4096
MAX_FEATURES = 256
OUTPUT_NAME = "forecast"

# Datatypes a request may use; every one is converted to the float32 the models take.
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_NUMBER_TYPES = frozenset((int, float))
# Doubles below this round to a finite float32 (the largest float32 plus half its last step).
_FLOAT32_LIMIT = float(np.finfo(np.float32).max) + 2.0**103
_SMALL = 64  # values up to which range checks run in Python
_INT_TYPES = frozenset((int,))
# Only the start of a payload is read for the id of one that cannot be parsed (or is too
# large to parse): `{"id": "..."` as the first member.
PEEK_BYTES = 2 * MAX_ID_LENGTH
_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*(?:"([^"\\\x00-\x1f]{1,256})"|(-?\d{1,20})\s*[,}])')


MAX_SERIES_LENGTH = 128


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Which series a request's windows come from, and when (request `parameters`): `series`
    (e.g. the station), `time` (the newest reading of the last window on the series' own
    clock: Unix seconds on a regular grid, or simply the reading's index) and `step_s` (the
    step between readings on that clock). With all three the service scores its forecasts."""

    series: str
    time: float | None = None
    step_s: float | None = None

    @property
    def timed(self) -> bool:
        return self.time is not None and self.step_s is not None


@dataclass(slots=True)
class DecodedRequest:
    """One request's windows, shape [batch, window_length, features], float32."""

    id: str | None
    windows: np.ndarray
    normalized: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    series: SeriesInfo | None = None
    binary_answer: BinaryForm | None = None  # the answer's framing, when the request asked for binary


def number_parameter(
    parameters: dict[str, Any], key: str, request_id: str | None, *, positive: bool = False
) -> float | None:
    value = parameters.get(key)
    if value is None:
        return None
    if type(value) not in _NUMBER_TYPES or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        raise InvalidRequest(f"parameters.{key} must be {kind}", request_id)
    return float(value)


def series_info(parameters: dict[str, Any], request_id: str | None) -> SeriesInfo | None:
    """`parameters.series` / `time` / `step_s`, checked; None when the request names no series."""
    series = parameters.get("series")
    if series is None:
        return None
    if not isinstance(series, str) or not 0 < len(series) <= MAX_SERIES_LENGTH:
        raise InvalidRequest(f"parameters.series must be a string of 1 to {MAX_SERIES_LENGTH} characters", request_id)
    return SeriesInfo(
        series,
        number_parameter(parameters, "time", request_id),
        number_parameter(parameters, "step_s", request_id, positive=True),
    )


def peek_id(payload: bytes) -> str | None:
    """The id of a payload that cannot be (or must not be) parsed in full; never raises."""
    match = _LEADING_ID.match(payload[:PEEK_BYTES])
    if match is None:
        return None
    raw = match.group(1) or match.group(2)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_size(payload: bytes, max_bytes: int) -> None:
    """An oversize payload is refused without being parsed (its id read from its start)."""
    if len(payload) > max_bytes:
        raise TooLarge(f"message of {len(payload)} bytes, the limit is {max_bytes}", peek_id(payload))


def load_json_object(payload: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    """Size check first (an oversize payload is never parsed), then JSON, then an object."""
    check_size(payload, max_bytes)
    return _json_object(payload, what)


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"payload is not valid UTF-8 JSON: {exc}", peek_id(payload)) from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request must be a JSON object ({what})")
    return body


def _request_id(body: dict[str, Any]) -> str | None:
    if "id" not in body:
        return None
    raw = body["id"]
    if isinstance(raw, str) and len(raw) <= MAX_ID_LENGTH:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) < 10**20:
        # The specification's id is a string: refuse, but answer under the id the client used.
        raise InvalidRequest("'id' must be a string (the Open Inference Protocol's id is a string)", str(raw))
    raise InvalidRequest(f"'id' must be a string of at most {MAX_ID_LENGTH} characters")


def _flatten(data: list[Any], shape: list[int], depth: int, request_id: str | None) -> list[Any]:
    """Row-major flattening of nested `data`, checked against `shape` at every level."""
    if not data or not isinstance(data[0], list):
        return data
    if depth >= len(shape) - 1 or len(data) != shape[depth]:
        raise InvalidWindow(f"inputs[0].data is nested, but not as shape {shape}", request_id)
    flat: list[Any] = []
    item_size = math.prod(shape[depth + 1 :])
    for item in data:
        if not isinstance(item, list):
            raise InvalidWindow(f"inputs[0].data is nested, but not as shape {shape}", request_id)
        part = _flatten(item, shape, depth + 1, request_id)
        if len(part) != item_size:
            raise InvalidWindow(f"inputs[0].data is nested, but not as shape {shape}", request_id)
        flat.extend(part)
    return flat


def _windows(
    tensor: dict[str, Any], request_id: str | None, max_windows: int, tensor_bytes: memoryview | None
) -> np.ndarray:
    datatype = tensor["datatype"]
    integer_range = INTEGER_RANGES.get(datatype)
    if integer_range is None and datatype not in FLOAT_DATATYPES:
        allowed = ", ".join(sorted(FLOAT_DATATYPES | set(INTEGER_RANGES)))
        raise InvalidWindow(
            f"inputs[0].datatype {str(datatype)[:40]!r} is not numeric; use one of {allowed}", request_id
        )
    shape = tensor["shape"]
    if not (
        isinstance(shape, list) and len(shape) in (2, 3) and all(type(d) is int and d > 0 for d in shape)
    ):
        raise InvalidWindow(
            "inputs[0].shape must be [batch, window_length, features] (or [batch, window_length] for one "
            f"feature) of positive integers, got {shape!r}"[:300],
            request_id,
        )
    batch, length = shape[0], shape[1]
    features = shape[2] if len(shape) == 3 else 1
    if batch > max_windows:
        raise TooLarge(f"{batch} windows in one message, the limit is {max_windows}", request_id)
    if length > MAX_WINDOW_LENGTH or features > MAX_FEATURES:
        raise InvalidWindow(f"shape {shape} is larger than any model accepts", request_id)
    expected = batch * length * features
    size = oip_binary.binary_size(tensor, request_id)
    if size is not None or tensor_bytes:  # (a JSON request may carry the header length property too)
        if size is None or tensor_bytes is None:
            raise InvalidRequest(
                "binary tensor data needs both inputs[0].parameters.binary_data_size and the bytes after the JSON "
                f"header (a NUL byte after it, or its length in the user property {oip_binary.HEADER_LENGTH_PROPERTY})",
                request_id,
            )
        array = oip_binary.tensor_values(tensor_bytes, size, datatype, expected, shape, request_id)
        if not np.isfinite(array).all():
            raise InvalidWindow("inputs[0] has values that are NaN, infinite or beyond float32", request_id)
        return array.reshape(batch, length, features)
    if "data" not in tensor:
        raise InvalidRequest("inputs[0] needs data (or parameters.binary_data_size and binary tensor data)", request_id)
    data = tensor["data"]
    if not isinstance(data, list):
        raise InvalidWindow("inputs[0].data must be a list of numbers (flat or nested row-major)", request_id)
    data = _flatten(data, shape, 0, request_id)
    if len(data) != expected:
        raise InvalidWindow(f"inputs[0].data has {len(data)} values, shape {shape} needs {expected}", request_id)
    # numpy would turn true into 1.0 and "10.5" into 10.5: only JSON numbers of the datatype pass.
    allowed_types = _INT_TYPES if integer_range is not None else _NUMBER_TYPES
    if not set(map(type, data)) <= allowed_types:
        kind = "integers" if integer_range is not None else "numbers"
        raise InvalidWindow(f"inputs[0].data must contain only {kind} for datatype {datatype}", request_id)
    if integer_range is not None and data and not integer_range[0] <= min(data) <= max(data) <= integer_range[1]:
        raise InvalidWindow(f"inputs[0].data has values outside the range of {datatype}", request_id)
    # JSON numbers are finite doubles (orjson refuses 1e400): only float32's range can be exceeded.
    if len(data) <= _SMALL:  # one window: checked in Python, cheaper than numpy's errstate + isfinite
        if data and not -_FLOAT32_LIMIT < min(data) <= max(data) < _FLOAT32_LIMIT:
            raise InvalidWindow("inputs[0].data has values beyond float32", request_id)
        return np.array(data, dtype=np.float32).reshape(batch, length, features)
    with np.errstate(over="ignore"):  # beyond float32 becomes Inf, refused just below
        array = np.array(data, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidWindow("inputs[0].data has values beyond float32", request_id)
    return array.reshape(batch, length, features)


def decode_request(
    payload: bytes, *, max_bytes: int, max_windows: int, header_length: str | None = None
) -> DecodedRequest:
    """Server side: a request payload -> windows; raises a RequestError carrying the id if known.

    JSON, or the binary tensor extension (contract/oip_binary.py): `header_length` is the
    request's `Inference-Header-Content-Length` user property (MQTT 5), if it had one."""
    check_size(payload, max_bytes)
    try:
        header, tensor_bytes, form = oip_binary.split(payload, header_length)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, peek_id(payload)) from None
    body = _json_object(header, "an Open Inference Protocol inference request")
    request_id = _request_id(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest("request needs 'inputs': a list with exactly one input tensor", request_id)
    tensor = inputs[0]
    missing = [key for key in ("name", "shape", "datatype") if key not in tensor]
    if missing:
        raise InvalidRequest(f"inputs[0] needs {', '.join(missing)} (required by the specification)", request_id)
    if not isinstance(tensor["name"], str) or not isinstance(tensor["datatype"], str):
        raise InvalidRequest("inputs[0].name and inputs[0].datatype must be strings", request_id)
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON object", request_id)
    series = series_info(parameters, request_id)
    windows = _windows(tensor, request_id, max_windows, tensor_bytes)
    binary_answer = None
    if oip_binary.wants_binary_answer(body):
        binary_answer = form or BinaryForm.SEPARATOR
    return DecodedRequest(request_id, windows, parameters.get("normalized") is True, parameters, series, binary_answer)


def _response_head(request_id: str | None, model_name: str, model_version: int | str) -> dict[str, Any]:
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}  # the id first: readable unparsed
    body["model_name"] = model_name
    body["model_version"] = str(model_version)
    return body


def encode_response(
    request_id: str | None,
    model_name: str,
    model_version: int | str,
    forecasts: np.ndarray,
    parameters: dict[str, Any],
) -> bytes:
    """Server side: forecasts [n, outputs] -> an inference response."""
    body = _response_head(request_id, model_name, model_version)
    body["outputs"] = [
        {
            "name": OUTPUT_NAME,
            "shape": list(forecasts.shape),
            "datatype": "FP32",
            # float32 straight from numpy: no list of Python floats, shortest exact text
            "data": np.ascontiguousarray(forecasts, dtype=np.float32).ravel(),
        }
    ]
    body["parameters"] = parameters
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_binary_response(
    request_id: str | None,
    model_name: str,
    model_version: int | str,
    forecasts: np.ndarray,
    parameters: dict[str, Any],
    form: BinaryForm,
) -> tuple[bytes, int]:
    """Server side, binary tensor extension: the payload and its JSON header's length."""
    body = _response_head(request_id, model_name, model_version)
    data = np.ascontiguousarray(forecasts, dtype=np.float32)
    body["outputs"] = [oip_binary.tensor_header(OUTPUT_NAME, data, "FP32")]
    body["parameters"] = parameters
    return oip_binary.encode(body, [data], form)


def encode_error(request_id: str | None, error: RequestError, parameters: dict[str, Any] | None = None) -> bytes:
    """`{"id", "error": "<message>", "parameters": {"code": ...}}`: the specification's error
    body (`error` is a string) with the machine-readable code where the protocol puts extras."""
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}
    body["error"] = error.message
    body["parameters"] = {"code": error.code, **(parameters or {})}
    return orjson.dumps(body)


# --------------------------------------------------------------------------- client side


def encode_request(request_id: str | None, windows: np.ndarray, parameters: dict[str, Any] | None = None) -> bytes:
    """Client side: raw readings [b, window] (or [b, window, features]) -> a request."""
    shape = list(windows.shape) if windows.ndim == 3 else [*windows.shape, 1]
    # The id first: a worker that refuses a request unparsed (too large, overloaded) reads it there.
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}
    if parameters:
        body["parameters"] = parameters
    body["inputs"] = [
        {"name": "window", "shape": shape, "datatype": "FP32", "data": np.ascontiguousarray(windows).ravel()}
    ]
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_binary_request(
    request_id: str | None,
    windows: np.ndarray,
    parameters: dict[str, Any] | None = None,
    form: BinaryForm = BinaryForm.SEPARATOR,
) -> tuple[bytes, int]:
    """Client side, binary tensor extension both ways: the payload (FP32 tensor bytes after
    the header, answer asked for in binary) and the header's length (for HEADER_PROPERTY, the
    value of the user property `Inference-Header-Content-Length`)."""
    data = np.ascontiguousarray(windows, dtype=np.float32)
    if data.ndim == 2:
        data = data.reshape(*data.shape, 1)
    body: dict[str, Any] = {} if request_id is None else {"id": request_id}
    body["parameters"] = {**(parameters or {}), "binary_data_output": True}
    body["inputs"] = [oip_binary.tensor_header("window", data, "FP32")]
    return oip_binary.encode(body, [data], form)
