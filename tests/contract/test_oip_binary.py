"""The binary tensor data extension (contract/oip_binary.py): the same windows and answers as
JSON, in both framings, and one structured error for every malformed binary payload."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
import pytest

from contract import oip, oip_answers, oip_binary
from contract.errors import RequestError
from contract.oip_binary import BinaryForm
from tests.contract.oip_schema import INFERENCE_REQUEST, INFERENCE_RESPONSE

MAX_BYTES = 1 << 20
WINDOWS = np.array([[10.5, 11.0, 12.25, 13.0, 12.0, 11.5], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], dtype=np.float32)


def _decode(payload: bytes, header_length: str | None = None) -> oip.DecodedRequest:
    return oip.decode_request(payload, max_bytes=MAX_BYTES, max_windows=64, header_length=header_length)


def _binary(header: dict[str, Any], tensor: bytes) -> bytes:
    return orjson.dumps(header) + oip_binary.SEPARATOR + tensor


def _header(request_id: str, shape: list[int], datatype: str, size: int, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "window", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}
    return {"id": request_id, "inputs": [{**tensor, **extra}]}


@pytest.mark.parametrize("form", list(BinaryForm))
def test_binary_and_json_requests_decode_to_the_same_windows(form: BinaryForm) -> None:
    series = {"series": "s1", "time": 5.0, "step_s": 1.0}
    json_request = _decode(oip.encode_request("r1", WINDOWS, series))
    payload, header_length = oip.encode_binary_request("r1", WINDOWS, series, form)
    binary_request = _decode(payload, str(header_length) if form is BinaryForm.HEADER_PROPERTY else None)
    assert binary_request.id == json_request.id == "r1"
    np.testing.assert_array_equal(binary_request.windows, json_request.windows)
    assert binary_request.windows.dtype == np.float32 and binary_request.windows.shape == (2, 6, 1)
    assert binary_request.series == json_request.series
    assert binary_request.binary_answer is form and json_request.binary_answer is None


@pytest.mark.parametrize(
    ("datatype", "numpy_type"),
    [("FP16", "<f2"), ("FP64", "<f8"), ("INT16", "<i2"), ("UINT8", "u1"), ("INT64", "<i8")],
)
def test_every_numeric_datatype_as_little_endian_bytes(datatype: str, numpy_type: str) -> None:
    values = np.array([[1, 2, 3, 4, 5, 6]], dtype=numpy_type)
    payload = _binary(_header("d", [1, 6, 1], datatype, values.nbytes), values.tobytes())
    np.testing.assert_array_equal(_decode(payload).windows.ravel(), values.ravel().astype(np.float32))


def test_the_header_validates_as_the_specification_request_once_its_data_is_in_place() -> None:
    payload, length = oip.encode_binary_request("r2", WINDOWS, None, BinaryForm.HEADER_PROPERTY)
    header = orjson.loads(payload[:length])
    assert header["parameters"]["binary_data_output"] is True
    tensor = header["inputs"][0]
    assert tensor["parameters"]["binary_data_size"] == WINDOWS.nbytes == len(payload) - length
    INFERENCE_REQUEST.validate({**header, "inputs": [{**tensor, "data": WINDOWS.ravel().tolist()}]})


@pytest.mark.parametrize("form", list(BinaryForm))
def test_a_binary_answer_carries_the_json_answers_values(form: BinaryForm) -> None:
    forecasts = np.array([[12.5], [7.25]], dtype=np.float32)
    as_json = orjson.loads(oip.encode_response("r1", "lstm", 1, forecasts, {"tenant": "acme"}))
    payload, header_length = oip.encode_binary_response("r1", "lstm", 1, forecasts, {"tenant": "acme"}, form)
    property_value = str(header_length) if form is BinaryForm.HEADER_PROPERTY else None
    if form is BinaryForm.SEPARATOR:
        assert payload[header_length : header_length + 1] == oip_binary.SEPARATOR
    body = oip_answers.load_answer(payload, property_value)
    header_output = orjson.loads(payload[:header_length])["outputs"][0]
    assert "data" not in header_output and header_output["parameters"]["binary_data_size"] == forecasts.nbytes
    output = body["outputs"][0]
    assert output.pop("parameters") == {"binary_data_size": 8}
    assert body == as_json  # the same answer, once the bytes are read back as data
    INFERENCE_RESPONSE.validate(body)
    decoded = oip_answers.decode_answer(body)
    assert isinstance(decoded, oip_answers.Forecast) and decoded.values == (12.5, 7.25)


def test_a_binary_answer_is_asked_for_per_request() -> None:
    plain = orjson.loads(oip.encode_request("a", WINDOWS))
    assert _decode(orjson.dumps(plain)).binary_answer is None
    by_output = {**plain, "outputs": [{"name": "forecast", "parameters": {"binary_data": True}}]}
    assert _decode(orjson.dumps(by_output)).binary_answer is BinaryForm.SEPARATOR  # JSON request: NUL framing
    by_parameter = {**plain, "parameters": {"binary_data_output": True}}
    json_payload = orjson.dumps(by_parameter)
    # An MQTT 5 client that wants the property framing gives its JSON request the property
    assert _decode(json_payload, str(len(json_payload))).binary_answer is BinaryForm.HEADER_PROPERTY


FP32_6 = np.arange(6, dtype="<f4").tobytes()
MALFORMED: list[tuple[str, bytes, str | None, str, str]] = [
    ("short tensor", _binary(_header("m1", [1, 6, 1], "FP32", 24), FP32_6[:20]), None, "invalid_window", "short"),
    ("bytes after the tensor", _binary(_header("m2", [1, 6, 1], "FP32", 24), FP32_6 + b"\0"), None,
     "invalid_request", "after the tensor"),
    ("wrong datatype size", _binary(_header("m3", [1, 6, 1], "FP32", 12), FP32_6[:12]), None,
     "invalid_window", "4 bytes a value"),
    ("header length beyond the payload", orjson.dumps(_header("m4", [1, 6, 1], "FP32", 24)) + FP32_6, "9999",
     "invalid_request", "beyond the payload"),
    ("header length not a number", orjson.dumps(_header("m5", [1, 6, 1], "FP32", 24)) + FP32_6, "12a",
     "invalid_request", "byte count"),
    ("header length cutting the JSON", orjson.dumps(_header("m6", [1, 6, 1], "FP32", 24)) + FP32_6, "30",
     "bad_json", "not valid"),
    ("size without bytes", orjson.dumps(_header("m7", [1, 6, 1], "FP32", 24)), None,
     "invalid_request", "binary_data_size and the bytes"),
    ("bytes without a size", orjson.dumps({"id": "m8", "inputs": [{"name": "w", "shape": [1, 6, 1],
                                          "datatype": "FP32"}]}) + b"\0" + FP32_6, None,
     "invalid_request", "binary_data_size and the bytes"),
    ("data and a size", _binary(_header("m9", [1, 6, 1], "FP32", 24, data=[0] * 6), FP32_6), None,
     "invalid_request", "both data"),
    ("negative size", _binary(_header("m10", [1, 6, 1], "FP32", -24), FP32_6), None,
     "invalid_request", "byte count"),
    ("NaN in the tensor", _binary(_header("m11", [1, 6, 1], "FP32", 24),
                                  np.array([1, 2, np.nan, 4, 5, 6], dtype="<f4").tobytes()), None,
     "invalid_window", "NaN"),
    ("BOOL tensor", _binary(_header("m12", [1, 6, 1], "BOOL", 6), b"\1" * 6), None,
     "invalid_window", "not numeric"),
    ("too many windows", _binary(_header("m13", [65, 6, 1], "FP32", 65 * 24), b"\0" * 65 * 24), None,
     "too_large", "windows"),
]


@pytest.mark.parametrize(
    ("case", "payload", "header_length", "code", "words"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_binary_payload_gets_one_structured_error_under_its_id(
    case: str, payload: bytes, header_length: str | None, code: str, words: str
) -> None:
    with pytest.raises(RequestError) as caught:
        _decode(payload, header_length)
    error = caught.value
    assert error.code == code and words in error.message, (case, error.message)
    assert error.request_id == re.search(rb'"id":"(m\d+)"', payload).group(1).decode()  # type: ignore[union-attr]


def test_an_oversize_binary_payload_is_refused_unparsed() -> None:
    payload = _binary(_header("big", [1, 6, 1], "FP32", 24), FP32_6)
    with pytest.raises(RequestError) as caught:
        oip.decode_request(payload, max_bytes=len(payload) - 1, max_windows=64)
    assert caught.value.code == "too_large" and caught.value.request_id == "big"


def test_malformed_binary_answers_are_reported_not_misread() -> None:
    payload, _ = oip.encode_binary_response("r", "m", 1, np.ones((2, 1)), {}, BinaryForm.SEPARATOR)
    for broken in (payload[:-1], payload + b"\0\0\0\0"):
        with pytest.raises(ValueError):
            oip_answers.load_answer(broken)
    with pytest.raises(ValueError):
        oip_answers.load_answer(payload, "-1")


def test_binary_accepts_exactly_the_datatypes_json_does() -> None:
    assert set(oip_binary.DTYPES) == oip.FLOAT_DATATYPES | set(oip.INTEGER_RANGES)


def test_any_corruption_of_a_binary_request_is_a_request_error_or_a_request() -> None:
    """A hostile tenant's bytes: truncated, flipped, or with a lying header-length property.
    The decoder returns a request or raises a RequestError (one structured answer), nothing else."""
    rng = np.random.default_rng(17)
    payload, _ = oip.encode_binary_request("fz", WINDOWS, {"series": "s"}, BinaryForm.SEPARATOR)
    outcomes = {"request": 0, "error": 0}
    for _ in range(3000):
        corrupt = bytearray(payload)
        for _ in range(int(rng.integers(1, 4))):
            corrupt[int(rng.integers(len(corrupt)))] = int(rng.integers(256))
        cut = bytes(corrupt[: int(rng.integers(1, len(corrupt) + 1))])
        header_length = None if rng.random() < 0.5 else str(int(rng.integers(-5, len(cut) + 10)))
        try:
            _decode(cut, header_length)
            outcomes["request"] += 1
        except RequestError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 3000
