"""Reply payloads -> Answer: one-step and multi-step ([n, H]) forecasts, errors, bad shapes."""

from __future__ import annotations

from typing import Any

import pytest

from client_app.answers import Answer, Sent, parse_oip_reply, parse_tutorial_reply, split_horizon
from client_app.client import Answer as ExportedAnswer
from client_app.client import ClientConnectError, ClientError, RequestTimeout

SENT = Sent("acme-abcd-0000001", 2, 10.0)


def reply(shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"id": SENT.id, "model_name": "lstm", "model_version": "3",
            "outputs": [{"name": "forecast", "shape": shape, "datatype": "FP32", "data": data}]}


def test_public_api_stays_importable_from_client() -> None:
    assert ExportedAnswer is Answer
    assert issubclass(ClientConnectError, ClientError) and issubclass(RequestTimeout, ClientError)


def test_one_step_answer_is_unchanged() -> None:
    answer = parse_oip_reply(SENT, reply([2, 1], [12.5, 13.0]), 10.002)
    assert answer == Answer(SENT.id, 2, 10.0, 10.002, (12.5, 13.0), model_name="lstm", model_version="3")
    assert answer.ok and answer.horizon == 1 and answer.steps is None
    assert answer.window_steps() == ((12.5,), (13.0,))
    assert answer.latency_ms == pytest.approx(2.0)
    # a flat [n] of one number per window is still one step
    assert parse_oip_reply(SENT, reply([2], [1.0, 2.0]), 11.0).forecasts == (1.0, 2.0)


def test_multi_step_answer_keeps_each_windows_horizon() -> None:
    answer = parse_oip_reply(SENT, reply([2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 11.0)
    assert answer.ok and answer.horizon == 3
    assert answer.forecasts == (1.0, 4.0)  # step 1 of each window
    assert answer.steps == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert answer.window_steps() == answer.steps
    one_window = parse_oip_reply(Sent("x", 1, 0.0), reply([1, 6], [float(v) for v in range(6)]), 1.0)
    assert one_window.horizon == 6 and one_window.forecasts == (0.0,)


@pytest.mark.parametrize(
    ("shape", "data"),
    [([3, 2], [1.0] * 6), ([2, 0], []), ([1, 3], [1.0, 2.0, 3.0]), ([2, 2, 2], [1.0] * 8)],
)
def test_shapes_that_do_not_fit_the_windows_sent_are_bad_responses(shape: list[int], data: list[float]) -> None:
    answer = parse_oip_reply(SENT, reply(shape, data), 11.0)
    assert answer.error_code == "bad_response" and answer.forecasts is None and answer.steps is None
    assert "expected outputs[0] of shape [2, H]" in (answer.error_message or "")
    assert f"got shape {shape}" in (answer.error_message or "")
    assert answer.window_steps() is None and answer.horizon == 1


def test_error_bodies_and_malformed_outputs() -> None:
    error = parse_oip_reply(SENT, {"id": SENT.id, "error": "no", "parameters": {"code": "unknown_model"}}, 11.0)
    assert (error.error_code, error.error_message, error.ok) == ("unknown_model", "no", False)
    broken = parse_oip_reply(SENT, reply([2, 1], [1.0]), 11.0)
    assert broken.error_code == "bad_response"


def test_split_horizon() -> None:
    assert split_horizon((1.0, 2.0, 3.0, 4.0), (2, 2), 2) == ((1.0, 2.0), (3.0, 4.0))
    assert split_horizon((1.0, 2.0), (2, 1), 2) == ((1.0,), (2.0,))
    assert split_horizon((1.0, 2.0, 3.0), (3,), 2) is None


def test_tutorial_replies_in_raw_or_normalised_units() -> None:
    sent = Sent("course-0", 1, 0.0)
    raw = parse_tutorial_reply(sent, {"LSTM": 0.5}, 1.0, "lstm", offset=15.0, scale=10.0)
    assert raw.forecasts == (20.0,) and raw.model_name == "lstm"
    normalised = parse_tutorial_reply(sent, {"LSTM": -0.135}, 1.0, "lstm", offset=0.0, scale=1.0)
    assert normalised.forecasts == (-0.135,)
    assert parse_tutorial_reply(sent, {"LSTM": 1, "ANN": 2}, 1.0, "lstm", 0.0, 1.0).error_code == "bad_response"
    error = parse_tutorial_reply(sent, {"error": "bad", "parameters": {"code": "invalid_window"}}, 1.0, "lstm", 0, 1)
    assert error.error_code == "invalid_window"
