"""Read one station's series from a BTS-schema CSV and cut it into windows + next readings.

CSV rules (the same as ``ml_training``, so a client sends exactly what a model was trained on):

* Columns ``station_id, parameter_id, reading_time, value`` are required; header names are
  matched case-insensitively after stripping spaces; extra columns are ignored; blank lines
  are skipped. Line numbers in errors count the header as line 1.
* ``station_id`` and ``parameter_id`` must be integers on every row. ``reading_time`` (unix
  seconds, integer or decimal, may be negative, or an ISO 8601 time, UTC when it has no
  offset) and ``value`` (a finite number) are checked on the selected station's rows only.
* Rows are filtered by parameter and station (default: the first station in file order that
  has the parameter), then sorted by time. Of several readings at the same time the last one
  in file order is kept.
* Optional resampling to a fixed interval: grid aligned to multiples of the interval since the
  epoch, covering [first reading, last reading]; each grid point takes the last reading at or
  before it (report-on-change data: no new reading means no change).
* Window ``i`` is ``window`` consecutive samples, its actual next reading the sample after.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("station_id", "parameter_id", "reading_time", "value")
_MAX_LISTED = 10


class DataError(Exception):
    """The data file cannot be read or has no usable windows; the message names file, line and column."""


@dataclass(frozen=True)
class Series:
    """One station's readings of one parameter, sorted by time, unique times, raw units."""

    path: Path
    station: int
    parameter: int
    times: np.ndarray  # float64 unix seconds
    values: np.ndarray  # float64
    duplicates_dropped: int

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class Windows:
    """``x[i]`` ([window] raw readings, oldest first) and ``y[i]``, the reading that followed."""

    x: np.ndarray  # [n, window] float64
    y: np.ndarray  # [n] float64
    target_times: np.ndarray  # [n] float64 unix seconds of y
    station: int

    def __len__(self) -> int:
        return int(self.y.shape[0])


# --------------------------------------------------------------------------- reading


def _bad_row(path: Path, frame: pd.DataFrame, lines: np.ndarray, mask: np.ndarray, column: str, what: str) -> DataError:
    first = int(np.flatnonzero(mask)[0])
    raw = frame[column].iloc[first]
    count = int(mask.sum())
    more = f" (and {count - 1} more row{'s' if count > 2 else ''})" if count > 1 else ""
    detail = "missing value" if raw == "" else f"{what}: {raw!r}"
    return DataError(f"{path}: line {int(lines[first])}: column '{column}': {detail}{more}")


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    # a writable copy: pandas 3 (copy-on-write) hands out read-only views
    return np.array(pd.to_numeric(frame[column], errors="coerce"), dtype=np.float64, copy=True)


def _integers(path: Path, frame: pd.DataFrame, lines: np.ndarray, column: str) -> np.ndarray:
    numbers = _numbers(frame, column)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (np.floor(numbers) != numbers) | (np.abs(numbers) > 2**53)
    if bad.any():
        raise _bad_row(path, frame, lines, bad, column, "not an integer")
    return numbers.astype(np.int64)


def _finite(path: Path, frame: pd.DataFrame, lines: np.ndarray, column: str) -> np.ndarray:
    numbers = _numbers(frame, column)
    bad = ~np.isfinite(numbers)
    if bad.any():
        raise _bad_row(path, frame, lines, bad, column, "not a finite number")
    return numbers


def _times(path: Path, frame: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
    column = "reading_time"
    seconds = _numbers(frame, column)
    text = ~np.isfinite(seconds)
    if text.any():
        raw = frame[column][text]
        parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
        converted = np.asarray((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1), dtype=np.float64)
        seconds[text] = converted
        bad = ~np.isfinite(seconds)
        if bad.any():
            raise _bad_row(path, frame, lines, bad, column, "not unix seconds or an ISO 8601 time")
    return seconds


def _listing(values: np.ndarray | list[int]) -> str:
    items = [str(v) for v in sorted({int(v) for v in values})]
    if len(items) > _MAX_LISTED:
        items = [*items[:_MAX_LISTED], f"... ({len(items)} in all)"]
    return ", ".join(items) if items else "none"


def _read_frame(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not content.strip():
        raise DataError(f"{path}: file is empty, expected a header {','.join(COLUMNS)}")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: not a valid CSV file: {' '.join(str(exc).split())}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"(header has: {', '.join(frame.columns)}; required: {', '.join(COLUMNS)})"
        )
    frame = frame.loc[:, list(COLUMNS)]
    for column in COLUMNS:
        frame[column] = frame[column].str.strip()
    lines = np.arange(len(frame), dtype=np.int64) + 2  # header is line 1
    blank = (frame == "").all(axis=1).to_numpy()
    if blank.any():
        frame, lines = frame.loc[~blank], lines[~blank]
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows after the header")
    return frame, lines


def read_series(path: Path, station: int | None = None, parameter: int = 122) -> Series:
    """One station's series (default: the first station in file order with `parameter`)."""
    frame, lines = _read_frame(path)
    stations = _integers(path, frame, lines, "station_id")
    parameters = _integers(path, frame, lines, "parameter_id")
    keep = parameters == parameter
    if not keep.any():
        raise DataError(
            f"{path}: no readings with parameter_id {parameter} (parameter ids present: {_listing(parameters)})"
        )
    if station is None:
        station = int(stations[np.flatnonzero(keep)[0]])
    else:
        found = keep & (stations == station)
        if not found.any():
            raise DataError(
                f"{path}: station {station} has no readings with parameter_id {parameter} "
                f"(stations present: {_listing(stations[keep])})"
            )
    keep &= stations == station
    selected, selected_lines = frame.loc[keep], lines[keep]
    times = _times(path, selected, selected_lines)
    values = _finite(path, selected, selected_lines, "value")
    order = np.argsort(times, kind="stable")  # equal times keep file order
    times, values = times[order], values[order]
    last = np.ones(times.shape, dtype=bool)
    last[:-1] = times[1:] != times[:-1]
    return Series(
        path=path,
        station=station,
        parameter=parameter,
        times=times[last],
        values=values[last],
        duplicates_dropped=int((~last).sum()),
    )


# --------------------------------------------------------------------------- shaping


def resample(times: np.ndarray, values: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample every `interval` seconds on an epoch-aligned grid, carrying the last reading forward.

    `times` must be sorted and unique. Matches ``ml_training.data.resample``.
    """
    if not interval > 0:
        raise ValueError(f"resample interval must be positive, got {interval}")
    if len(times) == 0:
        return np.zeros(0), np.zeros(0)
    start = math.ceil(times[0] / interval) * interval
    grid = np.arange(start, times[-1] + interval * 1e-9, interval, dtype=np.float64)
    if len(grid) == 0:
        return grid, np.zeros(0)
    index = np.searchsorted(times, grid, side="right") - 1
    return grid, np.asarray(values, dtype=np.float64)[index]


def make_windows(times: np.ndarray, values: np.ndarray, window: int, station: int) -> Windows:
    """Every run of `window` consecutive samples, and the sample after it."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if len(values) < window + 1:
        return Windows(np.zeros((0, window)), np.zeros(0), np.zeros(0), station)
    x = np.lib.stride_tricks.sliding_window_view(np.asarray(values[:-1], dtype=np.float64), window)
    return Windows(
        x=np.array(x, dtype=np.float64),
        y=np.array(values[window:], dtype=np.float64),
        target_times=np.array(times[window:], dtype=np.float64),
        station=station,
    )


def load_windows(
    path: Path, *, station: int | None, parameter: int, window: int, resample_s: float | None
) -> Windows:
    """Read, select, (resample,) window; DataError when no window can be made."""
    series = read_series(path, station, parameter)
    times, values = series.times, series.values
    if resample_s is not None:
        times, values = resample(times, values, resample_s)
    windows = make_windows(times, values, window, series.station)
    if len(windows) == 0:
        what = f"samples every {resample_s:g}s" if resample_s is not None else "readings"
        raise DataError(
            f"{path}: station {series.station} has {len(values)} {what} of parameter {parameter}; "
            f"a window of {window} plus the next reading needs at least {window + 1}"
        )
    return windows
