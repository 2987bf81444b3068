"""Run statistics: counts, errors by code, latency percentiles and MAE against actual readings.

``mae`` is always step 1 (each window's first forecast against the reading that followed
it). Multi-step answers (a model with a horizon of H steps) are also scored per step: step
h against the reading h steps after the window, where the data has it; the summary then
carries ``horizon`` and ``mae_by_step`` (one-step runs print and write exactly what they did
before these existed).

A :class:`Recorder` is fed by one thread (the mode's main loop); :meth:`Recorder.summary`
freezes it into a :class:`Summary`, which renders as text and as the ``SUMMARY {json}`` line.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson


def percentile(values: Sequence[float] | np.ndarray, p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values <= it; None if empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    if len(values) == 0:
        return None
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


def mean_absolute_error(forecasts: Sequence[float], actuals: Sequence[float]) -> float | None:
    """Mean of |forecast - actual|; None when there is nothing to compare."""
    if len(forecasts) != len(actuals):
        raise ValueError(f"{len(forecasts)} forecasts but {len(actuals)} actual readings")
    if not forecasts:
        return None
    return math.fsum(abs(f - a) for f, a in zip(forecasts, actuals, strict=True)) / len(forecasts)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Summary:
    tenant: str
    model: str
    mode: str
    sent: int
    answered: int
    errors: int
    errors_by_code: dict[str, int]
    unanswered: int
    windows_sent: int
    forecasts: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mae: float | None
    duration_s: float
    late: int = 0
    duplicates: int = 0
    uncorrelated_errors: int = 0
    stopped_early: bool = False
    model_versions: dict[str, int] = field(default_factory=dict)
    horizon: int = 1
    mae_by_step: tuple[float | None, ...] = ()
    forecasts_by_step: tuple[int, ...] = ()
    units: str = "raw units"

    @property
    def all_answered(self) -> bool:
        return self.unanswered == 0

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenant": self.tenant,
            "model": self.model,
            "mode": self.mode,
            "sent": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
            "unanswered": self.unanswered,
            "windows_sent": self.windows_sent,
            "forecasts": self.forecasts,
            "p50_ms": _rounded(self.p50_ms, 3),
            "p90_ms": _rounded(self.p90_ms, 3),
            "p99_ms": _rounded(self.p99_ms, 3),
            "max_ms": _rounded(self.max_ms, 3),
            "mae": _rounded(self.mae, 6),
            "duration_s": round(self.duration_s, 3),
            "late": self.late,
            "duplicates": self.duplicates,
            "uncorrelated_errors": self.uncorrelated_errors,
            "stopped_early": self.stopped_early,
            "model_versions": dict(sorted(self.model_versions.items())),
        }
        if self.units != "raw units":
            body["units"] = self.units
        if self.horizon > 1:
            body["horizon"] = self.horizon
            body["mae_by_step"] = [_rounded(m, 6) for m in self.mae_by_step]
            body["forecasts_by_step"] = list(self.forecasts_by_step)
        return body

    def json_line(self) -> str:
        """``SUMMARY {json}``: one line, stable keys, for scripts and tests."""
        return "SUMMARY " + orjson.dumps(self.as_dict()).decode()

    def text(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors_by_code.items())) or "none"
        rate = self.answered / self.duration_s if self.duration_s > 0 else 0.0
        lines = [
            f"summary {self.tenant}/{self.model} ({self.mode}{', stopped early' if self.stopped_early else ''}): "
            f"sent {self.sent} requests ({self.windows_sent} windows), answered {self.answered}, "
            f"unanswered {self.unanswered}, in {self.duration_s:.2f} s ({rate:.1f} answers/s)",
            f"errors: {self.errors} ({errors})",
            f"latency ms: p50 {ms(self.p50_ms)}  p90 {ms(self.p90_ms)}  p99 {ms(self.p99_ms)}  max {ms(self.max_ms)}",
            "MAE: -" if self.mae is None else f"MAE: {self.mae:.4f} over {self.forecasts} forecasts ({self.units})",
        ]
        if self.horizon > 1:
            steps = ", ".join(
                f"{step} {'-' if mae is None else f'{mae:.4f}'} ({count})"
                for step, (mae, count) in enumerate(zip(self.mae_by_step, self.forecasts_by_step, strict=True), 1)
            )
            lines.append(f"MAE by step (step MAE (forecasts scored)): {steps}")
        extras = [
            f"{name} {count}"
            for name, count in (
                ("late answers", self.late),
                ("duplicate answers", self.duplicates),
                ("errors without a request id", self.uncorrelated_errors),
            )
            if count
        ]
        if extras:
            lines.append("ignored: " + ", ".join(extras))
        return "\n".join(lines)


class Recorder:
    """Accumulates one run's outcomes in bounded memory per answer (8 bytes of latency).

    Not thread-safe: feed it from one thread."""

    def __init__(
        self, tenant: str, model: str, mode: str, clock: Any = time.monotonic, units: str = "raw units"
    ) -> None:
        self.tenant = tenant
        self.model = model
        self.mode = mode
        self._clock = clock
        self._started = clock()
        self._finished: float | None = None
        self.sent = 0
        self.windows_sent = 0
        self.answered = 0
        self.errors: Counter[str] = Counter()
        self.latencies_ms: array[float] = array("d")
        self.forecast_count = 0
        self._abs_error_sum = 0.0
        self.versions: Counter[str] = Counter()
        self.stopped_early = False
        self.units = units
        # per forecast step (index 0 = step 1), fed by multi-step answers only
        self._step_error_sums: list[float] = []
        self._step_counts: list[int] = []

    def record_sent(self, windows: int) -> None:
        self.sent += 1
        self.windows_sent += windows

    def record_answer(
        self,
        latency_ms: float,
        *,
        forecasts: Sequence[float] | None = None,
        actuals: Sequence[float] | None = None,
        error_code: str | None = None,
        model_version: str | None = None,
        steps: Sequence[Sequence[float]] | None = None,
        step_actuals: Sequence[Sequence[float | None]] | None = None,
    ) -> None:
        """One answer. `forecasts`/`actuals`: step 1 of each window; `steps`/`step_actuals`
        (multi-step answers): each window's H forecasts and the readings 1..H steps after it
        (None where unknown)."""
        self.answered += 1
        self.latencies_ms.append(latency_ms)
        if error_code is not None:
            self.errors[error_code] += 1
            return
        if model_version is not None:
            self.versions[model_version] += 1
        if forecasts is not None and actuals is not None:
            if len(forecasts) != len(actuals):
                raise ValueError(f"{len(forecasts)} forecasts but {len(actuals)} actual readings")
            self.forecast_count += len(forecasts)
            self._abs_error_sum += math.fsum(abs(float(f) - float(a)) for f, a in zip(forecasts, actuals, strict=True))
        if steps is not None and step_actuals is not None:
            self._record_steps(steps, step_actuals)

    def _record_steps(self, steps: Sequence[Sequence[float]], actuals: Sequence[Sequence[float | None]]) -> None:
        if len(steps) != len(actuals):
            raise ValueError(f"{len(steps)} windows of forecasts but {len(actuals)} of actual readings")
        for window_steps, window_actuals in zip(steps, actuals, strict=True):
            if len(window_steps) != len(window_actuals):
                raise ValueError(f"{len(window_steps)} forecast steps but {len(window_actuals)} actual readings")
            missing = len(window_steps) - len(self._step_counts)
            if missing > 0:
                self._step_error_sums.extend([0.0] * missing)
                self._step_counts.extend([0] * missing)
            for h, (forecast, actual) in enumerate(zip(window_steps, window_actuals, strict=True)):
                if actual is not None:
                    self._step_error_sums[h] += abs(float(forecast) - float(actual))
                    self._step_counts[h] += 1

    def finish(self) -> None:
        if self._finished is None:
            self._finished = self._clock()

    def summary(self, *, late: int = 0, duplicates: int = 0, uncorrelated_errors: int = 0) -> Summary:
        end = self._finished if self._finished is not None else self._clock()
        return Summary(
            tenant=self.tenant,
            model=self.model,
            mode=self.mode,
            sent=self.sent,
            answered=self.answered,
            errors=sum(self.errors.values()),
            errors_by_code=dict(self.errors),
            unanswered=self.sent - self.answered,
            windows_sent=self.windows_sent,
            forecasts=self.forecast_count,
            p50_ms=percentile(self.latencies_ms, 50),
            p90_ms=percentile(self.latencies_ms, 90),
            p99_ms=percentile(self.latencies_ms, 99),
            max_ms=max(self.latencies_ms) if self.latencies_ms else None,
            mae=self._abs_error_sum / self.forecast_count if self.forecast_count else None,
            duration_s=max(0.0, end - self._started),
            late=late,
            duplicates=duplicates,
            uncorrelated_errors=uncorrelated_errors,
            stopped_early=self.stopped_early,
            model_versions=dict(self.versions),
            horizon=max(1, len(self._step_counts)),
            mae_by_step=tuple(
                total / count if count else None
                for total, count in zip(self._step_error_sums, self._step_counts, strict=True)
            ),
            forecasts_by_step=tuple(self._step_counts),
            units=self.units,
        )
