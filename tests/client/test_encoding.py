"""Request payloads as the server decodes them (server_app.protocol is the contract)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from client_app.client import encode_oip, encode_tutorial
from server_app import protocol


def test_oip_request_round_trips_through_the_server_decoder() -> None:
    windows = np.array([[10, 11, 12.5, 12, 11, 10.5], [9, 9.5, 10, 10, 11, 12]], dtype=np.float64)
    payload = encode_oip("acme-abcd1234-0000001", windows)
    body = orjson.loads(payload)
    assert body["id"] == "acme-abcd1234-0000001"
    assert body["inputs"][0]["shape"] == [2, 6, 1]
    assert body["inputs"][0]["datatype"] == "FP32"
    assert body["inputs"][0]["data"][:6] == [10, 11, 12.5, 12, 11, 10.5]
    assert isinstance(body["parameters"]["sent_at"], float)
    decoded = protocol.decode_request(payload, max_windows=64)
    assert decoded.id == "acme-abcd1234-0000001" and not decoded.normalized
    np.testing.assert_array_equal(decoded.windows[:, :, 0], windows.astype(np.float32))


def test_tutorial_request_norm_1_is_the_newest_reading() -> None:
    window = [10.0, 11.0, 12.0, 13.0, 14.0, 20.0]  # oldest first, 20 the newest
    payload = encode_tutorial(window, offset=15.0, scale=5.0)
    body = orjson.loads(payload)
    assert list(body) == [f"norm_{i}" for i in range(1, 7)]
    assert body["norm_1"] == pytest.approx(1.0)  # (20 - 15) / 5
    assert body["norm_6"] == pytest.approx(-1.0)  # (10 - 15) / 5
    decoded = protocol.decode_tutorial_request(payload)
    assert decoded.normalized
    expected = [(v - 15.0) / 5.0 for v in window]
    np.testing.assert_allclose(decoded.windows[0, :, 0], expected, rtol=1e-6)


def test_request_ids_are_unique_per_run_and_ordered() -> None:
    from client_app.client import TenantClient
    from client_app.config import TenantClientConfig

    config = TenantClientConfig.model_validate({"tenant": "acme", "model": "lstm", "data": "x.csv"})
    first, second = TenantClient(config), TenantClient(config)
    ids = [first.next_id() for _ in range(3)]
    assert ids[0] == f"acme-{first.run_token}-0000001" and ids[2].endswith("-0000003")
    assert first.run_token != second.run_token
    assert second.next_id() not in ids
    assert len(ids[0]) <= protocol.MAX_ID_LENGTH
