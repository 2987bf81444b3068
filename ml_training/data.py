"""Loading, validating, resampling, splitting and windowing BTS-schema CSV data.

Reading, validating, filtering, deduplicating, resampling and windowing are
:mod:`contract.bts`, the code the tenant client sends from too (rules there and in
``data/README.md``); its errors are raised here as :class:`ml_training.errors.DataError`.
This module adds the training side:

* Chronological split: cut times at the 70 % and 85 % (by default) quantiles of all sample
  times of the selected stations, the same calendar cut for every station; nothing is
  shuffled across time. Windows are built inside one (segment, split) piece only, so a
  window never spans two stations, a gap, or two splits.
* A window is ``window`` consecutive samples; its target is the next sample (with a horizon
  of H steps, the next H samples: ``Windows.ahead``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from contract import bts
from contract.bts import COLUMNS, Readings, Segment, SourceFile, files_label, listing, make_windows, resample
from ml_training.errors import DataError

__all__ = [
    "COLUMNS",
    "SPLITS",
    "DataConfig",
    "Dataset",
    "Readings",
    "Segment",
    "SourceFile",
    "Windows",
    "csv_files",
    "iso_time",
    "load_csvs",
    "make_windows",
    "prepare",
    "resample",
    "select",
]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DataConfig:
    """How to turn readings into windows."""

    parameter_id: int = 122
    stations: tuple[int, ...] = ()
    window: int = 6
    horizon: int = 1
    resample: float | None = None
    max_gap: float | None = None
    validation_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.window < 1:
            raise DataError(f"window must be at least 1, got {self.window}")
        if self.horizon < 1:
            raise DataError(f"horizon must be at least 1, got {self.horizon}")
        if self.resample is not None and not (self.resample > 0):
            raise DataError(f"resample interval must be positive, got {self.resample}")
        if self.max_gap is not None and not (self.max_gap > 0):
            raise DataError(f"max gap must be positive, got {self.max_gap}")
        fractions = (self.validation_fraction, self.test_fraction)
        if any(not (0 < f < 1) for f in fractions) or sum(fractions) >= 1:
            raise DataError(
                "validation and test fractions must be in (0, 1) and sum to less than 1, "
                f"got {self.validation_fraction} and {self.test_fraction}"
            )

    @property
    def train_fraction(self) -> float:
        return 1.0 - self.validation_fraction - self.test_fraction


@dataclass(frozen=True)
class Windows:
    """Windows of one split, in raw units.

    ``x`` is ``[n, window]``, ``y`` ``[n]``; ``station`` and ``target_time`` say where each
    target comes from (for plots and per-station evaluation).
    """

    x: np.ndarray
    y: np.ndarray
    station: np.ndarray
    target_time: np.ndarray
    ahead: np.ndarray | None = None
    """``[n, horizon]`` targets (step 1 first) when the horizon is more than one step."""

    def targets(self) -> np.ndarray:
        """What the model learns to forecast: ``y`` ``[n]``, or ``ahead`` ``[n, horizon]``."""
        return self.ahead if self.ahead is not None else self.y

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @staticmethod
    def empty(window: int) -> Windows:
        return Windows(
            x=np.zeros((0, window)),
            y=np.zeros(0),
            station=np.zeros(0, dtype=np.int64),
            target_time=np.zeros(0),
        )


@dataclass(frozen=True)
class Dataset:
    """Everything training needs, plus a description for the metadata."""

    config: DataConfig
    train: Windows
    validation: Windows
    test: Windows
    train_values: np.ndarray
    """All training-span samples (what the normalisation is fitted on)."""
    stations: tuple[int, ...]
    files: tuple[SourceFile, ...]
    rows: int
    """Readings used: after filtering by parameter and station and dropping duplicates."""
    duplicates_dropped: int
    samples: int
    """Samples after resampling (equal to ``rows`` without resampling)."""
    segments: int
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def split(self, name: str) -> Windows:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def describe(self) -> dict[str, object]:
        """The ``data`` section of metadata.json."""
        return {
            "files": [{"path": f.path, "sha256": f.sha256, "rows": f.rows} for f in self.files],
            "stations": list(self.stations),
            "parameter_id": self.config.parameter_id,
            "rows": self.rows,
            "duplicates_dropped": self.duplicates_dropped,
            "resample_seconds": self.config.resample,
            "max_gap_seconds": self.config.max_gap,
            "samples": self.samples,
            "segments": self.segments,
            "windows": {name: len(self.split(name)) for name in SPLITS},
            "split_fractions": {
                "train": round(self.config.train_fraction, 6),
                "validation": self.config.validation_fraction,
                "test": self.config.test_fraction,
            },
            "spans": {name: [iso_time(lo), iso_time(hi)] for name, (lo, hi) in self.spans.items()},
        }


# --------------------------------------------------------------------------- reading CSV


def iso_time(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with a ``Z``."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    text = stamp.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


@contextmanager
def _training_errors() -> Iterator[None]:
    """The shared reader's errors as :class:`ml_training.errors.DataError` (a TrainingError)."""
    try:
        yield
    except bts.DataError as exc:
        raise DataError(str(exc)) from None


def csv_files(paths: Sequence[Path | str]) -> list[Path]:
    """``paths`` with each folder replaced by its ``*.csv`` files in name order (hidden ones
    skipped), so a folder that collects e.g. one file per day reads as one series."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if not entry.is_dir():
            files.append(entry)
            continue
        found = sorted(p for p in entry.glob("*.csv") if not p.name.startswith(".") and p.is_file())
        if not found:
            raise DataError(f"{entry}: folder holds no *.csv file")
        files.extend(found)
    return files


def load_csvs(paths: Sequence[Path | str], time_unit: str = "auto") -> Readings:
    """Read and validate CSV files in the BTS schema, concatenated in the given order
    (a folder stands for its ``*.csv`` files, :func:`csv_files`)."""
    with _training_errors():
        return bts.load_csvs(csv_files(paths), time_unit)


def select(readings: Readings, config: DataConfig) -> tuple[list[Segment], tuple[int, ...], int, int]:
    """Filter, sort, deduplicate and resample.

    Returns ``(segments, stations, rows_used, duplicates_dropped)``.
    """
    with _training_errors():
        return bts.select(
            readings,
            parameter=config.parameter_id,
            stations=config.stations,
            max_gap=config.max_gap,
            resample_s=config.resample,
            parameter_hint="; choose one with --parameter",
        )


# --------------------------------------------------------------------------- windows


def prepare(readings: Readings, config: DataConfig) -> Dataset:
    """Readings -> chronologically split windows (raw units)."""
    segments, stations, rows, duplicates = select(readings, config)
    samples = sum(len(s.times) for s in segments)
    where = files_label(readings)
    need = config.window + config.horizon
    if samples < need * 3:
        raise DataError(
            f"{where}: not enough data: {samples} "
            f"{'samples' if config.resample else 'readings'} for station(s) "
            f"{listing(stations)}, need at least {need} (--window {config.window} + "
            f"{config.horizon} target(s)) in each of the train, validation and test spans"
        )
    all_times = np.sort(np.concatenate([s.times for s in segments]))
    n = len(all_times)
    cut_train = all_times[min(n - 1, int(n * config.train_fraction))]
    cut_val = all_times[min(n - 1, int(n * (1.0 - config.test_fraction)))]

    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {
        name: [] for name in SPLITS
    }
    span_times: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    train_values: list[np.ndarray] = []
    for segment in segments:
        t, v = segment.times, segment.values
        masks = {
            "train": t < cut_train,
            "validation": (t >= cut_train) & (t < cut_val),
            "test": t >= cut_val,
        }
        for name, mask in masks.items():
            if not mask.any():
                continue
            pt, pv = t[mask], v[mask]
            span_times[name].append(pt)
            if name == "train":
                train_values.append(pv)
            x, ahead = _windows(pv, config.window, config.horizon)
            if len(ahead):
                station_ids = np.full(len(ahead), segment.station_id, dtype=np.int64)
                targets_at = pt[config.window : config.window + len(ahead)]
                parts[name].append((x, ahead[:, 0], station_ids, targets_at, ahead))

    windows: dict[str, Windows] = {}
    for name in SPLITS:
        if not parts[name]:
            count = sum(len(p) for p in span_times[name])
            raise DataError(
                f"{where}: not enough data: the {name} span has no complete window "
                f"({count} {'samples' if config.resample else 'readings'} there; a window "
                f"needs {config.window} consecutive ones + {config.horizon} target(s)) - supply more data, "
                "use a smaller --window, or check --resample/--max-gap"
            )
        windows[name] = Windows(
            x=np.concatenate([p[0] for p in parts[name]]),
            y=np.concatenate([p[1] for p in parts[name]]),
            station=np.concatenate([p[2] for p in parts[name]]),
            target_time=np.concatenate([p[3] for p in parts[name]]),
            ahead=np.concatenate([p[4] for p in parts[name]]) if config.horizon > 1 else None,
        )
    spans = {
        name: (float(min(p.min() for p in span_times[name])), float(max(p.max() for p in span_times[name])))
        for name in SPLITS
    }
    return Dataset(
        config=config,
        train=windows["train"],
        validation=windows["validation"],
        test=windows["test"],
        train_values=np.concatenate(train_values),
        stations=stations,
        files=readings.files,
        rows=rows,
        duplicates_dropped=duplicates,
        samples=samples,
        segments=len(segments),
        spans=spans,
    )


def _windows(values: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[n, window]`` and the ``horizon`` values after each, ``[n, horizon]``."""
    if horizon == 1:
        x, y = make_windows(values, window)
        return x, y[:, np.newaxis]
    if len(values) < window + horizon:
        return np.zeros((0, window)), np.zeros((0, horizon))
    both = np.lib.stride_tricks.sliding_window_view(np.asarray(values, dtype=np.float64), window + horizon)
    return np.array(both[:, :window]), np.array(both[:, window:])
