"""Loading, validating, resampling, splitting and windowing BTS-schema CSV data.

Rules (also in ``data/README.md``):

* Columns ``station_id, parameter_id, reading_time, value`` are required (header names are
  matched case-insensitively after stripping spaces; extra columns are ignored; blank
  lines are skipped). ``station_id`` and ``parameter_id`` are integers, ``value`` a finite
  number, ``reading_time`` either unix seconds (integer or decimal, may be negative) or an
  ISO 8601 time (UTC when it has no offset).
* Several files are read in the order given, as if concatenated.
* Rows are filtered by parameter and stations, then sorted by time per station.
  **Duplicate timestamps**: of several readings of one station at the same time, the last
  one in input order (file order, then line order) is kept.
* Optional ``max_gap``: a gap between two readings of a station longer than this splits
  the station's series into independent segments.
* Optional resampling to a fixed interval (aligned to multiples of the interval since the
  epoch) carries the last reading forward, because BTS data is report-on-change: no new
  reading means the value did not change.
* Chronological split: cut times at the 70 % and 85 % (by default) quantiles of all sample
  times of the selected stations, the same calendar cut for every station; nothing is
  shuffled across time. Windows are built inside one (segment, split) piece only, so a
  window never spans two stations, a gap, or two splits.
* A window is ``window`` consecutive samples; its target is the next sample.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ml_training.errors import DataError

COLUMNS = ("station_id", "parameter_id", "reading_time", "value")
SPLITS = ("train", "validation", "test")
_MAX_LISTED = 10


@dataclass(frozen=True)
class SourceFile:
    """One input file, as recorded in the model's metadata."""

    path: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class Readings:
    """All rows of all input files, validated, in input order."""

    station_id: np.ndarray
    parameter_id: np.ndarray
    reading_time: np.ndarray
    value: np.ndarray
    files: tuple[SourceFile, ...]

    def __len__(self) -> int:
        return int(self.value.shape[0])


@dataclass(frozen=True)
class Segment:
    """A contiguous, time-sorted series of samples of one station."""

    station_id: int
    times: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class DataConfig:
    """How to turn readings into windows."""

    parameter_id: int = 122
    stations: tuple[int, ...] = ()
    window: int = 6
    resample: float | None = None
    max_gap: float | None = None
    validation_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.window < 1:
            raise DataError(f"window must be at least 1, got {self.window}")
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


def load_csvs(paths: Sequence[Path | str]) -> Readings:
    """Read and validate CSV files in the BTS schema, concatenated in the given order."""
    if not paths:
        raise DataError("no data files given")
    parts = [_read_csv(Path(p)) for p in paths]
    return Readings(
        station_id=np.concatenate([p[0] for p in parts]),
        parameter_id=np.concatenate([p[1] for p in parts]),
        reading_time=np.concatenate([p[2] for p in parts]),
        value=np.concatenate([p[3] for p in parts]),
        files=tuple(p[4] for p in parts),
    )


def _read_csv(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, SourceFile]:
    label = str(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{label}: is a directory, expected a CSV file") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot read: {exc.strerror or exc}") from None
    digest = hashlib.sha256(content).hexdigest()
    if not content.strip():
        raise DataError(f"{label}: file is empty, expected a header {', '.join(COLUMNS)}")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: not a UTF-8 text file ({exc.reason})") from None
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise DataError(f"{label}: not a valid CSV file: {message}") from None

    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        header = ", ".join(str(c) for c in frame.columns)
        raise DataError(
            f"{label}: missing column{'s' if len(missing) > 1 else ''} {names} "
            f"(header has: {header}; required: {', '.join(COLUMNS)})"
        )
    frame = frame.loc[:, list(COLUMNS)]
    for column in COLUMNS:
        frame[column] = frame[column].str.strip()
    # Line numbers: the header is line 1, so data row i (from 0) is line i + 2.
    lines = np.arange(len(frame), dtype=np.int64) + 2
    blank = (frame == "").all(axis=1).to_numpy()
    if blank.any():
        frame = frame.loc[~blank]
        lines = lines[~blank]
    if len(frame) == 0:
        raise DataError(f"{label}: no data rows after the header")

    station = _integers(label, frame, lines, "station_id")
    parameter = _integers(label, frame, lines, "parameter_id")
    times = _times(label, frame, lines)
    values = _finite(label, frame, lines, "value")
    return station, parameter, times, values, SourceFile(label, digest, len(frame))


def _bad(label: str, lines: np.ndarray, mask: np.ndarray, column: str, what: str, frame: pd.DataFrame) -> DataError:
    first = int(np.flatnonzero(mask)[0])
    raw = frame[column].iloc[first]
    count = int(mask.sum())
    more = f" (and {count - 1} more row{'s' if count > 2 else ''})" if count > 1 else ""
    detail = "missing value" if raw == "" else f"{what}: {raw!r}"
    return DataError(f"{label}: line {lines[first]}: column '{column}': {detail}{more}")


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return np.array(pd.to_numeric(frame[column], errors="coerce"), dtype=np.float64)  # a writable copy


def _finite(label: str, frame: pd.DataFrame, lines: np.ndarray, column: str) -> np.ndarray:
    numbers = _numeric(frame, column)
    unparsed = np.isnan(numbers) & ~_nan_text(frame[column])
    if unparsed.any():
        raise _bad(label, lines, unparsed, column, "not a number", frame)
    nonfinite = ~np.isfinite(numbers)
    if nonfinite.any():
        raise _bad(label, lines, nonfinite, column, "not a finite number", frame)
    return numbers


def _nan_text(column: pd.Series) -> np.ndarray:
    return np.asarray(column.str.lower().str.lstrip("+-").isin(["nan"]), dtype=bool)


def _integers(label: str, frame: pd.DataFrame, lines: np.ndarray, column: str) -> np.ndarray:
    numbers = _numeric(frame, column)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (np.floor(numbers) != numbers) | (np.abs(numbers) > 2**53)
    if bad.any():
        raise _bad(label, lines, bad, column, "not an integer", frame)
    return numbers.astype(np.int64)


def _times(label: str, frame: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
    column = "reading_time"
    seconds = _numeric(frame, column)
    text = ~np.isfinite(seconds)
    if text.any():
        raw = frame[column][text]
        parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
        epoch = pd.Timestamp(0, tz="UTC")
        converted = np.asarray((parsed - epoch) / pd.Timedelta(seconds=1), dtype=np.float64)
        seconds[text] = converted
        bad = ~np.isfinite(seconds)
        if bad.any():
            raise _bad(label, lines, bad, column, "not unix seconds or an ISO 8601 time", frame)
    return seconds


# --------------------------------------------------------------------------- selecting


def _listing(values: Sequence[int] | np.ndarray) -> str:
    items = [str(v) for v in sorted({int(v) for v in values})]
    if len(items) > _MAX_LISTED:
        items = [*items[:_MAX_LISTED], f"... ({len(items)} in all)"]
    return ", ".join(items) if items else "none"


def _files_label(readings: Readings) -> str:
    names = [f.path for f in readings.files]
    return names[0] if len(names) == 1 else f"{len(names)} files ({', '.join(names)})"


def select(readings: Readings, config: DataConfig) -> tuple[list[Segment], tuple[int, ...], int, int]:
    """Filter, sort, deduplicate and resample.

    Returns ``(segments, stations, rows_used, duplicates_dropped)``.
    """
    where = _files_label(readings)
    keep = readings.parameter_id == config.parameter_id
    if not keep.any():
        raise DataError(
            f"{where}: no readings with parameter_id {config.parameter_id} "
            f"(parameter ids present: {_listing(readings.parameter_id)}); "
            "choose one with --parameter"
        )
    present = np.unique(readings.station_id[keep])
    if config.stations:
        unknown = [s for s in config.stations if s not in set(present.tolist())]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise DataError(
                f"{where}: station{plural} {_listing(unknown)} not found with parameter_id "
                f"{config.parameter_id} (stations present: {_listing(present)})"
            )
        keep &= np.isin(readings.station_id, np.asarray(config.stations, dtype=np.int64))
    stations = tuple(sorted(int(s) for s in np.unique(readings.station_id[keep])))

    index = np.flatnonzero(keep)
    station = readings.station_id[index]
    times = readings.reading_time[index]
    values = readings.value[index]
    # Sort by station, then time, then input order; keep the last of equal (station, time).
    order = np.lexsort((index, times, station))
    station, times, values = station[order], times[order], values[order]
    last = np.ones(station.shape, dtype=bool)
    last[:-1] = (station[1:] != station[:-1]) | (times[1:] != times[:-1])
    duplicates = int((~last).sum())
    station, times, values = station[last], times[last], values[last]

    segments: list[Segment] = []
    bounds = np.flatnonzero(np.diff(station)) + 1
    for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(station)].tolist(), strict=True):
        sid = int(station[lo])
        t, v = times[lo:hi], values[lo:hi]
        pieces = [(t, v)]
        if config.max_gap is not None:
            cuts = np.flatnonzero(np.diff(t) > config.max_gap) + 1
            pieces = list(zip(np.split(t, cuts), np.split(v, cuts), strict=True))
        for pt, pv in pieces:
            if config.resample is not None:
                pt, pv = resample(pt, pv, config.resample)
            if len(pt):
                segments.append(Segment(sid, pt, pv))
    return segments, stations, len(station), duplicates


def resample(times: np.ndarray, values: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample a report-on-change series every ``interval`` seconds, carrying values forward.

    The grid is aligned to multiples of ``interval`` since the epoch and covers
    ``[first reading, last reading]``; each grid point takes the last reading at or before
    it. ``times`` must be sorted and unique.
    """
    if len(times) == 0:
        return times, values
    start = math.ceil(times[0] / interval) * interval
    grid = np.arange(start, times[-1] + interval * 1e-9, interval, dtype=np.float64)
    if len(grid) == 0:
        return grid, np.zeros(0)
    index = np.searchsorted(times, grid, side="right") - 1
    return grid, values[index]


# --------------------------------------------------------------------------- windows


def make_windows(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``window`` consecutive values and the value after each."""
    if len(values) < window + 1:
        return np.zeros((0, window)), np.zeros(0)
    x = np.lib.stride_tricks.sliding_window_view(values[:-1], window)
    return np.array(x, dtype=np.float64), np.array(values[window:], dtype=np.float64)


def prepare(readings: Readings, config: DataConfig) -> Dataset:
    """Readings -> chronologically split windows (raw units)."""
    segments, stations, rows, duplicates = select(readings, config)
    samples = sum(len(s.times) for s in segments)
    where = _files_label(readings)
    need = config.window + 1
    if samples < need * 3:
        raise DataError(
            f"{where}: not enough data: {samples} "
            f"{'samples' if config.resample else 'readings'} for station(s) "
            f"{_listing(stations)}, need at least {need} (--window {config.window} + 1 "
            "target) in each of the train, validation and test spans"
        )
    all_times = np.sort(np.concatenate([s.times for s in segments]))
    n = len(all_times)
    cut_train = all_times[min(n - 1, int(n * config.train_fraction))]
    cut_val = all_times[min(n - 1, int(n * (1.0 - config.test_fraction)))]

    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {name: [] for name in SPLITS}
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
            x, y = make_windows(pv, config.window)
            if len(y):
                parts[name].append((x, y, np.full(len(y), segment.station_id, dtype=np.int64), pt[config.window :]))

    windows: dict[str, Windows] = {}
    for name in SPLITS:
        if not parts[name]:
            count = sum(len(p) for p in span_times[name])
            raise DataError(
                f"{where}: not enough data: the {name} span has no complete window "
                f"({count} {'samples' if config.resample else 'readings'} there; a window "
                f"needs {config.window} consecutive ones + 1 target) - supply more data, "
                "use a smaller --window, or check --resample/--max-gap"
            )
        windows[name] = Windows(
            x=np.concatenate([p[0] for p in parts[name]]),
            y=np.concatenate([p[1] for p in parts[name]]),
            station=np.concatenate([p[2] for p in parts[name]]),
            target_time=np.concatenate([p[3] for p in parts[name]]),
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
