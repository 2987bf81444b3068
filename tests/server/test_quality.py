"""Online accuracy, unit level: forecasts resolved by later windows of the same series, scored
against persistence, drift alarms raised and cleared, bounded state, stable canary choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server_app.config import PromotionConfig, QualityConfig
from server_app.quality import QualityTracker, RollingScore
from server_app.service import in_canary


def tracker(**overrides: object) -> QualityTracker:
    config = QualityConfig(**{"window": 50, "min_resolved": 10, **overrides})  # type: ignore[arg-type]
    return QualityTracker(config, clock=lambda: 0.0)


def stream(
    quality: QualityTracker, values: np.ndarray, forecast: object, *, version: int = 1, start: int = 0,
    window: int = 6, series: str = "s1",
) -> list[str]:
    """Slide over `values` one reading at a time (time = reading index, step 1); the model's
    forecast is forecast(window). Returns the alarm events in order."""
    events = []
    for end in range(max(start, window), len(values)):
        w = values[end - window : end]
        outcome = [(version, "live", float(forecast(w)))]  # type: ignore[operator]
        for event in quality.observe("acme", "lstm", series, float(end - 1), 1.0, w[None, :], outcome):
            events.append(event.kind)
    return events


def test_rolling_score_is_mae_rmse_and_skill_over_the_window() -> None:
    score = RollingScore(window=3)
    for error, persistence in [(1.0, 2.0), (-2.0, 2.0), (3.0, 2.0), (1.0, 2.0)]:
        score.add(error, persistence)
    assert len(score) == 3 and score.resolved_total == 4
    assert score.mae == pytest.approx(2.0) and score.persistence_mae == pytest.approx(2.0)
    assert score.rmse == pytest.approx(math.sqrt((4 + 9 + 1) / 3))
    assert score.skill == pytest.approx(1.0)


def test_a_forecast_is_resolved_by_the_next_window_and_scored_against_persistence() -> None:
    quality = tracker()
    values = np.arange(20, dtype=float)  # a ramp: persistence is always 1 off, "next = last + 1" exact
    stream(quality, values, lambda w: w[-1] + 1)
    described = quality.describe_version("acme", "lstm", 1, "live")
    assert described["resolved"] == 20 - 6 - 1  # the last forecast has no actual yet
    assert described["mae"] == 0 and described["persistence_mae"] == 1 and described["skill"] == 0


def test_windows_of_a_batched_request_resolve_earlier_forecasts() -> None:
    quality = tracker()
    values = np.arange(40, dtype=float)
    quality.observe("acme", "lstm", "s", 5.0, 1.0, values[None, 0:6], [(1, "live", 6.5)])  # targets reading 6
    # One request of 10 consecutive windows: newest readings 7..16; reading 6 is in its first window.
    windows = np.stack([values[i - 5 : i + 1] for i in range(7, 17)])
    quality.observe("acme", "lstm", "s", 16.0, 1.0, windows, [(1, "live", 17.0)])
    assert quality.describe_version("acme", "lstm", 1, "live")["mae"] == pytest.approx(0.5)


def test_a_level_shift_raises_the_alarm_and_a_model_of_the_new_regime_clears_it() -> None:
    rng = np.random.default_rng(1)
    before = 15 + np.cumsum(rng.normal(0, 0.3, 300)) * 0.1 + rng.normal(0, 0.5, 300)
    after = before[-1] + 20 + rng.normal(0, 0.5, 300)
    values = np.concatenate([before, after])
    quality = tracker(window=50, min_resolved=20)
    mean_level = float(before.mean())
    # "The old model": forecasts the old level (a smoothed one), good before the shift.
    events = stream(quality, values[:300], lambda w: 0.5 * w.mean() + 0.5 * mean_level)
    assert events == [] and not quality.alarm_active("acme", "lstm")
    assert quality.describe_version("acme", "lstm", 1, "live")["skill"] < 1
    events = stream(quality, values[:360], lambda w: 0.5 * w.mean() + 0.5 * mean_level, start=300)
    assert events and events[0] == "alarm" and quality.alarm_active("acme", "lstm")
    assert "skill" in quality.describe("acme", "lstm")["reasons"]
    # Version 2 answers from now on: the alarm is judged on its own scores and clears.
    events = stream(quality, values, lambda w: w.mean(), version=2, start=360)
    assert events[-1] == "clear" and not quality.alarm_active("acme", "lstm")


def test_series_are_bounded_least_recently_seen_dropped() -> None:
    quality = tracker(max_series=3, pending_per_series=2)
    for n in range(5):
        quality.observe("acme", "lstm", f"s{n}", 5.0, 1.0, np.ones((1, 6)), [(1, "live", 1.0)])
    assert quality.series_dropped == 2 and len(quality._series) == 3
    for t in range(10):  # nothing resolves (no later windows): pending stays bounded
        quality.observe("acme", "lstm", "s4", 5.0 + t * 100, 1.0, np.ones((1, 6)), [(1, "live", 1.0)])
    assert len(quality._series[("acme", "s4")].pending) <= 2


def test_a_shadow_that_beats_the_live_version_by_the_margin_is_proposed_for_promotion() -> None:
    quality = tracker(auto_promote=PromotionConfig(margin=0.2, min_resolved=20))
    values = np.arange(100, dtype=float) % 7
    kinds = []
    for end in range(6, 100):
        w = values[end - 6 : end]
        outcome = [(1, "live", float(w[-1] + 3)), (2, "shadow", float(w[-1] + 1))]
        kinds += [e.kind for e in quality.observe("acme", "lstm", "s", float(end - 1), 1.0, w[None, :], outcome)]
    assert "promote" in kinds


def test_forgetting_a_removed_tenant_frees_its_state() -> None:
    quality = tracker()
    stream(quality, np.arange(20, dtype=float), lambda w: w[-1])
    quality.forget_except({"beta"})
    assert not quality.scores() and not quality._series


def test_canary_choice_is_stable_per_series_and_near_the_fraction() -> None:
    chosen = [in_canary(f"station-{n}", 0.1) for n in range(10_000)]
    assert 0.08 < sum(chosen) / len(chosen) < 0.12
    assert chosen == [in_canary(f"station-{n}", 0.1) for n in range(10_000)]


def test_actuals_resolve_forecasts_whose_windows_never_overlap() -> None:
    quality = tracker()
    window = np.arange(6, dtype=float)[None, :]
    for k in range(5):  # one window every 100 readings: no later window holds a target
        quality.observe("acme", "lstm", "s", 100.0 * k, 1.0, window, [(1, "live", 7.0)])
    assert quality.describe_version("acme", "lstm", 1, "live")["resolved"] == 0
    for k in range(5):
        quality.observe_actual("acme", "s", 100.0 * k + 1.0, 6.0)  # the reading one step after each
    quality.observe_actual("acme", "s", 999.0, 1.0)  # no forecast targets it: ignored
    described = quality.describe_version("acme", "lstm", 1, "live")
    assert described["resolved"] == 5 and described["mae"] == 1.0 and described["persistence_mae"] == 1.0
