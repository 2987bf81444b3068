"""Wire protocol: topics and payload decoding, table style."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from server_app import protocol
from server_app.errors import BadJson, InvalidRequest, InvalidWindow, ServiceError, TooLarge, error_code


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("tenants/acme/models/lstm/requests", protocol.RequestTopic("acme", "lstm")),
        ("tenants/a-1_b/models/m2/requests", protocol.RequestTopic("a-1_b", "m2")),
        ("tenants/Acme/models/lstm/requests", None),  # upper case is not a tenant id
        ("tenants/+/models/lstm/requests", None),
        ("tenants/acme/models/lstm/responses", None),
        ("tenants/acme/models/lstm/requests/x", None),
        ("tenants//models/lstm/requests", None),
        ("inqueue/lstm", None),
        ("tenants/" + "a" * 64 + "/models/lstm/requests", None),
    ],
)
def test_parse_request_topic(topic: str, expected: protocol.RequestTopic | None) -> None:
    assert protocol.parse_request_topic(topic) == expected


def test_topics_and_shared_subscription() -> None:
    assert protocol.response_topic("acme", "ann") == "tenants/acme/models/ann/responses"
    assert protocol.errors_topic("acme") == "tenants/acme/errors"
    assert protocol.subscription_filter("a/+", "grp") == "$share/grp/a/+"
    assert protocol.subscription_filter("a/+", None) == "a/+"
    assert protocol.tenant_of_topic("tenants/acme/whatever/x") == "acme"
    assert protocol.tenant_of_topic("tenants/BAD/x") is None


def _request(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "id": "r1",
        "inputs": [{"name": "window", "shape": [2, 3, 1], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}],
    }
    body.update(overrides)
    return orjson.dumps(body)


def test_decode_valid_request() -> None:
    decoded = protocol.decode_request(_request(parameters={"normalized": True}), max_windows=10)
    assert decoded.id == "r1"
    assert decoded.normalized is True
    assert decoded.windows.dtype == np.float32
    np.testing.assert_array_equal(decoded.windows[:, :, 0], [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    ("payload", "error", "code", "fragment"),
    [
        (b"\xff\xfe", BadJson, "bad_json", "not valid UTF-8 JSON"),
        (b"{", BadJson, "bad_json", "not valid"),
        (b"[1,2]", InvalidRequest, "invalid_request", "JSON object"),
        (orjson.dumps({"inputs": []}), InvalidRequest, "invalid_request", "'id'"),
        (_request(inputs=[]), InvalidRequest, "invalid_request", "exactly one input"),
        (_request(inputs=[{"shape": [1, 3], "data": [1, 2, 3]}]), InvalidWindow, "invalid_window", "shape"),
        (_request(inputs=[{"shape": [1, 3, 1], "data": [1, 2]}]), InvalidWindow, "invalid_window", "needs 3"),
        (_request(inputs=[{"shape": [1, 3, 1], "data": [1, "x", 2]}]), InvalidWindow, "invalid_window", "numbers"),
        (_request(inputs=[{"shape": [1, 3, 1], "data": [1, [2], 3]}]), InvalidWindow, "invalid_window", "numbers"),
        (_request(inputs=[{"shape": [1, 3, 1], "data": [1, 1e39, 3]}]), InvalidWindow, "invalid_window", "NaN or Inf"),
        (_request(inputs=[{"shape": [1, 3, 1], "datatype": "INT8", "data": [1, 2, 3]}]), InvalidWindow,
         "invalid_window", "datatype"),
        (_request(inputs=[{"shape": [11, 1, 1], "data": [1] * 11}]), TooLarge, "too_large", "limit is 10"),
        (_request(inputs=[{"shape": [0, 3, 1], "data": []}]), InvalidWindow, "invalid_window", "positive"),
        (_request(inputs=[{"shape": [1, True, 1], "data": [1]}]), InvalidWindow, "invalid_window", "positive"),
    ],
)
def test_decode_rejects(payload: bytes, error: type[ServiceError], code: str, fragment: str) -> None:
    with pytest.raises(error) as caught:
        protocol.decode_request(payload, max_windows=10)
    assert error_code(caught.value) == code
    assert fragment in caught.value.message


def test_errors_carry_the_request_id_when_known() -> None:
    with pytest.raises(InvalidWindow) as caught:
        protocol.decode_request(_request(inputs=[{"shape": [1, 3, 1], "data": [1]}]), max_windows=10)
    assert caught.value.request_id == "r1"
    assert protocol.peek_request_id(b"garbage") is None
    assert protocol.peek_request_id(b'{"id": 7}') == "7"


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    with pytest.raises(BadJson):
        protocol.decode_request(b"[" * 100_000 + b"]" * 100_000, max_windows=10)


def test_tutorial_request_norm_1_is_newest() -> None:
    decoded = protocol.decode_tutorial_request(orjson.dumps({"norm_1": 1.0, "norm_2": 2.0, "norm_3": 3.0}))
    assert decoded.normalized
    np.testing.assert_array_equal(decoded.windows[0, :, 0], [3.0, 2.0, 1.0])


@pytest.mark.parametrize(
    "body",
    [{}, {"norm_1": 1.0, "norm_3": 2.0}, {"norm_1": "x"}, {"norm_x": 1.0}, {"norm_1": True}],
)
def test_tutorial_request_rejects(body: dict[str, object]) -> None:
    with pytest.raises(ServiceError):
        protocol.decode_tutorial_request(orjson.dumps(body))


def test_encode_response_and_error() -> None:
    body = orjson.loads(
        protocol.encode_response("r1", "lstm", 3, np.array([[1.5], [2.5]], dtype=np.float32), "acme", 1.0, "w-0")
    )
    assert body["model_version"] == "3"
    assert body["outputs"][0]["shape"] == [2, 1]
    assert body["outputs"][0]["data"] == [1.5, 2.5]
    assert body["parameters"] == {"tenant": "acme", "served_at": 1.0, "worker": "w-0"}
    error = orjson.loads(protocol.encode_error("r1", "invalid_window", "bad"))
    assert error == {"id": "r1", "error": {"code": "invalid_window", "message": "bad"}}
    assert orjson.loads(protocol.encode_tutorial_response("lstm", -0.25)) == {"LSTM": -0.25}
    assert not math.isnan(-0.25)
