"""Reading BTS-schema CSV files: the one implementation that ``ml_training`` trains from and
the tenant client (``client_app.data``) sends from, so a client sends exactly what a model
was trained on.

Rules (also in ``data/README.md``):

* Columns ``station_id, parameter_id, reading_time, value`` are required (header names are
  matched case-insensitively after stripping spaces; extra columns are ignored; blank
  lines are skipped). On every row ``station_id`` and ``parameter_id`` are integers,
  ``value`` a finite number, ``reading_time`` either Unix time (integer or decimal, may
  be negative; s, ms, us or ns, detected per file or given as ``time_unit``) or an ISO
  8601 time (UTC when it has no offset). Errors name the file, the
  line (the header is line 1) and the column.
* Several files are read in the order given, as if concatenated.
* Rows are filtered by parameter and stations, then sorted by time per station.
  **Duplicate timestamps**: of several readings of one station at the same time, the last
  one in input order (file order, then line order) is kept.
* Optional ``max_gap``: a gap between two readings of a station longer than this splits
  the station's series into independent segments.
* Optional resampling to a fixed interval (aligned to multiples of the interval since the
  epoch) carries the last reading forward, because BTS data is report-on-change: no new
  reading means the value did not change.
* A window is ``window`` consecutive samples; its target is the next sample.

Only numpy and pandas are imported (never TensorFlow). The module lives in the shared
``contract`` package, which both container images ship and which imports none of the
server, client or trainer.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("station_id", "parameter_id", "reading_time", "value")
_MAX_LISTED = 10


class DataError(Exception):
    """A data file cannot be read, is malformed, or lacks the selected readings; the message
    names the file (and, for a bad row, the line and the column)."""


@dataclass(frozen=True)
class SourceFile:
    """One input file, as recorded in a model's metadata."""

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


# --------------------------------------------------------------------------- reading CSV


def load_csvs(paths: Sequence[Path | str], time_unit: str = "auto") -> Readings:
    """Read and validate CSV files in the BTS schema, concatenated in the given order.

    ``time_unit``: the unit of numeric ``reading_time`` values, ``s``, ``ms``, ``us`` or ``ns``
    since the Unix epoch, or ``auto`` (per file, from the magnitude: seconds up to 1e11, i.e.
    until the year 5138; then ms, us, ns).
    """
    if not paths:
        raise DataError("no data files given")
    if time_unit not in TIME_UNITS and time_unit != "auto":
        raise DataError(f"unknown time unit {time_unit!r}; choose from auto, {', '.join(TIME_UNITS)}")
    parts = [_read_csv(Path(p), time_unit) for p in paths]
    return Readings(
        station_id=np.concatenate([p[0] for p in parts]),
        parameter_id=np.concatenate([p[1] for p in parts]),
        reading_time=np.concatenate([p[2] for p in parts]),
        value=np.concatenate([p[3] for p in parts]),
        files=tuple(p[4] for p in parts),
    )


def _read_csv(
    path: Path,
    time_unit: str = "auto",
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
    times = _times(label, frame, lines, time_unit)
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
    # a writable copy: pandas 3 (copy-on-write) hands out read-only views
    return np.array(pd.to_numeric(frame[column], errors="coerce"), dtype=np.float64, copy=True)


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


TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_LARGEST_SECONDS = 1e11  # year 5138: a larger number is not Unix seconds


def _times(label: str, frame: pd.DataFrame, lines: np.ndarray, time_unit: str = "auto") -> np.ndarray:
    column = "reading_time"
    seconds = _numeric(frame, column)
    numeric = np.isfinite(seconds)
    if numeric.any():
        largest = float(np.max(np.abs(seconds[numeric])))
        unit = time_unit
        if unit == "auto":
            unit = next((u for u, per_s in TIME_UNITS.items() if largest < _LARGEST_SECONDS * per_s), "")
        if not unit or largest >= _LARGEST_SECONDS * TIME_UNITS[unit]:
            bad = numeric & (np.abs(seconds) >= _LARGEST_SECONDS * TIME_UNITS[unit or "ns"])
            given = f"Unix time in {unit}" if time_unit != "auto" else "Unix time in s, ms, us or ns"
            raise _bad(label, lines, bad, column, f"out of range for {given} (or an ISO 8601 time)", frame)
        seconds[numeric] = seconds[numeric] / TIME_UNITS[unit]
    text = ~numeric
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


def listing(values: Sequence[int] | np.ndarray) -> str:
    """Sorted unique ids for a message, at most ten of them."""
    items = [str(v) for v in sorted({int(v) for v in values})]
    if len(items) > _MAX_LISTED:
        items = [*items[:_MAX_LISTED], f"... ({len(items)} in all)"]
    return ", ".join(items) if items else "none"


def files_label(readings: Readings) -> str:
    """The input files, as messages name them."""
    names = [f.path for f in readings.files]
    return names[0] if len(names) == 1 else f"{len(names)} files ({', '.join(names)})"


def select(
    readings: Readings,
    *,
    parameter: int,
    stations: Sequence[int] = (),
    max_gap: float | None = None,
    resample_s: float | None = None,
    parameter_hint: str = "",
) -> tuple[list[Segment], tuple[int, ...], int, int]:
    """Filter (``stations`` empty: all stations), sort, deduplicate, split at gaps, resample.

    Returns ``(segments, stations, rows_used, duplicates_dropped)``. ``parameter_hint`` is
    appended to the message when no reading has ``parameter`` (e.g. which option sets it).
    """
    where = files_label(readings)
    keep = readings.parameter_id == parameter
    if not keep.any():
        raise DataError(
            f"{where}: no readings with parameter_id {parameter} "
            f"(parameter ids present: {listing(readings.parameter_id)}){parameter_hint}"
        )
    present = np.unique(readings.station_id[keep])
    if stations:
        unknown = [s for s in stations if s not in set(present.tolist())]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise DataError(
                f"{where}: station{plural} {listing(unknown)} not found with parameter_id "
                f"{parameter} (stations present: {listing(present)})"
            )
        keep &= np.isin(readings.station_id, np.asarray(stations, dtype=np.int64))
    selected = tuple(sorted(int(s) for s in np.unique(readings.station_id[keep])))

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
        if max_gap is not None:
            cuts = np.flatnonzero(np.diff(t) > max_gap) + 1
            pieces = list(zip(np.split(t, cuts), np.split(v, cuts), strict=True))
        for pt, pv in pieces:
            if resample_s is not None:
                pt, pv = resample(pt, pv, resample_s)
            if len(pt):
                segments.append(Segment(sid, pt, pv))
    return segments, selected, len(station), duplicates


def resample(times: np.ndarray, values: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample a report-on-change series every ``interval`` seconds, carrying values forward.

    The grid is aligned to multiples of ``interval`` since the epoch and covers
    ``[first reading, last reading]``; each grid point takes the last reading at or before
    it. ``times`` must be sorted and unique.
    """
    if not interval > 0:
        raise ValueError(f"resample interval must be positive, got {interval}")
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
