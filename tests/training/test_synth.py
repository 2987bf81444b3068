"""The sample data generator: deterministic, BTS schema, BTS character; the shipped CSV is its output."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

from ml_training.synth import SynthOptions, generate, write_csv

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "bts_sample.csv"


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    options = SynthOptions(stations=2, days=2, seed=5)
    assert generate(options) == generate(options)
    assert generate(options) != generate(SynthOptions(stations=2, days=2, seed=6))


def test_bts_character() -> None:
    rows = np.array(generate(SynthOptions(stations=3, days=14, seed=1)))
    station, parameter, times, values = rows.T
    assert len(np.unique(station)) == 3
    assert 1161114002 in station
    assert (parameter == 122).all()
    assert values.min() >= 6 and values.max() <= 25
    assert (np.diff(times) >= 0).all()  # sorted by time, stations interleaved
    one = np.sort(times[station == 1161114002])
    gaps = np.diff(one)
    assert (gaps == 1).mean() > 0.2  # bursts of readings one second apart
    assert np.median(gaps) < 120  # frequent changes ...
    assert gaps.max() > 3600  # ... and outages of hours
    # a daily cycle: the hourly means differ by several units
    hours = (one % 86400) // 3600
    by_hour = [
        values[station == 1161114002][np.argsort(times[station == 1161114002], kind="stable")][hours == h].mean()
        for h in range(24)
    ]
    assert max(by_hour) - min(by_hour) > 4


def test_cli_writes_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "x.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "ml_training.synth", "--out", str(out), "--stations", "2", "--days", "1", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert out.read_text().splitlines()[0] == "station_id,parameter_id,reading_time,value"
    assert f"{out}:" in proc.stdout and "2 stations" in proc.stdout


def test_shipped_sample_is_the_generator_default(tmp_path: Path) -> None:
    out = tmp_path / "bts_sample.csv"
    write_csv(generate(SynthOptions()), out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert SHIPPED.stat().st_size < 3_000_000
