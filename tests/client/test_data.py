"""CSV reading rules, resampling and windowing (window -> actual next reading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client_app.data import DataError, load_windows, make_windows, read_series
from contract.bts import resample
from tests.client.conftest import OTHER_STATION, STATION, series_rows, write_csv


def test_unix_times_sorted_and_first_station_by_default(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        [(OTHER_STATION, 121, 5, 1), (STATION, 122, 30, 3), (STATION, 122, 10, 1), (OTHER_STATION, 122, 20, 9),
         (STATION, 122, 20, 2)],
    )
    series = read_series(path)  # first station with parameter 122 in file order
    assert series.station == STATION
    assert series.times.tolist() == [10, 20, 30]
    assert series.values.tolist() == [1, 2, 3]
    assert read_series(path, OTHER_STATION).values.tolist() == [9]


def test_negative_decimal_and_iso_times(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [(STATION, 122, "-86400", 1), (STATION, 122, "1970-01-01T00:00:01.5Z", 2),
         (STATION, 122, "1970-01-01 01:00:00+01:00", 3), (STATION, 122, "2.25", 4), (STATION, 122, "1970-01-01", 5)],
    )
    series = read_series(path, STATION)
    # "1970-01-01 01:00:00+01:00" is 0 s and "1970-01-01" (UTC) also 0 s: a duplicate, the later row wins
    assert series.times.tolist() == [-86400, 0, 1.5, 2.25]
    assert series.values.tolist() == [1, 5, 2, 4]
    assert series.duplicates_dropped == 1


def test_duplicates_keep_the_last_in_file_order(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "d.csv",
        [(STATION, 122, 100, 1), (STATION, 122, 50, 7), (STATION, 122, 100, 2), (STATION, 122, 100, 3)],
    )
    series = read_series(path, STATION)
    assert series.times.tolist() == [50, 100]
    assert series.values.tolist() == [7, 3]
    assert series.duplicates_dropped == 2


def test_header_case_spaces_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(
        " Station_ID , PARAMETER_ID,reading_time,value,comment\n"
        f"{STATION},122,1,10,x\n\n"
        f"{STATION},122,2, 11 ,y\n",
        encoding="utf-8",
    )
    assert read_series(path).values.tolist() == [10, 11]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"{STATION},122,1,10\n{STATION},122,2,abc\n", r"b.csv: line 3: column 'value': not a number: 'abc'"),
        (f"{STATION},122,1,10\n{STATION},122,2,\n", r"b.csv: line 3: column 'value': missing value"),
        (f"{STATION},122,1,inf\n", r"b.csv: line 2: column 'value': not a finite number: 'inf'"),
        (f"{STATION},122,yesterday,1\n", r"b.csv: line 2: column 'reading_time': not unix seconds or an ISO 8601"),
        (f"{STATION},122,1,1\nx1,122,2,1\n", r"b.csv: line 3: column 'station_id': not an integer: 'x1'"),
        (f"{STATION},122.5,1,1\n", r"b.csv: line 2: column 'parameter_id': not an integer: '122.5'"),
        (f"{STATION},122,1,a\n{STATION},122,2,b\n{STATION},122,3,c\n",
         r"line 2: column 'value': not a number: 'a' \(and 2 more rows\)"),
    ],
)
def test_bad_values_name_file_line_and_column(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "b.csv"
    path.write_text("station_id,parameter_id,reading_time,value\n" + body, encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        read_series(path, STATION)


def test_bad_rows_of_other_stations_are_errors_too(tmp_path: Path) -> None:
    # as in ml_training, which would not train on this file either: every row is checked
    path = write_csv(tmp_path / "o.csv", [(STATION, 122, 1, 5), (OTHER_STATION, 122, "never", "n/a")])
    with pytest.raises(DataError, match=r"o.csv: line 3: column 'reading_time': not unix seconds or an ISO 8601 time: "
                                        r"'never'"):
        read_series(path, STATION)
    path = write_csv(tmp_path / "p.csv", [(STATION, 122, 1, 5), (STATION, 121, 2, "n/a")])
    with pytest.raises(DataError, match=r"p.csv: line 3: column 'value': not a number: 'n/a'"):
        read_series(path, STATION)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", r"f.csv: file is empty"),
        ("station_id,parameter_id,value\n1,122,3\n", r"f.csv: missing column 'reading_time' \(header has: "),
        ("station_id,parameter_id,reading_time,value\n", r"f.csv: no data rows after the header"),
        (f"station_id,parameter_id,reading_time,value\n{STATION},121,1,1\n",
         r"f.csv: no readings with parameter_id 122 \(parameter ids present: 121\)"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "f.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        read_series(path)


def test_missing_file_and_unknown_station(tmp_path: Path, sample_csv: Path) -> None:
    with pytest.raises(DataError, match=r"nope.csv: no such file"):
        read_series(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=rf"station 42 not found with parameter_id 122 \(stations present: "
                                        rf"{STATION}, {OTHER_STATION}\)"):
        read_series(sample_csv, 42)


def test_windows_pair_each_window_with_the_next_reading() -> None:
    times = np.arange(10.0)
    values = np.arange(100.0, 110.0)
    windows = make_windows(times, values, 3, STATION)
    assert len(windows) == 7
    assert windows.x[0].tolist() == [100, 101, 102] and windows.y[0] == 103
    assert windows.x[-1].tolist() == [106, 107, 108] and windows.y[-1] == 109
    assert windows.target_times.tolist() == list(range(3, 10))
    assert len(make_windows(times[:3], values[:3], 3, STATION)) == 0


def test_resample_carries_the_last_reading_forward_on_an_epoch_grid() -> None:
    times = np.array([7.0, 12.0, 31.0])
    values = np.array([1.0, 2.0, 3.0])
    grid, sampled = resample(times, values, 10.0)
    assert grid.tolist() == [10, 20, 30]
    assert sampled.tolist() == [1, 2, 2]
    grid, sampled = resample(np.array([-25.0, -5.0]), np.array([4.0, 5.0]), 10.0)
    assert grid.tolist() == [-20, -10] and sampled.tolist() == [4, 4]
    grid, sampled = resample(np.array([10.0, 20.0]), np.array([1.0, 2.0]), 10.0)
    assert grid.tolist() == [10, 20] and sampled.tolist() == [1, 2]


@pytest.mark.parametrize("resample_s", [None, 300.0])
def test_series_is_what_the_trainer_selects(tmp_path: Path, resample_s: float | None) -> None:
    from ml_training.data import DataConfig, load_csvs, select

    rng = np.random.default_rng(1)
    rows = [(STATION if i % 3 else OTHER_STATION, 122 if i % 5 else 121, int(t), int(rng.integers(6, 26)))
            for i, t in enumerate(rng.uniform(0, 50_000, 600))]  # unsorted, with duplicate times
    rows += [(STATION, 122, rows[7][2], 99)]
    path = write_csv(tmp_path / "mixed.csv", rows)
    series = read_series(path, STATION, resample_s=resample_s)
    segments, *_ = select(load_csvs([path]), DataConfig(stations=(STATION,), resample=resample_s))
    assert len(segments) == 1 and series.duplicates_dropped >= 1
    np.testing.assert_array_equal(series.times, segments[0].times)
    np.testing.assert_array_equal(series.values, segments[0].values)
    windows = load_windows(path, station=STATION, parameter=122, window=6, resample_s=resample_s)
    np.testing.assert_array_equal(windows.y, segments[0].values[6:])


def test_load_windows_with_resampling(tmp_path: Path) -> None:
    rows = series_rows(200, start=1_000_000_010, step=30)  # 6000 s of readings every 30 s
    path = write_csv(tmp_path / "r.csv", rows)
    plain = load_windows(path, station=None, parameter=122, window=6, resample_s=None)
    assert len(plain) == 194
    assert plain.x[0].tolist() == [r[3] for r in rows[:6]] and plain.y[0] == rows[6][3]
    sampled = load_windows(path, station=None, parameter=122, window=6, resample_s=300)
    times = np.array([r[2] for r in rows], dtype=np.float64)
    values = np.array([r[3] for r in rows], dtype=np.float64)
    grid, expected = resample(times, values, 300)
    assert grid[0] == 1_000_000_200 and len(grid) == 20
    assert len(sampled) == 14
    assert sampled.x[0].tolist() == expected[:6].tolist() and sampled.y[0] == expected[6]
    assert sampled.target_times[0] == grid[6]


def test_too_few_samples_is_a_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "short.csv", series_rows(6))
    with pytest.raises(DataError, match=r"short.csv: station 1161114002 has 6 readings of parameter 122; "
                                        r"a window of 6 plus the next reading needs at least 7"):
        load_windows(path, station=None, parameter=122, window=6, resample_s=None)
    path = write_csv(tmp_path / "short2.csv", series_rows(50, step=30))
    with pytest.raises(DataError, match=r"has 5 samples every 300s"):
        load_windows(path, station=None, parameter=122, window=6, resample_s=300)
