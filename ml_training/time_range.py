"""Train on recent readings: ``--since``, ``--until`` and ``--last``.

The range is applied to the readings of the selected parameter and stations right after
reading the CSV files, before deduplication, resampling, windowing and the chronological
split, so everything downstream (normalisation, the train/validation/test spans, the
metrics) sees only the readings in the range.

* ``--since T``: readings at or after ``T`` (inclusive).
* ``--until T``: readings before ``T`` (exclusive), so ``--since A --until B`` and
  ``--since B`` never share a reading.
* ``--last D``: readings in the last ``D`` before the newest selected reading (after
  ``--until``), i.e. from ``newest - D`` (inclusive) to ``newest``. Relative to the data,
  not to the clock, so a rerun on the same files trains on the same readings. Not together
  with ``--since``.

``T`` is an ISO 8601 time (UTC when it has no offset: ``2026-11-01``, ``2026-11-01T06:00Z``,
``2026-11-01T07:00+01:00``) or Unix seconds. ``D`` is a duration such as ``7d``, ``36h``,
``90m``, ``1d12h``, ``2w`` or plain seconds (``3600``).

What was applied is recorded in metadata.json under ``data.time_range``
(:class:`contract.model_format.TrainingTimeRange`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from contract.bts import Readings, files_label, listing
from ml_training.errors import DataError, OptionsError

__all__ = ["TimeRange", "apply", "format_duration", "format_time", "parse_duration", "parse_time"]

_UNITS = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_time(text: str) -> float:
    """An ISO 8601 time (UTC when it has no offset) or Unix seconds -> Unix seconds.

    ValueError with a message that says what is accepted.
    """
    raw = text.strip()
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
        raise ValueError(f"not a time: {text!r}")
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r}; use ISO 8601 (e.g. 2026-11-01T00:00Z, UTC when it has no offset) or Unix seconds"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_duration(text: str) -> float:
    """``7d``, ``36h``, ``90m``, ``1d12h``, ``2w``, ``3600`` (seconds) -> seconds (> 0)."""
    raw = text.strip().lower()
    seconds: float | None = None
    try:
        seconds = float(raw)
    except ValueError:
        if raw and "".join(m.group(0) for m in _DURATION_PART.finditer(raw)) == raw:
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(raw))
    if seconds is None:
        raise ValueError(f"not a duration: {text!r}; use e.g. 7d, 36h, 90m, 1d12h, 2w or seconds")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


def format_time(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with a ``Z``."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    text = stamp.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """Seconds in the largest unit that divides them: ``604800`` -> ``7d``, ``5400`` -> ``90m``."""
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class TimeRange:
    """The range options; all ``None``: every reading."""

    since: float | None = None
    until: float | None = None
    last: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None or self.until is not None or self.last is not None

    def check(self) -> None:
        if self.last is not None and self.since is not None:
            raise OptionsError("--last and --since exclude each other: --last counts back from the newest reading")
        if self.last is not None and not (math.isfinite(self.last) and self.last > 0):
            raise OptionsError(f"--last must be a positive duration, got {self.last} seconds")
        for label, value in (("--since", self.since), ("--until", self.until)):
            if value is not None and not math.isfinite(value):
                raise OptionsError(f"{label} must be a finite time, got {value}")
        if self.since is not None and self.until is not None and not self.since < self.until:
            raise OptionsError(
                f"--since {format_time(self.since)} is not before --until {format_time(self.until)}: the range is empty"
            )

    def label(self) -> str:
        """The range as options, for messages: ``--last 7d --until 2026-11-08T00:00:00Z``."""
        parts = []
        if self.since is not None:
            parts.append(f"--since {format_time(self.since)}")
        if self.until is not None:
            parts.append(f"--until {format_time(self.until)}")
        if self.last is not None:
            parts.append(f"--last {format_duration(self.last)}")
        return " ".join(parts) if parts else "(all readings)"


def apply(
    readings: Readings,
    time_range: TimeRange,
    *,
    parameter: int,
    stations: tuple[int, ...] = (),
) -> tuple[Readings, dict[str, Any] | None]:
    """Keep the selected readings inside ``time_range``.

    Returns the readings to train on and the ``data.time_range`` record of metadata.json
    (``None`` when no reading has the parameter or stations: the selection step then raises
    its own error). Raises :class:`DataError` naming the range and the data's time span when
    the range holds no reading (of some requested station).
    """
    time_range.check()
    selected = readings.parameter_id == parameter
    if stations:
        selected &= np.isin(readings.station_id, np.asarray(stations, dtype=np.int64))
    if not selected.any():
        return readings, None
    times = readings.reading_time
    data_first, data_last = float(times[selected].min()), float(times[selected].max())
    keep = selected.copy()
    if time_range.since is not None:
        keep &= times >= time_range.since
    if time_range.until is not None:
        keep &= times < time_range.until
    since = time_range.since
    if time_range.last is not None and keep.any():
        since = float(times[keep].max()) - time_range.last
        keep &= times >= since
    where = files_label(readings)
    span = f"{format_time(data_first)} .. {format_time(data_last)}"
    which = f"parameter_id {parameter}" + (f", station(s) {listing(stations)}" if stations else "")
    if not keep.any():
        raise DataError(
            f"{where}: no readings of {which} in the time range {time_range.label()}: the data spans {span}"
        )
    for station in stations:
        mine = readings.station_id == station
        if not (keep & mine).any():
            own = times[selected & mine]
            raise DataError(
                f"{where}: station {station} has no readings of parameter_id {parameter} in the time range "
                f"{time_range.label()}: its readings span {format_time(float(own.min()))} .. "
                f"{format_time(float(own.max()))}"
            )
    index = np.flatnonzero(keep)
    kept = Readings(
        station_id=readings.station_id[index],
        parameter_id=readings.parameter_id[index],
        reading_time=readings.reading_time[index],
        value=readings.value[index],
        files=readings.files,
    )
    used = kept.reading_time
    record: dict[str, Any] = {
        "since": None if since is None else format_time(since),
        "until": None if time_range.until is None else format_time(time_range.until),
        "last": None if time_range.last is None else format_duration(time_range.last),
        "first_reading": format_time(float(used.min())),
        "last_reading": format_time(float(used.max())),
        "data_first_reading": format_time(data_first),
        "data_last_reading": format_time(data_last),
        "readings_in_range": len(kept),
        "readings_outside": int(selected.sum()) - len(kept),
    }
    return kept, record
