"""Metrics against the persistence baseline, the result table, and PNG plots.

All metrics are in raw units (the units of the data). The persistence forecast is the
last reading of each window ("the next reading equals the last one"), the baseline any
forecaster of report-on-change data has to beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml_training.data import Windows

FORECAST_PLOT = "forecast_test.png"
TRAINING_PLOT = "training_curves.png"
_MAX_PLOTTED_STATIONS = 3


def mae(prediction: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(prediction) - np.asarray(actual))))


def rmse(prediction: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(prediction) - np.asarray(actual)))))


def persistence(windows: Windows) -> np.ndarray:
    """Persistence forecast: the last reading of each window."""
    return np.asarray(windows.x[:, -1], dtype=np.float64)


def split_metrics(prediction_raw: np.ndarray, windows: Windows) -> dict[str, object]:
    """Model and persistence MAE/RMSE on one split (raw units); step 1 of a multi-step
    forecast, and with a horizon of several steps, ``steps``: MAE of each step."""
    if prediction_raw.ndim == 2 and windows.ahead is not None:
        metrics = split_metrics(prediction_raw[:, 0], windows)
        last = persistence(windows)[:, np.newaxis]
        metrics["steps"] = [
            {"step": k + 1, "model_mae": mae(prediction_raw[:, k], windows.ahead[:, k]),
             "persistence_mae": mae(last[:, 0], windows.ahead[:, k])}
            for k in range(windows.ahead.shape[1])
        ]
        return metrics
    base = persistence(windows)
    model_mae = mae(prediction_raw, windows.y)
    base_mae = mae(base, windows.y)
    return {
        "windows": len(windows),
        "model": {"mae": model_mae, "rmse": rmse(prediction_raw, windows.y)},
        "persistence": {"mae": base_mae, "rmse": rmse(base, windows.y)},
        "mae_skill": (1.0 - model_mae / base_mae) if base_mae > 0 else None,
    }


def _metric(section: Mapping[str, object], who: str, name: str) -> float:
    inner = section[who]
    assert isinstance(inner, Mapping)
    return float(inner[name])


def format_table(label: str, metrics: Mapping[str, object], units: str = "raw units") -> str:
    """A small fixed-width table of test MAE/RMSE, model vs persistence."""
    rows = [
        (label, _metric(metrics, "model", "mae"), _metric(metrics, "model", "rmse")),
        ("persistence", _metric(metrics, "persistence", "mae"), _metric(metrics, "persistence", "rmse")),
    ]
    width = max(len("forecast"), *(len(r[0]) for r in rows))
    lines = [
        f"test span, {metrics['windows']} windows ({units}):",
        f"  {'forecast':<{width}}  {'MAE':>8}  {'RMSE':>8}",
    ]
    lines += [f"  {name:<{width}}  {a:8.4f}  {b:8.4f}" for name, a, b in rows]
    skill = metrics.get("mae_skill")
    if isinstance(skill, float):
        verdict = "better" if skill > 0 else "worse"
        lines.append(f"  MAE {abs(skill) * 100:.1f}% {verdict} than persistence")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_forecast(
    path: Path,
    windows: Windows,
    prediction_raw: np.ndarray,
    title: str,
    stations: Sequence[int],
) -> None:
    """Forecast vs actual on the test span, one panel per station (at most three)."""
    plt = _pyplot()
    shown = [s for s in stations if (windows.station == s).any()][:_MAX_PLOTTED_STATIONS]
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.6 * len(shown) + 0.6), squeeze=False, sharex=True)
    for ax, station in zip(axes[:, 0], shown, strict=True):
        mask = windows.station == station
        order = np.argsort(windows.target_time[mask], kind="stable")
        when = [datetime.fromtimestamp(t, UTC) for t in windows.target_time[mask][order]]
        actual = windows.y[mask][order]
        forecast = prediction_raw[mask][order]
        ax.plot(when, actual, color="0.55", linewidth=0.8, label="actual")
        ax.plot(when, forecast, color="tab:blue", linewidth=0.9, label="forecast")
        ax.set_title(
            f"station {station}: MAE model {mae(forecast, actual):.3f}, "
            f"persistence {mae(windows.x[mask][order][:, -1], actual):.3f}",
            fontsize=9,
        )
        ax.set_ylabel("value")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_history(path: Path, history: Mapping[str, Sequence[float]], title: str) -> None:
    """Training curves: loss and val_loss per epoch (normalised units, MSE)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("loss", "train loss"), ("val_loss", "validation loss")):
        values = history.get(key)
        if values:
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (normalised)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
