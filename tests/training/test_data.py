"""CSV loading, duplicates, resampling, gaps, chronological split and windows (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_training.data import DataConfig, load_csvs, make_windows, prepare, resample, select
from ml_training.errors import DataError
from ml_training.normalization import Normalization

HEADER = "station_id,parameter_id,reading_time,value\n"


def _write(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_times_unix_negative_decimal_and_iso(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        HEADER
        + "1,122,-11.5,10\n"
        + "1,122,1700000000,11\n"
        + "1,122,2025-01-06T00:00:00Z,12\n"
        + "1,122,2025-01-06T01:00:00+01:00,13\n"
        + "1,122,2025-01-06 00:00:30,14\n",
    )
    readings = load_csvs([path])
    assert readings.reading_time.tolist() == [-11.5, 1700000000.0, 1736121600.0, 1736121600.0, 1736121630.0]
    assert readings.value.tolist() == [10, 11, 12, 13, 14]


def test_header_case_extra_columns_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "index, Station_ID ,PARAMETER_ID,reading_time,value,comment\n"
        "0,1,122,100,10,a\n"
        "\n"
        "1,1,122,200,11,b\n"
        "2,1,122,300,x,c\n",
    )
    with pytest.raises(DataError, match=r"line 5: column 'value': not a number: 'x'"):
        load_csvs([path])
    path.write_text(path.read_text().replace(",x,", ",12,"))
    readings = load_csvs([path])
    assert readings.value.tolist() == [10, 11, 12]
    assert readings.files[0].rows == 3


def test_duplicates_keep_the_last_in_input_order_across_files(tmp_path: Path) -> None:
    first = _write(tmp_path, HEADER + "1,122,300,30\n1,122,100,10\n1,122,200,20\n1,122,200,21\n", "a.csv")
    second = _write(tmp_path, HEADER + "1,122,100,11\n2,122,100,99\n", "b.csv")
    segments, stations, rows, dropped = select(load_csvs([first, second]), DataConfig())
    assert stations == (1, 2)
    assert dropped == 2
    assert rows == 4
    one = next(s for s in segments if s.station_id == 1)
    assert one.times.tolist() == [100, 200, 300]  # sorted by time
    assert one.values.tolist() == [11, 21, 30]  # last of equal (station, time) wins


def test_filters_by_parameter_and_station(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "1,122,1,10\n1,121,2,99\n2,122,3,20\n3,122,4,30\n")
    segments, stations, rows, _ = select(load_csvs([path]), DataConfig(stations=(3, 1)))
    assert stations == (1, 3)
    assert rows == 2
    assert sorted(float(v) for s in segments for v in s.values) == [10.0, 30.0]


def test_resample_carries_the_last_reading_forward() -> None:
    times = np.array([10.0, 650.0, 1190.0, 1201.0])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    grid, sampled = resample(times, values, 300)
    assert grid.tolist() == [300.0, 600.0, 900.0, 1200.0]
    assert sampled.tolist() == [1.0, 1.0, 2.0, 3.0]


def test_max_gap_splits_segments(tmp_path: Path) -> None:
    rows = "".join(f"1,122,{t},{t % 7}\n" for t in [0, 60, 120, 5000, 5060])
    path = _write(tmp_path, HEADER + rows)
    segments, *_ = select(load_csvs([path]), DataConfig(max_gap=600))
    assert [s.times.tolist() for s in segments] == [[0, 60, 120], [5000, 5060]]


def test_make_windows() -> None:
    x, y = make_windows(np.arange(10.0), 3)
    assert x.shape == (7, 3)
    assert x[0].tolist() == [0, 1, 2] and y[0] == 3
    assert x[-1].tolist() == [6, 7, 8] and y[-1] == 9
    x, y = make_windows(np.arange(3.0), 3)
    assert x.shape == (0, 3) and y.shape == (0,)


def test_windows_never_span_stations_and_split_is_chronological(tmp_path: Path) -> None:
    # Station 1 reads 0..99 (values < 1000), station 2 reads 1000.. : a window that mixed
    # stations would mix value ranges. Times overlap, as in real multi-station files.
    rows = [f"1,122,{60 * i},{i % 100}\n" for i in range(300)]
    rows += [f"2,122,{60 * i + 7},{1000 + i % 100}\n" for i in range(300)]
    path = _write(tmp_path, HEADER + "".join(reversed(rows)))
    dataset = prepare(load_csvs([path]), DataConfig(window=4))
    for name in ("train", "validation", "test"):
        split = dataset.split(name)
        assert len(split) > 0
        big = np.concatenate([split.x, split.y[:, None]], axis=1) >= 1000
        assert (big.all(axis=1) | (~big).all(axis=1)).all(), name
        assert ((split.station == 2) == big[:, 0]).all()
        # each window holds consecutive readings of its station (values step by 1 mod 100)
        steps = np.diff(np.concatenate([split.x, split.y[:, None]], axis=1) % 100, axis=1) % 100
        assert (steps == 1).all()
    assert dataset.train.target_time.max() < dataset.validation.target_time.min()
    assert dataset.validation.target_time.max() < dataset.test.target_time.min()
    assert dataset.spans["train"][1] < dataset.spans["validation"][0]
    # 70/15/15 of the samples (minus the window warm-up of each piece)
    assert len(dataset.train) == pytest.approx(0.70 * 600, abs=12)
    assert len(dataset.test) == pytest.approx(0.15 * 600, abs=12)


def test_normalization_methods() -> None:
    values = np.array([10.0, 12.0, 14.0, 20.0])
    tutorial = Normalization.fit("tutorial", values)
    assert tutorial.offset == 14.0 and tutorial.scale == 6.0
    np.testing.assert_allclose(tutorial.normalize(values), (values - 14.0) / 6.0)
    zscore = Normalization.fit("zscore", values)
    assert zscore.offset == 14.0 and zscore.scale == pytest.approx(values.std())
    for norm in (tutorial, zscore):
        np.testing.assert_allclose(norm.denormalize(norm.normalize(values)), values)
        assert norm.to_dict()["formula"] == "normalized = (raw - offset) / scale"
    with pytest.raises(DataError, match="constant"):
        Normalization.fit("zscore", np.full(10, 3.0))
