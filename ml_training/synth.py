"""Deterministic sample data in the BTS schema (``python -m ml_training.synth``).

The real BTS "Load of Power Grid" series (parameter_id 122) may only be used inside the
course it came from, so we ship generated data with the same character instead:

* several stations, ids like ``1161114002``;
* a daily cycle (low at night, high in the afternoon; weekends a little lower), a slow
  wandering component (hours) and fast noise (a couple of minutes);
* integer readings in about 6..25, **report-on-change**: a station reports a reading only
  when its rounded value changes, at irregular times; about a quarter of the changes come
  with a short flicker burst (readings one second apart);
* occasional outages of one to six hours with no readings at all.

The signal is simulated on a 30 s grid; the fast noise decorrelates within a few minutes,
so at a 300 s resampling interval the series is a predictable daily shape plus mostly
unpredictable noise, and a model that learns the shape and averages the noise beats the
persistence forecast ("next = last"). Output is sorted by time (stations interleaved),
header ``station_id,parameter_id,reading_time,value``, ``reading_time`` in unix seconds.

The same arguments always produce byte-identical output.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

PARAMETER_LOAD = 122
"""BTS parameter id of "Load of Power Grid"."""

DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
"""A Monday, so weekly effects line up with the calendar."""

STEP_S = 30
"""Simulation grid in seconds."""

_KNOWN_IDS = (
    1161114002,
    1161114004,
    1161114005,
    1161115001,
    1161115003,
    1161116002,
    1161116006,
    1161117001,
)


@dataclass(frozen=True)
class SynthOptions:
    """What to generate."""

    stations: int = 4
    days: float = 21.0
    seed: int = 0
    start: datetime = DEFAULT_START
    parameter_id: int = PARAMETER_LOAD


def station_ids(count: int) -> list[int]:
    """Station ids like the BTS ones: a fixed list, then continued by a simple rule."""
    ids = list(_KNOWN_IDS[:count])
    next_id = 1161118001
    while len(ids) < count:
        ids.append(next_id)
        next_id += 1
    return ids


def _ou(rng: np.random.Generator, n: int, tau_s: float, sd: float) -> np.ndarray:
    """An Ornstein-Uhlenbeck process on the simulation grid (stationary, mean 0)."""
    phi = float(np.exp(-STEP_S / tau_s))
    shocks = rng.normal(0.0, sd * np.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    x = rng.normal(0.0, sd)
    for i in range(n):  # a plain loop is fast enough for ~10^6 steps
        x = phi * x + shocks[i]
        out[i] = x
    return out


def _station_readings(
    rng: np.random.Generator, station: int, t0: int, n: int, days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Report-on-change readings (times, values) of one station."""
    t = t0 + STEP_S * np.arange(n, dtype=np.int64)
    hours = ((t % 86400) / 3600.0).astype(float)
    weekday = ((t // 86400) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weekend = weekday >= 5

    base = rng.uniform(12.0, 16.0)
    amplitude = rng.uniform(3.0, 5.0) * np.where(weekend, 0.8, 1.0)
    peak_hour = rng.uniform(13.0, 17.0)
    phase = 2.0 * np.pi * (hours - peak_hour) / 24.0
    daily = np.cos(phase) + 0.3 * np.cos(2.0 * phase)
    slow = _ou(rng, n, tau_s=3 * 3600.0, sd=1.0)
    fast = _ou(rng, n, tau_s=90.0, sd=0.9)
    signal = base + amplitude * daily + slow + fast

    # Report-on-change with a deadband: a new reading when the signal moved at least 1.0
    # away from the last reported value; the reported value is the rounded signal.
    times: list[int] = []
    values: list[int] = []
    last = int(np.clip(round(signal[0]), 6, 25))
    times.append(int(t[0]))
    values.append(last)
    jitter = rng.integers(0, STEP_S - 3, n)
    burst = rng.random(n) < 0.25
    for i in range(1, n):
        if abs(signal[i] - last) < 1.0:
            continue
        value = int(np.clip(round(signal[i]), 6, 25))
        if value == last:
            continue
        when = int(t[i] + jitter[i])
        if burst[i]:  # flicker: new, old, new, one second apart
            times.extend((when, when + 1, when + 2))
            values.extend((value, last, value))
        else:
            times.append(when)
            values.append(value)
        last = value
    times_a = np.asarray(times, dtype=np.int64)
    values_a = np.asarray(values, dtype=np.int64)

    # Outages: about one per week, one to six hours without any reading.
    keep = np.ones(times_a.shape, dtype=bool)
    for _ in range(max(1, round(days / 7.0))):
        start = t0 + rng.uniform(0.05, 0.95) * days * 86400.0
        length = rng.uniform(1.0, 6.0) * 3600.0
        keep &= ~((times_a >= start) & (times_a < start + length))
    del station
    return times_a[keep], values_a[keep]


def generate(options: SynthOptions) -> list[tuple[int, int, int, int]]:
    """Rows ``(station_id, parameter_id, reading_time, value)`` sorted by time, station."""
    if options.stations < 1:
        raise ValueError("stations must be at least 1")
    if options.days <= 0:
        raise ValueError("days must be positive")
    rng = np.random.default_rng(options.seed)
    t0 = int(options.start.timestamp())
    n = int(options.days * 86400 // STEP_S)
    rows: list[tuple[int, int, int, int]] = []
    for station in station_ids(options.stations):
        times, values = _station_readings(rng, station, t0, n, options.days)
        rows.extend((station, options.parameter_id, int(tt), int(v)) for tt, v in zip(times, values, strict=True))
    rows.sort(key=lambda r: (r[2], r[0]))
    return rows


def write_csv(rows: Sequence[tuple[int, int, int, int]], out: Path) -> None:
    """Write rows with the BTS header (atomically: a temp file renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("station_id", "parameter_id", "reading_time", "value"))
        writer.writerows(rows)
    tmp.replace(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml_training.synth",
        description=(
            "Generate deterministic sample data in the BTS schema "
            "(station_id, parameter_id, reading_time, value) with the character of the "
            "BTS 'Load of Power Grid' series: daily cycle, noise, integer report-on-change "
            "readings at irregular times, outages."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--stations", type=int, default=4, help="number of stations (default: 4)")
    parser.add_argument("--days", type=float, default=21.0, help="days of data per station (default: 21)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file (default: 0)")
    parser.add_argument(
        "--start",
        type=_parse_start,
        default=DEFAULT_START,
        help="first reading time, ISO 8601, UTC if no offset (default: 2025-01-06T00:00Z)",
    )
    parser.add_argument(
        "--parameter",
        type=int,
        default=PARAMETER_LOAD,
        help=f"parameter_id written on every row (default: {PARAMETER_LOAD})",
    )
    return parser


def _parse_start(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stations < 1:
        parser.error("--stations must be at least 1")
    if args.days <= 0:
        parser.error("--days must be positive")
    options = SynthOptions(
        stations=args.stations,
        days=args.days,
        seed=args.seed,
        start=args.start,
        parameter_id=args.parameter,
    )
    rows = generate(options)
    try:
        write_csv(rows, args.out)
    except OSError as exc:
        print(f"error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(rows)} readings, {options.stations} stations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
