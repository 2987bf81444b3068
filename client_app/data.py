"""Read one station's series from a BTS-schema CSV and cut it into windows + next readings.

The CSV is read, validated, filtered, deduplicated and resampled by :mod:`contract.bts`,
the same code ``ml_training`` trains from, so a client sends exactly what a model was
trained on (the rules are there). What is the client's own:

* One station: ``station``, or by default the first station in file order that has readings
  of the parameter.
* Window ``i`` is ``window`` consecutive samples, its actual next reading the sample after;
  :func:`load_windows` fails with a clear message when not one window can be made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import bts
from contract.bts import DataError

__all__ = ["DataError", "Series", "Windows", "load_windows", "make_windows", "read_series"]


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
    """``x[i]`` ([window] raw readings, oldest first) and ``y[i]``, the reading that followed."""

    x: np.ndarray  # [n, window] float64
    y: np.ndarray  # [n] float64
    target_times: np.ndarray  # [n] float64 unix seconds of y
    station: int

    def __len__(self) -> int:
        return int(self.y.shape[0])


def read_series(
    path: Path, station: int | None = None, parameter: int = 122, *, resample_s: float | None = None
) -> Series:
    """One station's series (default: the first station in file order with `parameter`),
    sampled every `resample_s` seconds if given."""
    readings = bts.load_csvs([path])
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


def load_windows(
    path: Path, *, station: int | None, parameter: int, window: int, resample_s: float | None
) -> Windows:
    """Read, select, (resample,) window; DataError when no window can be made."""
    series = read_series(path, station, parameter, resample_s=resample_s)
    windows = make_windows(series.times, series.values, window, series.station)
    if len(windows) == 0:
        what = f"samples every {resample_s:g}s" if resample_s is not None else "readings"
        raise DataError(
            f"{path}: station {series.station} has {len(series)} {what} of parameter {parameter}; "
            f"a window of {window} plus the next reading needs at least {window + 1}"
        )
    return windows
