"""Multi-step forecasts in the run modes: shown per window, scored per step against the
readings 1..H steps ahead (without a broker: a fake client answers at once)."""

from __future__ import annotations

import io
import json
import queue
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from client_app.answers import Answer
from client_app.cli import run as cli_run
from client_app.client import TenantClient
from client_app.config import TenantClientConfig
from client_app.data import Windows, load_windows, make_windows
from client_app.modes import RunOptions, RunResult, StopSignal, answer_lines, run_mode
from client_app.stats import Recorder
from tests.client.conftest import STATION, EchoResponder

CONFIG = TenantClientConfig.model_validate({"tenant": "acme", "model": "lstm", "data": "x.csv", "rate": 0})
STEP = 0.5


class FakeClient:
    """Answers every request at once: step h of a window = its last reading + (h - 1) * STEP."""

    def __init__(self, answers: queue.Queue[Answer], horizon: int, errors: Sequence[int] = ()) -> None:
        self.answers = answers
        self.horizon = horizon
        self.errors = set(errors)
        self.seq = 0
        self.late = self.duplicates = 0
        self.uncorrelated_errors: list[tuple[str | None, str]] = []
        self.outstanding = 0
        self.parameters: list[dict[str, object] | None] = []

    def next_id(self) -> str:
        self.seq += 1
        return f"acme-fake-{self.seq:07d}"

    def submit(self, windows: np.ndarray, request_id: str, parameters: dict[str, object] | None = None) -> None:
        self.parameters.append(parameters)
        now = time.monotonic()
        if int(request_id[-7:]) in self.errors:
            self.answers.put(Answer(request_id, len(windows), now, now, None, error_code="overloaded",
                                    error_message="busy"))
            return
        rows = tuple(tuple(float(w[-1]) + k * STEP for k in range(self.horizon)) for w in windows)
        self.answers.put(Answer(request_id, len(windows), now, now, tuple(r[0] for r in rows), model_name="lstm",
                                model_version="2", steps=rows if self.horizon > 1 else None))

    def expire(self, now: float | None = None, *, force: Sequence[str] = (), everything: bool = False) -> list[str]:
        return []


def series_windows(count: int = 40) -> Windows:
    values = np.array([10.0 + (i * 7) % 11 for i in range(count + 6)])
    return make_windows(np.arange(len(values), dtype=np.float64), values, 6, 1)


def run(windows: Windows, options: RunOptions, horizon: int, errors: Sequence[int] = ()) -> tuple[Any, str]:
    answers: queue.Queue[Answer] = queue.Queue()
    client = cast(TenantClient, FakeClient(answers, horizon, errors))
    out = io.StringIO()
    result = run_mode(CONFIG, options, windows, client, answers, StopSignal(), out)
    return result, out.getvalue()


def expected_step_mae(windows: Windows, sent: int, horizon: int) -> list[float]:
    """Step h of window i against y[i + h - 1] where that reading exists."""
    maes = []
    for h in range(1, horizon + 1):
        pairs = [(windows.x[i, -1] + (h - 1) * STEP, windows.y[i + h - 1])
                 for i in range(sent) if i + h - 1 < len(windows)]
        maes.append(float(np.mean([abs(f - a) for f, a in pairs])))
    return maes


def test_actuals_ahead_of_each_window() -> None:
    windows = series_windows(10)
    rows = windows.actuals(0, 2, horizon=3)
    assert rows == [tuple(float(v) for v in windows.y[0:3]), tuple(float(v) for v in windows.y[1:4])]
    assert windows.actuals(8, 2, horizon=3) == [(windows.y[8], windows.y[9], None), (windows.y[9], None, None)]
    assert windows.actuals(3, 1) == [(windows.y[3],)]
    follows = np.ones(10, dtype=bool)
    follows[4] = False  # window 5 does not continue window 4
    broken = Windows(windows.x, windows.y, windows.target_times, 1, follows=follows)
    assert broken.actuals(3, 2, horizon=3) == [(windows.y[3], windows.y[4], None), (windows.y[4], None, None)]


def test_stream_scores_each_step_against_the_reading_that_many_steps_ahead() -> None:
    windows = series_windows(40)
    result, out = run(windows, RunOptions(mode="stream", count=40, batch=1), horizon=3)
    summary = result.summary
    assert (summary.sent, summary.answered, summary.errors, summary.horizon) == (40, 40, 0, 3)
    expected = expected_step_mae(windows, 40, 3)
    assert summary.mae == pytest.approx(expected[0])  # the headline MAE is step 1
    assert summary.mae_by_step == pytest.approx(expected)
    assert summary.forecasts_by_step == (40, 39, 38)  # the last windows have no reading 2 or 3 steps ahead
    body = json.loads(summary.json_line().removeprefix("SUMMARY "))
    assert body["horizon"] == 3 and body["mae_by_step"] == pytest.approx(expected, abs=1e-6)
    assert "MAE by step" in summary.text()
    lines = out.splitlines()
    first = f"forecast {windows.x[0, -1]:.2f} {windows.x[0, -1] + STEP:.2f} {windows.x[0, -1] + 2 * STEP:.2f} actual "
    assert first + " ".join(f"{v:.2f}" for v in windows.y[0:3]) in lines[0]
    assert lines[-1].split(" actual ")[1].startswith(f"{windows.y[39]:.2f} - - (")


def test_batched_multi_step_answers_and_errors() -> None:
    windows = series_windows(40)
    result, out = run(windows, RunOptions(mode="no-wait", count=10, batch=4), horizon=2, errors=[3])
    summary = result.summary
    assert (summary.sent, summary.answered, summary.errors, summary.windows_sent) == (10, 10, 1, 40)
    scored = [i for i in range(40) if not 8 <= i < 12]  # message 3 (windows 8..11) was an error
    pairs_1 = [(windows.x[i, -1], windows.y[i]) for i in scored]
    pairs_2 = [(windows.x[i, -1] + STEP, windows.y[i + 1]) for i in scored if i + 1 < 40]
    assert summary.mae_by_step == pytest.approx([np.mean([abs(f - a) for f, a in p]) for p in (pairs_1, pairs_2)])
    assert out.count("[3] forecast ") == 9 and " error overloaded: busy " in out


def test_bulk_prints_each_windows_horizon() -> None:
    windows = series_windows(20)
    result, out = run(windows, RunOptions(mode="bulk", count=20, batch=8, quiet=True), horizon=3, errors=[2])
    printed = json.loads(out)
    assert len(printed) == 20 and printed[8:16] == [None] * 8
    assert printed[0] == pytest.approx([windows.x[0, -1] + k * STEP for k in range(3)])
    assert result.forecasts[0] == printed[0][0] and result.steps == printed


def test_one_step_runs_print_and_summarise_as_before() -> None:
    windows = series_windows(20)
    result, out = run(windows, RunOptions(mode="stream", count=5), horizon=1)
    body = json.loads(result.summary.json_line().removeprefix("SUMMARY "))
    assert list(body) == [
        "tenant", "model", "mode", "sent", "answered", "errors", "errors_by_code", "unanswered", "windows_sent",
        "forecasts", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mae", "duration_s", "late", "duplicates",
        "uncorrelated_errors", "stopped_early", "model_versions",
    ]
    assert "MAE by step" not in result.summary.text() and "(raw units)" in result.summary.text()
    line = out.splitlines()[0]
    assert line.startswith("acme lstm v2 id=acme-fake-0000001 forecast ")
    assert line.endswith(f"forecast {windows.x[0, -1]:.2f} actual {windows.y[0]:.2f} (0.0 ms)")
    bulk, printed = run(windows, RunOptions(mode="bulk", count=3, batch=2, quiet=True), horizon=1)
    assert json.loads(printed) == [windows.x[i, -1] for i in range(3)] and bulk.steps is None


def test_answer_lines() -> None:
    answer = Answer("id-1", 1, 0.0, 0.0015, (1.0,), model_version="4", steps=((1.0, 2.0),))
    assert list(answer_lines(CONFIG, answer, [(1.5, None)])) == [
        "acme lstm v4 id=id-1 forecast 1.00 2.00 actual 1.50 - (1.5 ms)"
    ]
    assert next(answer_lines(CONFIG, answer, [(0.12345, 0.5)], digits=4)).endswith(
        "forecast 1.0000 2.0000 actual 0.1235 0.5000 (1.5 ms)"
    )


def test_recorder_rejects_mismatched_steps() -> None:
    recorder = Recorder("acme", "lstm", "stream")
    with pytest.raises(ValueError):
        recorder.record_answer(1.0, forecasts=[1.0], actuals=[1.0], steps=[(1.0, 2.0)], step_actuals=[(1.0,)])
    recorder.record_answer(1.0, forecasts=[1.0], actuals=[2.0], steps=[(1.0, 2.0)], step_actuals=[(2.0, None)])
    summary = recorder.summary()
    assert (summary.horizon, summary.mae_by_step, summary.forecasts_by_step) == (2, (1.0, None), (1, 0))




@pytest.mark.integration
def test_multi_step_answers_over_a_broker(
    mosquitto: Any, echo: EchoResponder, make_config: Callable[..., TenantClientConfig], sample_csv: Path
) -> None:
    """The echo answers [n, 3] like a horizon model: parsed, printed and scored per step."""
    echo.horizon = 3
    config = make_config(mosquitto.host, mosquitto.port, batch=2)
    out, err = io.StringIO(), io.StringIO()
    result = cli_run(config, RunOptions(mode="stream", count=20, rate=None, batch=2), out=out, err=err)
    assert isinstance(result, RunResult), err.getvalue()
    summary = result.summary
    assert (summary.sent, summary.answered, summary.errors, summary.forecasts) == (20, 20, 0, 40)
    windows = load_windows(sample_csv, station=STATION, parameter=122, window=6, resample_s=None)
    assert summary.horizon == 3 and summary.forecasts_by_step == (40, 40, 40)
    assert summary.mae_by_step == pytest.approx(expected_step_mae(windows, 40, 3))
    first = out.getvalue().splitlines()[0]
    last = windows.x[0, -1]
    assert f"[0] forecast {last:.2f} {last + STEP:.2f} {last + 2 * STEP:.2f} actual {windows.y[0]:.2f} " in first
    assert '"horizon":3' in err.getvalue().splitlines()[-1]
