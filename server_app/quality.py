"""Online forecast accuracy: every forecast is resolved against the actual reading that a later
window of the same series carries, and scored beside the persistence forecast (next = last).

Knows nothing of MQTT or JSON: the worker feeds it (tenant, model, series, window, forecasts)
after answering, and publishes the events it returns. All state is bounded: at most
`max_series` series (least recently seen dropped, counted), `pending_per_series` unresolved
forecasts each, and a rolling window of `window` resolved forecasts per (tenant, model,
version, role). Each observation costs O(L + pending) for a window of L readings.

Time: a request's `parameters.time` is the time of the newest reading of its last window and
`parameters.step_s` the step between readings, so reading k of a window (0 = newest) is at
`time - k * step_s`, and a one-step forecast targets `time + step_s`. A forecast is resolved
by the first later window that holds a reading at its target time (within half a step).

Drift: a change detector from River (ADWIN by default, or Page-Hinkley) watches the live
version's error relative to persistence; an alarm is an increase it detects, or a skill
(MAE / persistence MAE) above the threshold once `min_resolved` forecasts are scored.
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from server_app.config import QualityConfig

log = logging.getLogger(__name__)

ROLES = ("live", "canary", "shadow")
VersionKey = tuple[str, str, int, str]  # tenant, model, version, role


class Detector(Protocol):
    drift_detected: bool

    def update(self, x: float) -> Any: ...


def make_detector(kind: str) -> Detector | None:
    """River's detector, or None while River is still being imported in the background (it
    pulls in SciPy: ~1 s): the serving thread never waits for that import."""
    if kind == "off":
        return None
    if not _imported.is_set():
        start_import()
        return None
    drift = sys.modules["river.drift"]
    if kind == "page_hinkley":
        # On the error relative to persistence (about 1 in normal operation): mode "up" watches
        # for increases only; threshold in those units.
        detector: Detector = drift.PageHinkley(min_instances=30, delta=0.05, threshold=20.0, mode="up")
        return detector
    adwin: Detector = drift.ADWIN()
    return adwin


_import_started = threading.Event()
_imported = threading.Event()  # set once the import has COMPLETED (sys.modules holds it half-done before)


def _import_river() -> None:
    try:
        importlib.import_module("river.drift")
    except ImportError:
        log.exception("River could not be imported: no drift detection (skill alarms still work)")
        return
    _imported.set()


def start_import() -> None:
    """Import River on a thread of its own, once."""
    if not _import_started.is_set():
        _import_started.set()
        importer = threading.Thread(target=_import_river, name="import-river", daemon=True)
        importer.start()


@dataclass(slots=True)
class _Pending:
    target: float
    forecast: float
    persistence: float
    model: str
    version: int
    role: str
    step: float


@dataclass(slots=True)
class _Series:
    pending: deque[_Pending]


class RollingScore:
    """MAE, RMSE and persistence MAE over the last `window` resolved forecasts, O(1) per update."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._errors: deque[tuple[float, float]] = deque()  # (model |e|, persistence |e|)
        self._abs = self._sq = self._persistence = 0.0
        self.resolved_total = 0

    def add(self, error: float, persistence_error: float) -> None:
        self._errors.append((abs(error), abs(persistence_error)))
        self._abs += abs(error)
        self._sq += error * error
        self._persistence += abs(persistence_error)
        self.resolved_total += 1
        if len(self._errors) > self.window:
            old, old_persistence = self._errors.popleft()
            self._abs -= old
            self._sq -= old * old
            self._persistence -= old_persistence

    def __len__(self) -> int:
        return len(self._errors)

    @property
    def mae(self) -> float:
        return self._abs / len(self._errors) if self._errors else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(max(self._sq, 0.0) / len(self._errors)) if self._errors else math.nan

    @property
    def persistence_mae(self) -> float:
        return self._persistence / len(self._errors) if self._errors else math.nan

    @property
    def skill(self) -> float:
        """MAE / persistence MAE: above 1 the model is worse than repeating the last reading."""
        persistence = self.persistence_mae
        return self.mae / persistence if self._errors and persistence > 0 else math.nan


@dataclass(slots=True)
class _Alarm:
    drift: bool = False
    skill: bool = False
    version: int | None = None
    resolved_at_raise: int = 0

    @property
    def active(self) -> bool:
        return self.drift or self.skill


@dataclass(frozen=True, slots=True)
class QualityEvent:
    """An alarm raised or cleared (`kind`), or a shadow that beats the live version."""

    kind: str  # "alarm", "clear" or "promote"
    tenant: str
    model: str
    version: int
    detail: dict[str, Any] = field(default_factory=dict)


class QualityTracker:
    def __init__(self, config: QualityConfig, clock: Any = time.time) -> None:
        self.config = config
        self._clock = clock
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()
        self._scores: dict[VersionKey, RollingScore] = {}
        self._detectors: dict[VersionKey, Detector | None] = {}
        self._alarms: dict[tuple[str, str], _Alarm] = {}
        self.series_dropped = 0
        self.changed: set[tuple[str, str]] = set()  # (tenant, model) whose scores moved since last taken

    def configure(self, config: QualityConfig) -> None:
        self.config = config

    # -- feeding ---------------------------------------------------------------------------
    def observe(
        self,
        tenant: str,
        model: str,
        series: str,
        newest_time: float,
        step_s: float,
        windows: np.ndarray,
        forecasts: list[tuple[int, str, float]],
    ) -> list[QualityEvent]:
        """`windows`: a request's windows [n, L] (oldest reading first, raw units), window i's
        newest reading at `newest_time - (n - 1 - i) * step_s`; `forecasts`: (version, role,
        one-step forecast) of every version that ran on the LAST window. Only the last window's
        forecast is scored (O(1) per request); every window's readings resolve earlier ones."""
        state = self._series_state(tenant, series)
        events = self._resolve(tenant, state, newest_time, step_s, windows)
        last = float(windows[-1, -1])
        for version, role, forecast in forecasts:
            if math.isfinite(forecast):
                state.pending.append(_Pending(newest_time + step_s, forecast, last, model, version, role, step_s))
        return events

    def observe_actual(self, tenant: str, series: str, at: float, value: float) -> list[QualityEvent]:
        """A reading the tenant published on its actuals topic: resolves the series' pending
        forecasts for that time (within half a step), whatever windows arrive or not."""
        state = self._series.get((tenant, series))
        if state is None:
            return []
        events: list[QualityEvent] = []
        keep: list[_Pending] = []
        for pending in state.pending:
            if abs(pending.target - at) <= pending.step / 2:
                events += self._score(tenant, pending, value)
            else:
                keep.append(pending)
        if len(keep) != len(state.pending):
            state.pending.clear()
            state.pending.extend(keep)
        return events

    def _series_state(self, tenant: str, series: str) -> _Series:
        key = (tenant, series)
        state = self._series.get(key)
        if state is None:
            state = self._series[key] = _Series(deque(maxlen=self.config.pending_per_series))
            while len(self._series) > self.config.max_series:
                self._series.popitem(last=False)
                self.series_dropped += 1
        else:
            self._series.move_to_end(key)
        return state

    def _resolve(
        self, tenant: str, state: _Series, newest_time: float, step_s: float, windows: np.ndarray
    ) -> list[QualityEvent]:
        if step_s <= 0 or not state.pending:
            return []
        count, length = windows.shape
        events: list[QualityEvent] = []
        keep: list[_Pending] = []
        for pending in state.pending:
            back = round((newest_time - pending.target) / step_s)  # readings before the newest
            if abs(newest_time - back * step_s - pending.target) > step_s / 2:
                keep.append(pending)  # off this request's time grid: leave it for another
                continue
            if back < 0:
                keep.append(pending)  # its reading has not come yet
                continue
            # The newest window holds `length` readings; each earlier window one more, older.
            window = count - 1 - max(0, back - (length - 1))
            if window < 0:
                keep.append(pending)  # older than this request holds: an actual may still come
                continue
            position = length - 1 - (back - (count - 1 - window))
            events += self._score(tenant, pending, float(windows[window, position]))
        state.pending.clear()
        state.pending.extend(keep)
        return events

    def _score(self, tenant: str, pending: _Pending, actual: float) -> list[QualityEvent]:
        key: VersionKey = (tenant, pending.model, pending.version, pending.role)
        score = self._scores.get(key)
        if score is None:
            score = self._scores[key] = RollingScore(self.config.window)
        if pending.role == "live" and self._detectors.get(key) is None:
            self._detectors[key] = make_detector(self.config.drift_detector)  # None until River is imported
        error = pending.forecast - actual
        persistence_error = pending.persistence - actual
        score.add(error, persistence_error)
        self.changed.add((tenant, pending.model))
        if pending.role != "live":
            return self._maybe_promote(tenant, pending.model) if pending.role == "shadow" else []
        detector = self._detectors.get(key)
        drift_up = False
        if detector is not None:
            # Relative to the persistence error, so one threshold fits every series' scale.
            scale = score.persistence_mae if score.persistence_mae > 0 else 1.0
            before = getattr(detector, "estimation", None)
            detector.update(abs(error) / scale)
            after = getattr(detector, "estimation", None)
            # ADWIN also detects decreases; its estimate moves the way the change went.
            drift_up = bool(detector.drift_detected) and (before is None or after is None or after > before)
        return self._judge(tenant, pending.model, pending.version, score, drift_up)

    def _judge(
        self, tenant: str, model: str, version: int, score: RollingScore, drift_up: bool
    ) -> list[QualityEvent]:
        alarm = self._alarms.setdefault((tenant, model), _Alarm())
        was_active = alarm.active
        if alarm.version != version:  # a new live version starts with a clean slate
            alarm.drift, alarm.version = False, version
        judged = len(score) >= self.config.min_resolved
        if drift_up and judged:
            alarm.drift = True
            alarm.resolved_at_raise = score.resolved_total
        if judged:
            alarm.skill = score.skill > self.config.skill_threshold
            # A drift alarm clears once a whole window after it scores within the threshold.
            if alarm.drift and not alarm.skill and score.resolved_total - alarm.resolved_at_raise >= score.window:
                alarm.drift = False
        if alarm.active == was_active:
            return []
        detail = self.describe_version(tenant, model, version, "live")
        detail["reasons"] = [name for name, on in (("drift", alarm.drift), ("skill", alarm.skill)) if on]
        return [QualityEvent("alarm" if alarm.active else "clear", tenant, model, version, detail)]

    def _maybe_promote(self, tenant: str, model: str) -> list[QualityEvent]:
        rule = self.config.auto_promote
        if rule is None:
            return []
        live = self._score_of(tenant, model, "live")
        shadow = self._score_of(tenant, model, "shadow")
        if live is None or shadow is None:
            return []
        (live_version, live_score), (shadow_version, shadow_score) = live, shadow
        if min(len(live_score), len(shadow_score)) < rule.min_resolved or shadow_version == live_version:
            return []
        if shadow_score.mae < (1 - rule.margin) * live_score.mae:
            detail = {"from": live_version, "live_mae": live_score.mae, "shadow_mae": shadow_score.mae}
            return [QualityEvent("promote", tenant, model, shadow_version, detail)]
        return []

    def _score_of(self, tenant: str, model: str, role: str) -> tuple[int, RollingScore] | None:
        found = [(k[2], s) for k, s in self._scores.items() if k[0] == tenant and k[1] == model and k[3] == role]
        return max(found, key=lambda pair: pair[1].resolved_total) if found else None

    # -- reading -----------------------------------------------------------------------------
    def alarm_active(self, tenant: str, model: str) -> bool:
        alarm = self._alarms.get((tenant, model))
        return alarm is not None and alarm.active

    def describe_version(self, tenant: str, model: str, version: int, role: str) -> dict[str, Any]:
        score = self._scores.get((tenant, model, version, role))
        if score is None:
            return {"version": version, "role": role, "resolved": 0}
        return {
            "version": version,
            "role": role,
            "resolved": len(score),
            "resolved_total": score.resolved_total,
            "mae": _finite(score.mae),
            "rmse": _finite(score.rmse),
            "persistence_mae": _finite(score.persistence_mae),
            "skill": _finite(score.skill),
        }

    def describe(self, tenant: str, model: str) -> dict[str, Any]:
        """Every version of (tenant, model) scored here, and its alarm: the quality topic's body."""
        versions = [
            self.describe_version(t, m, v, r) for (t, m, v, r) in sorted(self._scores) if t == tenant and m == model
        ]
        alarm = self._alarms.get((tenant, model), _Alarm())
        reasons = [name for name, on in (("drift", alarm.drift), ("skill", alarm.skill)) if on]
        return {
            "tenant": tenant,
            "model": model,
            "alarm": alarm.active,
            "reasons": reasons,
            "versions": versions,
            "updated_at": self._clock(),
        }

    def scores(self) -> dict[VersionKey, RollingScore]:
        return dict(self._scores)

    def forget_except(self, tenants: set[str]) -> None:
        """Drop everything of tenants removed by a reload (bounded memory)."""
        for series_key in [k for k in self._series if k[0] not in tenants]:
            del self._series[series_key]
        for version_key in [k for k in self._scores if k[0] not in tenants]:
            self._scores.pop(version_key)
            self._detectors.pop(version_key, None)
        for alarm_key in [k for k in self._alarms if k[0] not in tenants]:
            del self._alarms[alarm_key]


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
