"""Wire protocol: topics and payloads. Parse and format at the edge; nothing here knows MQTT."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from server_app.config import NAME_RE
from server_app.errors import BadJson, InvalidRequest, InvalidWindow, TooLarge

REQUEST_FILTER = "tenants/+/models/+/requests"
MAX_ID_LENGTH = 256
MAX_WINDOW_LENGTH = 4096
MAX_FEATURES = 256
TUTORIAL_PREFIX = "norm_"
_JSON_NUMBER_TYPES = frozenset((int, float))


def request_topic(tenant: str, model: str) -> str:
    return f"tenants/{tenant}/models/{model}/requests"


def response_topic(tenant: str, model: str) -> str:
    return f"tenants/{tenant}/models/{model}/responses"


def errors_topic(tenant: str) -> str:
    return f"tenants/{tenant}/errors"


def status_topic(worker_id: str) -> str:
    return f"service/workers/{worker_id}/status"


def subscription_filter(topic_filter: str, shared_group: str | None) -> str:
    """`$share/<group>/<filter>` spreads messages over replicas; plain where unsupported."""
    return f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter


@dataclass(frozen=True, slots=True)
class RequestTopic:
    tenant: str
    model: str


def parse_request_topic(topic: str) -> RequestTopic | None:
    """`tenants/{tenant}/models/{model}/requests` -> RequestTopic; None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "tenants" or parts[2] != "models" or parts[4] != "requests":
        return None
    tenant, model = parts[1], parts[3]
    if not NAME_RE.match(tenant) or not NAME_RE.match(model):
        return None
    return RequestTopic(tenant, model)


def tenant_of_topic(topic: str) -> str | None:
    """The tenant a `tenants/{tenant}/...` topic belongs to, if its name is valid."""
    parts = topic.split("/", 2)
    if len(parts) >= 2 and parts[0] == "tenants" and NAME_RE.match(parts[1]):
        return parts[1]
    return None


@dataclass(slots=True)
class DecodedRequest:
    """One request's windows, shape [batch, window_length, features], float32."""

    id: str
    windows: np.ndarray
    normalized: bool


def _load_json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"payload is not valid UTF-8 JSON: {exc}") from None


def _request_id(body: dict[str, Any]) -> str | None:
    raw = body.get("id")
    if isinstance(raw, str) and 0 < len(raw) <= MAX_ID_LENGTH:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return None


def peek_request_id(payload: bytes) -> str | None:
    """Best-effort id of a payload, for error replies; never raises."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return _request_id(body) if isinstance(body, dict) else None


def _as_windows(data: Any, shape: Any, request_id: str, max_windows: int) -> np.ndarray:
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and d > 0 for d in shape)):
        raise InvalidWindow(
            f"inputs[0].shape must be [batch, window_length, features] of positive integers, got {shape!r}"[:300],
            request_id,
        )
    batch, length, features = shape
    if batch > max_windows:
        raise TooLarge(f"{batch} windows in one message, the limit is {max_windows}", request_id)
    if length > MAX_WINDOW_LENGTH or features > MAX_FEATURES:
        raise InvalidWindow(f"shape {shape} is larger than any model accepts", request_id)
    if not isinstance(data, list):
        raise InvalidWindow("inputs[0].data must be a flat list of numbers", request_id)
    expected = batch * length * features
    if len(data) != expected:
        raise InvalidWindow(f"inputs[0].data has {len(data)} values, shape {shape} needs {expected}", request_id)
    # numpy would happily turn true into 1.0 and "10.5" into 10.5: only JSON numbers pass.
    if not set(map(type, data)) <= _JSON_NUMBER_TYPES:
        raise InvalidWindow("inputs[0].data must be a flat list of numbers", request_id)
    try:
        with np.errstate(over="ignore"):  # beyond float32 becomes Inf, rejected just below
            array = np.array(data, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InvalidWindow("inputs[0].data must contain only numbers", request_id) from None
    if not np.isfinite(array).all():
        raise InvalidWindow("inputs[0].data contains NaN or Inf (or values beyond float32)", request_id)
    return array.reshape(batch, length, features)


def decode_request(payload: bytes, max_windows: int) -> DecodedRequest:
    """Decode an Open Inference Protocol request; raise a ServiceError carrying the id if known."""
    body = _load_json(payload)
    if not isinstance(body, dict):
        raise InvalidRequest("request must be a JSON object")
    request_id = _request_id(body)
    if request_id is None:
        raise InvalidRequest(f"request needs an 'id': a non-empty string of at most {MAX_ID_LENGTH} characters")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest("request needs 'inputs': a list with exactly one input", request_id)
    tensor = inputs[0]
    datatype = tensor.get("datatype", "FP32")
    if datatype not in ("FP32", "FP64"):
        raise InvalidWindow(f"inputs[0].datatype must be FP32 or FP64, got {str(datatype)[:40]!r}", request_id)
    windows = _as_windows(tensor.get("data"), tensor.get("shape"), request_id, max_windows)
    parameters = body.get("parameters")
    normalized = isinstance(parameters, dict) and parameters.get("normalized") is True
    return DecodedRequest(request_id, windows, normalized)


def decode_tutorial_request(payload: bytes) -> DecodedRequest:
    """The original tutorial's flat `{"norm_1": f, ..., "norm_N": f}`, norm_1 the newest reading."""
    body = _load_json(payload)
    if not isinstance(body, dict):
        raise InvalidRequest("request must be a JSON object of norm_1..norm_N values")
    request_id = _request_id(body) or ""
    values: dict[int, float] = {}
    for key, value in body.items():
        if not key.startswith(TUTORIAL_PREFIX):
            continue
        suffix = key[len(TUTORIAL_PREFIX) :]
        if not suffix.isdigit() or not 1 <= int(suffix) <= MAX_WINDOW_LENGTH:
            raise InvalidRequest(f"unexpected key {key[:40]!r}", request_id)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise InvalidWindow(f"{key} must be a finite number", request_id)
        values[int(suffix)] = float(value)
    count = len(values)
    if count == 0 or sorted(values) != list(range(1, count + 1)):
        raise InvalidWindow("request needs norm_1..norm_N with no gaps", request_id)
    oldest_first = [values[i] for i in range(count, 0, -1)]
    windows = np.array(oldest_first, dtype=np.float32).reshape(1, count, 1)
    if not np.isfinite(windows).all():
        raise InvalidWindow("values beyond float32", request_id)
    return DecodedRequest(request_id, windows, normalized=True)


def encode_response(
    request_id: str,
    model_name: str,
    model_version: int,
    forecasts: np.ndarray,
    tenant: str,
    served_at: float,
    worker: str,
) -> bytes:
    return orjson.dumps(
        {
            "id": request_id,
            "model_name": model_name,
            "model_version": str(model_version),
            "outputs": [
                {
                    "name": "forecast",
                    "shape": list(forecasts.shape),
                    "datatype": "FP32",
                    # float32 straight from numpy: no list of Python floats, shortest exact text
                    "data": np.ascontiguousarray(forecasts, dtype=np.float32).ravel(),
                }
            ],
            "parameters": {"tenant": tenant, "served_at": served_at, "worker": worker},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def encode_error(request_id: str | None, code: str, message: str) -> bytes:
    return orjson.dumps({"id": request_id, "error": {"code": code, "message": message}})


def encode_tutorial_response(model_name: str, forecast: float) -> bytes:
    return orjson.dumps({model_name.upper(): forecast})
