"""Percentiles, MAE and the summary line."""

from __future__ import annotations

import json
import math

import pytest

from client_app.stats import Recorder, mean_absolute_error, percentile


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([4.0, 3.0, 2.0, 1.0], 75, 3.0),
        ([4.0, 3.0, 2.0, 1.0], 76, 4.0),
        (list(range(1, 101)), 99, 99.0),
        (list(range(1, 101)), 90, 90.0),
        (list(range(1, 1001)), 99, 990.0),
        ([3.0, 1.0, 2.0], 0, 1.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], p: float, expected: float | None) -> None:
    assert percentile(values, p) == expected


def test_percentile_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_mae() -> None:
    assert mean_absolute_error([], []) is None
    assert mean_absolute_error([1.0, 2.0, 3.0], [2.0, 2.0, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_absolute_error([1.0], [])


def test_recorder_summary() -> None:
    now = [100.0]
    recorder = Recorder("acme", "lstm", "stream", clock=lambda: now[0])
    for _ in range(5):
        recorder.record_sent(2)
    recorder.record_answer(1.0, forecasts=[10.0, 12.0], actuals=[11.0, 12.0], model_version="1")
    recorder.record_answer(3.0, forecasts=[10.0, 10.0], actuals=[10.0, 14.0], model_version="2")
    recorder.record_answer(2.0, error_code="invalid_window")
    recorder.record_answer(4.0, error_code="invalid_window")
    now[0] = 102.0
    recorder.finish()
    summary = recorder.summary(late=1)
    assert (summary.sent, summary.answered, summary.unanswered, summary.errors) == (5, 4, 1, 2)
    assert summary.errors_by_code == {"invalid_window": 2}
    assert summary.windows_sent == 10 and summary.forecasts == 4
    assert summary.mae == pytest.approx(5 / 4)
    assert (summary.p50_ms, summary.p99_ms, summary.max_ms) == (2.0, 4.0, 4.0)
    assert summary.duration_s == 2.0
    assert summary.model_versions == {"1": 1, "2": 1}
    assert not summary.all_answered
    line = summary.json_line()
    assert line.startswith("SUMMARY {")
    body = json.loads(line.removeprefix("SUMMARY "))
    assert {"tenant", "model", "sent", "answered", "errors", "unanswered", "p50_ms", "p99_ms", "mae"} <= set(body)
    assert body["late"] == 1
    text = summary.text()
    assert "errors: 2 (invalid_window 2)" in text
    assert "unanswered 1" in text and "late answers 1" in text


def test_empty_summary_is_valid_json() -> None:
    summary = Recorder("acme", "lstm", "wait").summary()
    body = json.loads(summary.json_line().removeprefix("SUMMARY "))
    assert body["mae"] is None and body["p50_ms"] is None and body["sent"] == 0
    assert "MAE: -" in summary.text()
    assert math.isfinite(body["duration_s"])


def test_forecasts_and_actuals_must_pair() -> None:
    recorder = Recorder("acme", "lstm", "stream")
    with pytest.raises(ValueError):
        recorder.record_answer(1.0, forecasts=[1.0, 2.0], actuals=[1.0])
