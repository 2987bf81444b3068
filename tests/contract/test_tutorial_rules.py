"""The tutorial format: the original server's leniency, with NaN and Inf still refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from contract import tutorial
from contract.errors import InvalidWindow, RequestError

SIX = {f"norm_{i}": float(i) / 10 for i in range(1, 7)}  # norm_1 the newest


def decode(body: dict[str, Any]) -> np.ndarray:
    return tutorial.decode_request(orjson.dumps(body), max_bytes=4096).windows[0, :, 0]


VALID: list[tuple[str, dict[str, Any]]] = [
    ("six normalised readings", SIX),
    ("a whole CSV row: norm_value and other columns are ignored",
     {"station_id": 1161114002, "norm_value": 0.05, **SIX, "reading_time": "2020-01-01"}),
    ("numeric strings, as the original's float() read them", {k: str(v) for k, v in SIX.items()}),
    ("integers", {**SIX, "norm_1": 0}),
    ("keys in any order", dict(reversed(list(SIX.items())))),
    ("norm_ keys that are not norm_<n> are ignored", {**SIX, "norm_x": "whatever", "norm_": 1}),
]


@pytest.mark.parametrize(("reason", "body"), VALID, ids=[r[0] for r in VALID])
def test_valid_tutorial_requests(reason: str, body: dict[str, Any]) -> None:
    window = decode(body)
    expected_newest = float(body["norm_1"])
    assert window.shape == (6,)
    assert window[-1] == pytest.approx(expected_newest)  # served oldest first: norm_6 .. norm_1
    assert window[0] == pytest.approx(float(body["norm_6"]))


INVALID: list[tuple[str, dict[str, Any] | bytes]] = [
    ("NaN as a string", {**SIX, "norm_3": "nan"}),
    ("Infinity as a string", {**SIX, "norm_3": "-inf"}),
    ("a string that is not a number", {**SIX, "norm_3": "ten"}),
    ("a boolean", {**SIX, "norm_3": True}),
    ("a list", {**SIX, "norm_3": [1]}),
    ("a gap in the numbering", {k: v for k, v in SIX.items() if k != "norm_4"}),
    ("no norm_ values at all", {"norm_value": 1.0}),
    ("a value beyond float32", {**SIX, "norm_2": 1e39}),
]


@pytest.mark.parametrize(("reason", "body"), INVALID, ids=[r[0] for r in INVALID])
def test_invalid_tutorial_requests(reason: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidWindow):
        decode(body)  # type: ignore[arg-type]


def test_error_body_is_the_oip_error_body_with_the_id_only_when_given() -> None:
    assert orjson.loads(tutorial.encode_error(None, InvalidWindow("bad"))) == {
        "error": "bad", "parameters": {"code": "invalid_window"}
    }
    with pytest.raises(RequestError) as caught:
        tutorial.decode_request(b'{"id": "t-1", "norm_1": "x"}', max_bytes=4096)
    assert caught.value.request_id == "t-1"


def test_client_encoding_puts_the_newest_reading_first() -> None:
    window = [10.0, 11.0, 12.0, 13.0, 14.0, 20.0]  # oldest first, 20 the newest
    body = orjson.loads(tutorial.encode_request(window, offset=15.0, scale=5.0))
    assert list(body) == [f"norm_{i}" for i in range(1, 7)]
    assert body["norm_1"] == pytest.approx(1.0) and body["norm_6"] == pytest.approx(-1.0)
    np.testing.assert_allclose(decode(body), [(v - 15.0) / 5.0 for v in window], rtol=1e-6)
    assert orjson.loads(tutorial.encode_response("lstm", -0.25)) == {"LSTM": -0.25}
