"""BTS exports with Unix time in s, ms, us or ns: detected per file, or given; else a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.bts import DataError, load_csvs
from ml_training.cli import main

BASE = 1736121600  # 2025-01-06T00:00:00Z
UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _csv(path: Path, multiplier: int, rows: int = 5) -> Path:
    lines = "".join(f"1,122,{(BASE + i * 60) * multiplier},{10 + i}\n" for i in range(rows))
    path.write_text("station_id,parameter_id,reading_time,value\n" + lines)
    return path


@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_detected(tmp_path: Path, unit: str) -> None:
    readings = load_csvs([_csv(tmp_path / f"{unit}.csv", UNITS[unit])])
    np.testing.assert_allclose(readings.reading_time, BASE + 60 * np.arange(5), rtol=0, atol=1e-3)


@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_given(tmp_path: Path, unit: str) -> None:
    readings = load_csvs([_csv(tmp_path / f"{unit}.csv", UNITS[unit])], time_unit=unit)
    assert readings.reading_time[0] == pytest.approx(BASE)


def test_wrong_unit_names_column_and_unit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 2: column 'reading_time': out of range for Unix time in s "):
        load_csvs([_csv(tmp_path / "ns.csv", UNITS["ns"])], time_unit="s")
    with pytest.raises(DataError, match=r"Unix time in s, ms, us or ns \(or an ISO 8601 time\)"):
        load_csvs([_csv(tmp_path / "far.csv", UNITS["ns"] * 1000)])


def test_trainer_reads_nanoseconds_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: an OSError traceback from datetime on nanoseconds. Now read; too little data is the only complaint."""
    data = _csv(tmp_path / "ns.csv", UNITS["ns"])
    code = main(["--data", str(data), "--model", "ann", "--repository", str(tmp_path / "repo")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "not enough data" in err
    code = main(["--data", str(data), "--model", "ann", "--repository", str(tmp_path / "repo"), "--time-unit", "s"])
    assert code == 2 and "out of range for Unix time in s" in capsys.readouterr().err
