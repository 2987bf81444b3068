"""One station's windows and the readings that followed them, from a CSV file.

Two kinds of file (``data_format``; ``auto`` tells them apart by the header):

* **BTS schema** (``station_id, parameter_id, reading_time, value``): read, validated,
  filtered, deduplicated and resampled by :mod:`contract.bts`, the same code ``ml_training``
  trains from, so a client sends exactly what a model was trained on (the rules are there;
  ``time_unit`` says the unit of numeric times where detection would guess wrong). One
  station: ``station``, or by default the first station in file order with readings of the
  parameter. Window ``i`` is ``window`` consecutive samples, its actual next reading the
  sample after.
* **The original tutorial's pre-windowed file**: one row per window, ``norm_1`` (newest)
  .. ``norm_N`` and the actual next value ``norm_value``, already normalised; other columns
  are ignored, except ``station_id`` and ``parameter_id`` which, when present, select rows
  as for BTS files. Rows are windows in file order; a row's later actuals (for multi-step
  forecasts) are known where the next rows continue it (row ``i + 1`` is row ``i`` moved on
  by one reading).

:func:`load_windows` fails with a clear message when not one window can be made.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from contract import bts
from contract.bts import DataError

__all__ = [
    "DataError",
    "Series",
    "Windows",
    "detect_format",
    "load_tutorial_windows",
    "load_windows",
    "make_windows",
    "read_series",
]

DataFormat = Literal["bts", "tutorial"]
TARGET = "norm_value"


@dataclass(frozen=True)
class Series:
    """One station's samples of one parameter, sorted by time, unique times, raw units."""

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
    """``x[i]`` ([window] readings, oldest first) and ``y[i]``, the reading that followed.

    ``normalized``: the values are already normalised (the tutorial's pre-windowed files);
    else raw readings. ``follows[i]``: window ``i + 1`` is window ``i`` moved on by one
    reading, so ``y[i + 1]`` is the reading two steps after window ``i`` (None: all are)."""

    x: np.ndarray  # [n, window] float64
    y: np.ndarray  # [n] float64
    target_times: np.ndarray  # [n] float64 unix seconds of y (NaN where unknown)
    station: int | None
    normalized: bool = False
    follows: np.ndarray | None = None  # [n] bool

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def actuals(self, start: int, count: int, horizon: int = 1) -> list[tuple[float | None, ...]]:
        """For windows ``start .. start+count-1``: the actual readings 1..`horizon` steps after
        each (step 1 is ``y``), None where the data does not have them."""
        n = len(self)
        rows: list[tuple[float | None, ...]] = []
        for i in range(start, start + count):
            row: list[float | None] = [float(self.y[i])]
            for j in range(i + 1, i + horizon):
                if j >= n or (self.follows is not None and not self.follows[j - 1]):
                    break
                row.append(float(self.y[j]))
            row.extend([None] * (horizon - len(row)))
            rows.append(tuple(row))
        return rows


def read_series(
    path: Path,
    station: int | None = None,
    parameter: int = 122,
    *,
    resample_s: float | None = None,
    time_unit: str = "auto",
) -> Series:
    """One station's series (default: the first station in file order with `parameter`),
    sampled every `resample_s` seconds if given."""
    readings = bts.load_csvs([path], time_unit=time_unit)
    if station is None:
        matching = np.flatnonzero(readings.parameter_id == parameter)
        if len(matching):
            station = int(readings.station_id[matching[0]])
    # station still None: no reading has `parameter`, which bts.select reports
    segments, selected, _, duplicates = bts.select(
        readings, parameter=parameter, stations=() if station is None else (station,), resample_s=resample_s
    )
    times, values = (segments[0].times, segments[0].values) if segments else (np.zeros(0), np.zeros(0))
    return Series(path, selected[0], parameter, times, values, duplicates)


def make_windows(times: np.ndarray, values: np.ndarray, window: int, station: int) -> Windows:
    """Every run of `window` consecutive samples, and the sample after it."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    x, y = bts.make_windows(np.asarray(values, dtype=np.float64), window)
    return Windows(x, y, np.array(times[window:], dtype=np.float64), station)


# --------------------------------------------------------------------------- file format


def _expected(window: int) -> str:
    return (
        f"the BTS columns {', '.join(bts.COLUMNS)}, or the tutorial's pre-windowed columns "
        f"{TARGET}, norm_1..norm_{window}"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from None


def _header(text: str) -> list[str]:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return [name.strip().lower() for name in next(csv.reader([first]), [])]


def detect_format(path: Path, window: int) -> DataFormat:
    """"bts" or "tutorial" from the header; DataError naming the columns expected otherwise."""
    header = _header(_read_text(path))
    if TARGET in header and "norm_1" in header:
        return "tutorial"
    if all(column in header for column in bts.COLUMNS):
        return "bts"
    shown = ", ".join(name for name in header if name) or "nothing"
    raise DataError(f"{path}: header has {shown}; expected {_expected(window)} (or set data_format)")


def _column(frame: pd.DataFrame, lines: np.ndarray, path: Path, name: str, integer: bool = False) -> np.ndarray:
    raw = frame[name].str.strip()
    numbers = np.array(pd.to_numeric(raw, errors="coerce"), dtype=np.float64, copy=True)
    bad = ~np.isfinite(numbers)
    what = "a finite number"
    if integer:
        with np.errstate(invalid="ignore"):
            bad |= np.floor(numbers) != numbers
        what = "an integer"
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = raw.iloc[first]
        detail = "missing value" if value == "" else f"not {what}: {value!r}"
        raise DataError(f"{path}: line {lines[first]}: column '{name}': {detail}")
    return numbers


def load_tutorial_windows(path: Path, *, station: int | None, parameter: int, window: int) -> Windows:
    """The tutorial's pre-windowed rows: x = norm_window .. norm_1 (oldest first), y = norm_value."""
    text = _read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: not a valid CSV file: {' '.join(str(exc).split())}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    needed = [TARGET, *(f"norm_{i}" for i in range(1, window + 1))]
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: the tutorial's pre-windowed format needs columns {TARGET}, norm_1..norm_{window} "
            f"(window {window}); missing {', '.join(missing)} (header has: {', '.join(frame.columns)})"
        )
    lines = np.arange(len(frame), dtype=np.int64) + 2  # the header is line 1
    keep = np.ones(len(frame), dtype=bool)
    if "parameter_id" in frame.columns:
        parameters = _column(frame, lines, path, "parameter_id", integer=True)
        keep &= parameters == parameter
        if not keep.any():
            raise DataError(f"{path}: no rows with parameter_id {parameter} "
                            f"(parameter ids present: {bts.listing(parameters)})")
    chosen: int | None = None
    if "station_id" in frame.columns:
        stations = _column(frame, lines, path, "station_id", integer=True)
        candidates = stations[keep]
        chosen = int(candidates[0]) if station is None and len(candidates) else station
        if chosen is not None and not (candidates == chosen).any():
            raise DataError(f"{path}: station {chosen} not found (stations present: {bts.listing(candidates)})")
        keep &= stations == chosen
    frame, lines = frame.loc[keep], lines[keep]
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows after the header")
    newest_first = np.stack([_column(frame, lines, path, f"norm_{i}") for i in range(1, window + 1)], axis=1)
    x = newest_first[:, ::-1].copy()
    y = _column(frame, lines, path, TARGET)
    follows = np.zeros(len(y), dtype=bool)
    if len(y) > 1:
        shifted = np.isclose(x[1:, :-1], x[:-1, 1:], rtol=1e-6, atol=1e-9).all(axis=1)
        follows[:-1] = shifted & np.isclose(x[1:, -1], y[:-1], rtol=1e-6, atol=1e-9)
    return Windows(x, y, np.full(len(y), np.nan), chosen, normalized=True, follows=follows)


def load_windows(
    path: Path,
    *,
    station: int | None,
    parameter: int,
    window: int,
    resample_s: float | None,
    time_unit: str = "auto",
    data_format: Literal["auto", "bts", "tutorial"] = "auto",
) -> Windows:
    """Read, select, (resample,) window; DataError when no window can be made."""
    kind = detect_format(path, window) if data_format == "auto" else data_format
    if kind == "tutorial":
        return load_tutorial_windows(path, station=station, parameter=parameter, window=window)
    series = read_series(path, station, parameter, resample_s=resample_s, time_unit=time_unit)
    windows = make_windows(series.times, series.values, window, series.station)
    if len(windows) == 0:
        what = f"samples every {resample_s:g}s" if resample_s is not None else "readings"
        raise DataError(
            f"{path}: station {series.station} has {len(series)} {what} of parameter {parameter}; "
            f"a window of {window} plus the next reading needs at least {window + 1}"
        )
    return windows
