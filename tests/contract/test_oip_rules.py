"""The Open Inference Protocol as we speak it: tables of valid and invalid payloads, each with
its reason. The README's protocol section is written from these tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

import contract.oip
from contract import actuals, oip, oip_answers
from contract.errors import ERROR_CODES, InvalidWindow, RequestError, TooLarge
from tests.contract.oip_schema import INFERENCE_ERROR_RESPONSE, INFERENCE_REQUEST, INFERENCE_RESPONSE

MAX_BYTES = 64 * 1024
MAX_WINDOWS = 8
WINDOW = [10.0, 11.0, 12.5, 12.0, 11.0, 10.5]


def tensor(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "window", "shape": [1, 6, 1], "datatype": "FP32", "data": WINDOW}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def request(*, id: Any = "r1", **tensor_overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [tensor(**tensor_overrides)]}
    if id is not None:
        body["id"] = id
    return body


def decode(payload: bytes) -> oip.DecodedRequest:
    return oip.decode_request(payload, max_bytes=MAX_BYTES, max_windows=MAX_WINDOWS)


# (reason, request body, expected id, expected windows [n, length, features])
VALID_REQUESTS: list[tuple[str, dict[str, Any], str | None, list[list[list[float]]]]] = [
    ("one FP32 window, flat data", request(), "r1", [[[v] for v in WINDOW]]),
    ("the id is optional in the specification", request(id=None), None, [[[v] for v in WINDOW]]),
    ("an empty id is still a string id", request(id=""), "", [[[v] for v in WINDOW]]),
    (
        "data nested row-major as deep as the shape",
        request(shape=[2, 3, 1], data=[[[1], [2], [3]], [[4], [5], [6]]]),
        "r1",
        [[[1], [2], [3]], [[4], [5], [6]]],
    ),
    (
        "data nested by window, each window flat",
        request(shape=[2, 3, 1], data=[[1, 2, 3], [4, 5, 6]]),
        "r1",
        [[[1], [2], [3]], [[4], [5], [6]]],
    ),
    ("shape [n, window_length] for a one-feature model", request(shape=[1, 6]), "r1", [[[v] for v in WINDOW]]),
    ("INT32 converted to the model's float32", request(datatype="INT32", data=[1, 2, 3, 4, 5, 6]), "r1",
     [[[1], [2], [3], [4], [5], [6]]]),
    ("INT64", request(datatype="INT64", data=[-1, 2, 3, 4, 5, 2**40]), "r1",
     [[[-1], [2], [3], [4], [5], [float(np.float32(2**40))]]]),
    ("UINT8 within its range", request(datatype="UINT8", data=[0, 2, 3, 4, 5, 255]), "r1",
     [[[0], [2], [3], [4], [5], [255]]]),
    ("FP16 converted to float32", request(datatype="FP16"), "r1", [[[v] for v in WINDOW]]),
    ("FP64 converted to float32", request(datatype="FP64"), "r1", [[[v] for v in WINDOW]]),
    ("integers are numbers in an FP32 tensor", request(data=[10, 11, 12, 12, 11, 10]), "r1",
     [[[10], [11], [12], [12], [11], [10]]]),
]


@pytest.mark.parametrize(
    ("reason", "body", "expected_id", "expected"), VALID_REQUESTS, ids=[r[0] for r in VALID_REQUESTS]
)
def test_valid_requests_are_served(reason: str, body: dict[str, Any], expected_id: str | None, expected: Any) -> None:
    INFERENCE_REQUEST.validate(body)  # the table itself follows the specification
    decoded = decode(orjson.dumps(body))
    assert decoded.id == expected_id
    assert decoded.windows.dtype == np.float32
    np.testing.assert_array_equal(decoded.windows, np.array(expected, dtype=np.float32))


def test_parameters_travel_with_the_request() -> None:
    decoded = decode(orjson.dumps({**request(), "parameters": {"normalized": True, "series": "s1"}}))
    assert decoded.normalized and decoded.parameters["series"] == "s1"
    assert not decode(orjson.dumps({**request(), "parameters": {"normalized": "yes"}})).normalized


def test_requested_outputs_and_unknown_members_are_ignored() -> None:
    body = {**request(), "outputs": [{"name": "forecast"}], "x-extension": 1}
    INFERENCE_REQUEST.validate(body)
    assert decode(orjson.dumps(body)).id == "r1"


# (reason, payload, wire code, id the error answer carries, does the specification allow it?)
INVALID_REQUESTS: list[tuple[str, bytes, str, str | None, bool]] = [
    ("not JSON", b"not json", "bad_json", None, False),
    ("a number beyond float64; id read from the start", b'{"id": "r1", "inputs": [1e400]}', "bad_json", "r1", False),
    ("invalid UTF-8; id read from the start", b'{"id": "r1", "inputs": "\xff"}', "bad_json", "r1", False),
    ("nesting too deep to parse", b'{"id":"r1","inputs":' + b"[" * 2_000 + b"]" * 2_000 + b"}", "bad_json", "r1",
     False),
    ("a JSON array, not an object", b"[1, 2]", "invalid_request", None, False),
    ("a numeric id: the specification's id is a string", orjson.dumps(request(id=7)), "invalid_request", "7", False),
    ("an id longer than 256 characters", orjson.dumps(request(id="x" * 257)), "invalid_request", None, True),
    ("no inputs", b'{"id": "r1"}', "invalid_request", "r1", False),
    ("an input without name", orjson.dumps(request(name=None)), "invalid_request", "r1", False),
    ("an input without datatype", orjson.dumps(request(datatype=None)), "invalid_request", "r1", False),
    ("an input without shape", orjson.dumps(request(shape=None)), "invalid_request", "r1", False),
    ("an input without data", orjson.dumps(request(data=None)), "invalid_request", "r1", False),
    ("two inputs: our models take one", orjson.dumps({"id": "r1", "inputs": [tensor(), tensor()]}),
     "invalid_request", "r1", True),
    ("parameters that are not an object", orjson.dumps({**request(), "parameters": [1]}), "invalid_request", "r1",
     False),
    ("BOOL is not a number type", orjson.dumps(request(datatype="BOOL", data=[True] * 6)), "invalid_window", "r1",
     True),
    ("BYTES is not a number type", orjson.dumps(request(datatype="BYTES", data=["a"] * 6)), "invalid_window", "r1",
     True),
    ("numeric strings in an FP32 tensor", orjson.dumps(request(data=["10.5", 10, 11, 12, 11, 10])),
     "invalid_window", "r1", True),
    ("booleans in an FP32 tensor", orjson.dumps(request(data=[True, 10, 11, 12, 11, 10])), "invalid_window", "r1",
     True),
    ("fractions in an INT32 tensor", orjson.dumps(request(datatype="INT32", data=[1.5, 2, 3, 4, 5, 6])),
     "invalid_window", "r1", True),
    ("a value outside INT8", orjson.dumps(request(datatype="INT8", data=[128, 2, 3, 4, 5, 6])), "invalid_window",
     "r1", True),
    ("a value beyond float32", orjson.dumps(request(data=[1e39, 10, 11, 12, 11, 10])), "invalid_window", "r1", True),
    ("fewer values than the shape needs", orjson.dumps(request(data=WINDOW[:5])), "invalid_window", "r1", True),
    ("nested data that does not follow the shape", orjson.dumps(request(shape=[2, 3, 1], data=[[1, 2], [3, 4, 5, 6]])),
     "invalid_window", "r1", True),
    ("a zero in the shape", orjson.dumps(request(shape=[0, 6, 1], data=[])), "invalid_window", "r1", True),
    ("a shape of four dimensions", orjson.dumps(request(shape=[1, 6, 1, 1])), "invalid_window", "r1", True),
    ("more windows than a message may carry", orjson.dumps(request(shape=[9, 1, 1], data=[1] * 9)), "too_large",
     "r1", True),
]


@pytest.mark.parametrize(
    ("reason", "payload", "code", "error_id", "spec_allows"), INVALID_REQUESTS, ids=[r[0] for r in INVALID_REQUESTS]
)
def test_invalid_requests_get_one_structured_error(
    reason: str, payload: bytes, code: str, error_id: str | None, spec_allows: bool
) -> None:
    try:
        body = orjson.loads(payload)
        assert INFERENCE_REQUEST.is_valid(body) == spec_allows, "the table's claim about the specification is wrong"
    except orjson.JSONDecodeError:
        assert not spec_allows
    with pytest.raises(RequestError) as caught:
        decode(payload)
    assert caught.value.code == code
    assert caught.value.request_id == error_id
    assert caught.value.message


def test_a_payload_over_the_size_limit_is_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(payload: bytes) -> None:
        raise AssertionError("an oversize payload was parsed")

    monkeypatch.setattr(contract.oip.orjson, "loads", refuse)
    payload = b'{"id": "big-1", "inputs": [' + b"1," * MAX_BYTES + b"1]}"
    with pytest.raises(TooLarge, match=f"{len(payload)} bytes") as caught:
        decode(payload)
    assert caught.value.request_id == "big-1"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"id": "r1", "inputs": []}', "r1"),
        (b'  {\n "id" : "r-2"', "r-2"),
        (b'{"id": 42, "x": 1}', "42"),
        (b'{"inputs": [], "id": "late"}', None),  # only the first member is read without parsing
        (b'{"id": "has \\" escape"}', None),
        (b"garbage", None),
        (b'{"id": "' + b"x" * 300 + b'"}', None),
    ],
)
def test_peek_id_reads_only_a_leading_id(payload: bytes, expected: str | None) -> None:
    assert oip.peek_id(payload) == expected


# --------------------------------------------------------------------------- answers


def test_responses_validate_against_the_specification() -> None:
    forecasts = np.array([[1.5], [2.5]], dtype=np.float32)
    for request_id in ("r1", None):
        payload = oip.encode_response(request_id, "lstm", 3, forecasts, {"tenant": "acme"})
        body = orjson.loads(payload)
        if request_id is not None:  # the id leads, so clients (and peek_id) read it without parsing
            assert oip.peek_id(payload) == request_id
        INFERENCE_RESPONSE.validate(body)
        assert ("id" in body) == (request_id is not None)  # never "id": null
        assert body["model_version"] == "3"
        assert body["outputs"][0] == {"name": "forecast", "shape": [2, 1], "datatype": "FP32", "data": [1.5, 2.5]}


@pytest.mark.parametrize("request_id", ["r1", None])
def test_error_answers_validate_and_keep_a_machine_readable_code(request_id: str | None) -> None:
    payload = oip.encode_error(request_id, InvalidWindow("window too short"))
    assert oip.peek_id(payload) == request_id
    body = orjson.loads(payload)
    INFERENCE_ERROR_RESPONSE.validate(body)
    assert body["error"] == "window too short"
    assert body["parameters"]["code"] == "invalid_window" and body["parameters"]["code"] in ERROR_CODES
    assert body.get("id") == request_id and ("id" in body) == (request_id is not None)


def test_client_side_codec_round_trips_through_the_server_side() -> None:
    windows = np.array([WINDOW, WINDOW[::-1]], dtype=np.float64)
    payload = oip.encode_request("acme-1", windows, {"sent_at": 1.0})
    assert oip.peek_id(payload) == "acme-1"  # readable unparsed: what shed and oversize answers carry
    INFERENCE_REQUEST.validate(orjson.loads(payload))
    decoded = decode(payload)
    assert decoded.id == "acme-1" and decoded.parameters == {"sent_at": 1.0}
    np.testing.assert_array_equal(decoded.windows[:, :, 0], windows.astype(np.float32))
    answer = oip_answers.decode_answer(orjson.loads(oip.encode_response("acme-1", "ann", 1, np.ones((2, 1)), {})))
    assert isinstance(answer, oip_answers.Forecast) and answer.values == (1.0, 1.0) and answer.shape == (2, 1)
    error = oip_answers.decode_answer(orjson.loads(oip.encode_error("acme-1", TooLarge("big"))))
    assert error == oip_answers.ErrorAnswer("acme-1", "too_large", "big", {"code": "too_large"})


@pytest.mark.parametrize(
    "body",
    [
        {"model_name": "m", "outputs": []},
        {"model_name": "m", "outputs": [{"name": "f", "shape": [2], "datatype": "FP32", "data": [1.0]}]},
        {"model_name": "m", "outputs": [{"name": "f", "shape": [1], "datatype": "FP32", "data": ["1"]}]},
    ],
)
def test_client_refuses_malformed_answers(body: dict[str, Any]) -> None:
    answer = oip_answers.decode_answer(body)
    assert isinstance(answer, oip_answers.ErrorAnswer) and answer.code == "bad_response"


@pytest.mark.parametrize(
    ("payload", "count"),
    [(b'{"series": "s1", "time": 12, "value": 17.5}', 1), (b'[{"series": "s1", "time": 12, "value": 1}]*2', -1)],
)
def test_actuals_are_one_object_or_a_list(payload: bytes, count: int) -> None:
    if count < 0:
        with pytest.raises(RequestError):
            actuals.decode_actuals(payload, max_bytes=MAX_BYTES)
    else:
        assert actuals.decode_actuals(payload, max_bytes=MAX_BYTES) == [actuals.Actual("s1", 12.0, 17.5)]
    many = orjson.dumps([{"series": "s", "time": t, "value": 1.0} for t in range(3)])
    assert [a.time for a in actuals.decode_actuals(many, max_bytes=MAX_BYTES)] == [0.0, 1.0, 2.0]
    with pytest.raises(RequestError, match="series"):
        actuals.decode_actuals(b'{"time": 1, "value": 2}', max_bytes=MAX_BYTES)


@pytest.mark.parametrize("windows", [1, 11])  # 6 values are range-checked in Python, 66 by numpy
def test_float32_range_is_the_same_for_one_window_and_many(windows: int) -> None:
    largest = float(np.finfo(np.float32).max)
    just_inside = float(np.nextafter(largest + 2.0**103, 0))  # still rounds to the largest float32
    for value, finite in ((largest, True), (just_inside, True), (largest + 2.0**103, False), (-3.5e38, False)):
        data = [1.0] * (windows * 6 - 1) + [value]
        payload = orjson.dumps({"id": "r", "inputs": [{"name": "w", "shape": [windows, 6, 1], "datatype": "FP64",
                                                        "data": data}]})
        if finite:
            decoded = oip.decode_request(payload, max_bytes=MAX_BYTES, max_windows=64)
            assert decoded.windows.ravel()[-1] == np.float32(largest) * np.sign(value)
        else:
            with pytest.raises(InvalidWindow, match="beyond float32"):
                oip.decode_request(payload, max_bytes=MAX_BYTES, max_windows=64)
