"""The Open Inference Protocol's binary tensor data extension, carried over MQTT.

Over HTTP the extension sends a JSON header followed by the raw tensor bytes, and gives the
header's length in the HTTP header `Inference-Header-Content-Length`. Over MQTT there are
two framings of the same bytes:

- `HEADER_PROPERTY` (MQTT 5): JSON header + tensor bytes, the header's length in the user
  property `Inference-Header-Content-Length`, content type `application/octet-stream` (as
  Triton's HTTP endpoint);
- `SEPARATOR` (any MQTT version; MQTT 3.1.1 has no properties): JSON header, one NUL byte,
  tensor bytes. A JSON text never holds a raw NUL (RFC 8259 escapes every control character
  inside strings and allows none outside), so the first NUL ends the header: the payload
  describes itself.

Tensor bytes are little-endian, row-major, without padding, in the order of the tensors whose
`parameters.binary_data_size` gives their length. Opt-in per request: an input is binary when
it has `binary_data_size` (and no `data`); an answer is binary when the request asks for it
(`parameters.binary_data_output: true`, or `binary_data: true` in the parameters of an entry of
`outputs`). A binary answer is framed as its request was: with the user property if the
request had one, with the NUL otherwise (a JSON request asking for a binary answer gets the
NUL form; an MQTT 5 client that wants the property gives its JSON request the property with the
payload's full length). Error answers are always plain JSON.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import orjson

from contract.errors import InvalidRequest, InvalidWindow

CONTENT_TYPE = "application/octet-stream"
HEADER_LENGTH_PROPERTY = "Inference-Header-Content-Length"
SEPARATOR = b"\x00"
_MAX_LENGTH_DIGITS = 10

# Wire size and little-endian numpy type of each datatype a request may send as binary.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code).newbyteorder("<")
    for name, code in {
        "FP16": "f2", "FP32": "f4", "FP64": "f8",
        "INT8": "i1", "INT16": "i2", "INT32": "i4", "INT64": "i8",
        "UINT8": "u1", "UINT16": "u2", "UINT32": "u4", "UINT64": "u8",
    }.items()
}


class BinaryForm(enum.Enum):
    """How a binary payload's header is delimited."""

    HEADER_PROPERTY = "property"  # its length in the MQTT 5 user property
    SEPARATOR = "separator"  # a NUL byte after it


def split(payload: bytes, header_length: str | None) -> tuple[bytes, memoryview | None, BinaryForm | None]:
    """A payload -> (JSON header, tensor bytes or None, form or None for plain JSON).

    `header_length` is the request's `Inference-Header-Content-Length` user property, if any.
    Raises InvalidRequest (without an id: the header is not parsed yet) for a bad length.
    """
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= _MAX_LENGTH_DIGITS):
            raise InvalidRequest(
                f"user property {HEADER_LENGTH_PROPERTY} must be a byte count, got {header_length[:40]!r}"
            )
        length = int(text)
        if not 0 < length <= len(payload):
            raise InvalidRequest(
                f"user property {HEADER_LENGTH_PROPERTY} is {length}: beyond the payload of {len(payload)} bytes"
                if length > len(payload)
                else f"user property {HEADER_LENGTH_PROPERTY} must be positive"
            )
        return payload[:length], memoryview(payload)[length:], BinaryForm.HEADER_PROPERTY
    end = payload.find(SEPARATOR)
    if end < 0:
        return payload, None, None
    return payload[:end], memoryview(payload)[end + 1 :], BinaryForm.SEPARATOR


def wants_binary_answer(body: dict[str, Any]) -> bool:
    """`parameters.binary_data_output: true`, or `binary_data: true` on a requested output."""
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and parameters.get("binary_data_output") is True:
        return True
    outputs = body.get("outputs")
    if isinstance(outputs, list):
        for output in outputs:
            if isinstance(output, dict):
                output_parameters = output.get("parameters")
                if isinstance(output_parameters, dict) and output_parameters.get("binary_data") is True:
                    return True
    return False


def binary_size(tensor: dict[str, Any], request_id: str | None) -> int | None:
    """`inputs[0].parameters.binary_data_size`, checked; None for a JSON tensor."""
    parameters = tensor.get("parameters")
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise InvalidRequest("inputs[0].parameters.binary_data_size must be a byte count", request_id)
    if "data" in tensor:
        raise InvalidRequest("inputs[0] has both data and parameters.binary_data_size: send one", request_id)
    return size


def tensor_values(
    tensor_bytes: memoryview, size: int, datatype: str, count: int, shape: list[int], request_id: str | None
) -> np.ndarray:
    """The binary tensor's `count` values as float32 (flat); every mismatch is one clear error."""
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise InvalidWindow(f"inputs[0].datatype {datatype[:40]!r} cannot be sent as binary data here", request_id)
    expected = count * dtype.itemsize
    if size != expected:
        raise InvalidWindow(
            f"inputs[0].parameters.binary_data_size is {size} bytes, but shape {shape} of {datatype} "
            f"({dtype.itemsize} bytes a value) is {expected} bytes",
            request_id,
        )
    if len(tensor_bytes) < size:
        raise InvalidWindow(
            f"short tensor: {len(tensor_bytes)} bytes follow the header, binary_data_size says {size}", request_id
        )
    if len(tensor_bytes) > size:
        raise InvalidRequest(
            f"{len(tensor_bytes) - size} bytes after the tensor data (binary_data_size is {size})", request_id
        )
    values = np.frombuffer(tensor_bytes, dtype=dtype, count=count)
    with np.errstate(over="ignore"):  # beyond float32 becomes Inf, refused by the caller
        return values.astype(np.float32)


def encode(header: dict[str, Any], tensors: list[np.ndarray], form: BinaryForm) -> tuple[bytes, int]:
    """A header (whose tensors already carry `binary_data_size`) and the tensors' bytes -> the
    payload and the header's length (for the user property of the HEADER_PROPERTY form)."""
    head = orjson.dumps(header)
    parts = [head]
    if form is BinaryForm.SEPARATOR:
        parts.append(SEPARATOR)
    parts.extend(np.ascontiguousarray(t, dtype=t.dtype.newbyteorder("<")).tobytes() for t in tensors)
    return b"".join(parts), len(head)


def tensor_header(name: str, array: np.ndarray, datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "datatype": datatype,
            "parameters": {"binary_data_size": array.size * array.dtype.itemsize}}
