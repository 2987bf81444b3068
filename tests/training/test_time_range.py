"""Training on recent readings: ``--since``, ``--until``, ``--last`` and ``--data <folder>``.

Everything here but the last two tests runs without TensorFlow: the range is applied (and
its errors raised) before anything is trained.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.bts import Readings, SourceFile
from contract.model_format import ModelMetadata, TrainingTimeRange
from ml_training import data as data_mod
from ml_training import time_range as tr
from ml_training.cli import build_parser, main, options_from_args
from ml_training.errors import DataError, OptionsError
from ml_training.options import Options
from ml_training.synth import SynthOptions, generate, write_csv
from ml_training.time_range import TimeRange, apply, parse_duration, parse_time

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
START = datetime(2025, 1, 6, tzinfo=UTC).timestamp()  # the first reading of the tiny data (synth default)


def iso(seconds: float) -> str:
    return tr.format_time(seconds)


@pytest.fixture(scope="module")
def tiny(tiny_csv: Path) -> Readings:
    return data_mod.load_csvs([tiny_csv])


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T00:00Z", "2026-11-01T00:00:00Z"),
        ("2026-11-01", "2026-11-01T00:00:00Z"),  # no offset: UTC
        ("2026-11-01T07:00+01:00", "2026-11-01T06:00:00Z"),
        ("1736121600", "2025-01-06T00:00:00Z"),  # Unix seconds
    ],
)
def test_times_are_iso_8601_utc_by_default_or_unix_seconds(text: str, expected: str) -> None:
    assert iso(parse_time(text)) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * DAY), ("36h", 36 * 3600), ("90m", 5400), ("1d12h", 1.5 * DAY), ("2w", 14 * DAY), ("3600", 3600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "d", "-3d", "0", "7d-", "nan"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_command_line_maps_the_range_onto_options() -> None:
    args = build_parser().parse_args(
        ["--data", "x.csv", "--model", "lstm", "--repository", "r", "--last=7d", "--until", "2025-01-09T12:00Z"]
    )
    options = options_from_args(args)
    options.check()
    assert options.last == 7 * DAY and options.since is None
    assert iso(options.until or 0) == "2025-01-09T12:00:00Z"
    recorded = options.to_dict()  # the `training` section of metadata.json
    assert (recorded["since"], recorded["until"], recorded["last"]) == (None, "2025-01-09T12:00:00Z", "7d")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--since", "2025-01-07", "--last", "1d"], "not allowed with argument"),
        (["--since", "yesterday"], "not a time: 'yesterday'"),
        (["--last", "a week"], "not a duration: 'a week'"),
    ],
)
def test_bad_range_options_exit_2_with_a_message(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--data", "x.csv", "--model", "ann", "--repository", "r", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_options_refuse_an_empty_or_contradictory_range(tmp_path: Path) -> None:
    base = Options(data=(tmp_path / "x.csv",), model="ann", repository=tmp_path)
    with pytest.raises(OptionsError, match="is not before --until"):
        replace(base, since=START + DAY, until=START).check()
    with pytest.raises(OptionsError, match="exclude each other"):
        replace(base, since=START, last=DAY).check()


# --------------------------------------------------------------------------- applying


def test_since_is_inclusive_and_until_exclusive(tiny: Readings) -> None:
    times = np.sort(tiny.reading_time[tiny.parameter_id == 122])
    lo, hi = float(times[100]), float(times[-100])
    kept, record = apply(tiny, TimeRange(since=lo, until=hi), parameter=122)
    assert kept.reading_time.min() == lo and kept.reading_time.max() < hi
    assert len(kept) == int(((times >= lo) & (times < hi)).sum())
    assert record is not None
    assert (record["since"], record["until"], record["last"]) == (iso(lo), iso(hi), None)
    assert record["first_reading"] == iso(lo)
    assert record["data_first_reading"] == iso(float(times[0]))
    assert record["data_last_reading"] == iso(float(times[-1]))
    assert record["readings_in_range"] + record["readings_outside"] == len(times)
    # Adjacent ranges never share a reading.
    after, _ = apply(tiny, TimeRange(since=hi), parameter=122)
    assert len(kept) + len(after) == int((times >= lo).sum())


def test_last_counts_back_from_the_newest_selected_reading_not_the_clock(tiny: Readings) -> None:
    kept, record = apply(tiny, TimeRange(last=DAY), parameter=122)
    newest = float(tiny.reading_time.max())
    assert kept.reading_time.max() == newest
    assert kept.reading_time.min() >= newest - DAY
    assert record is not None and record["since"] == iso(newest - DAY) and record["last"] == "1d"
    # With --until, the newest reading before it is the anchor.
    until = START + 2 * DAY
    kept, _ = apply(tiny, TimeRange(until=until, last=DAY / 2), parameter=122)
    anchor = float(tiny.reading_time[tiny.reading_time < until].max())
    assert kept.reading_time.max() == anchor and kept.reading_time.min() >= anchor - DAY / 2


def test_last_is_relative_to_the_selected_parameter_and_stations() -> None:
    """Readings of another parameter (or station) further on do not move the anchor."""
    readings = Readings(
        station_id=np.array([1, 1, 1, 2, 1], dtype=np.int64),
        parameter_id=np.array([122, 122, 122, 122, 7], dtype=np.int64),
        reading_time=np.array([0.0, 100.0, 200.0, 5000.0, 9000.0]),
        value=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        files=(SourceFile("mem.csv", "0" * 64, 5),),
    )
    kept, record = apply(readings, TimeRange(last=150), parameter=122, stations=(1,))
    assert kept.reading_time.tolist() == [100.0, 200.0]
    assert kept.station_id.tolist() == [1, 1] and kept.parameter_id.tolist() == [122, 122]
    assert record is not None and record["data_last_reading"] == iso(200)


def test_an_empty_range_names_the_range_and_the_data_span(tiny: Readings) -> None:
    times = tiny.reading_time
    span = f"{iso(float(times.min()))} .. {iso(float(times.max()))}"
    with pytest.raises(DataError) as error:
        apply(tiny, TimeRange(since=parse_time("2026-11-01T00:00Z")), parameter=122)
    message = str(error.value)
    assert "no readings of parameter_id 122 in the time range --since 2026-11-01T00:00:00Z" in message
    assert f"the data spans {span}" in message
    assert "tiny.csv" in message


def test_a_requested_station_without_readings_in_the_range_is_named(tiny: Readings) -> None:
    first, second = sorted({int(s) for s in tiny.station_id})
    own = tiny.reading_time[tiny.station_id == second]
    # Drop the second station's readings after the first day, then ask for day three.
    cut = (tiny.station_id != second) | (tiny.reading_time < START + DAY)
    readings = Readings(
        station_id=tiny.station_id[cut],
        parameter_id=tiny.parameter_id[cut],
        reading_time=tiny.reading_time[cut],
        value=tiny.value[cut],
        files=tiny.files,
    )
    with pytest.raises(DataError, match=rf"station {second} has no readings of parameter_id 122 in the time range"):
        apply(readings, TimeRange(since=START + 2 * DAY), parameter=122, stations=(first, second))
    assert own.size  # the station exists in the unfiltered data


def test_without_a_range_everything_is_kept_and_still_recorded(tiny: Readings) -> None:
    kept, record = apply(tiny, TimeRange(), parameter=122)
    assert kept.reading_time.tolist() == tiny.reading_time.tolist()
    assert record is not None and record["since"] is None and record["until"] is None and record["last"] is None
    assert record["readings_outside"] == 0


def test_training_after_a_level_shift_sees_only_the_new_level(tmp_path: Path) -> None:
    """A series whose level rises by 10 on day 3: the split, the windows and the fitted
    normalisation of a --since run come from the new regime only."""
    rows = generate(SynthOptions(stations=2, days=6, seed=11))
    shift = START + 3 * DAY
    shifted = [(s, p, t, v + 10 if t >= shift else v) for s, p, t, v in rows]
    path = tmp_path / "shift.csv"
    write_csv(shifted, path)
    readings = data_mod.load_csvs([path])
    config = data_mod.DataConfig(resample=300.0)
    before = data_mod.prepare(readings, config)
    kept, _ = apply(readings, TimeRange(since=shift), parameter=122)
    after = data_mod.prepare(kept, config)
    assert after.spans["train"][0] >= shift
    assert min(after.train.target_time) >= shift
    assert after.train_values.mean() > before.train_values.mean() + 7
    old_level = readings.value[readings.reading_time < shift].mean()
    assert after.train_values.min() > old_level  # nothing of the old regime


# --------------------------------------------------------------------------- command line


def test_an_empty_range_exits_2_and_writes_nothing(
    tiny_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    code = main(
        ["--data", str(tiny_csv), "--model", "ann", "--repository", str(repository), "--since", "2026-11-01T00:00Z"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "in the time range --since 2026-11-01T00:00:00Z: the data spans 2025-01-06T" in err
    assert not repository.exists()


def test_a_range_too_short_to_train_says_so_with_the_range(
    tiny_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["--data", str(tiny_csv), "--model", "ann", "--repository", str(tmp_path), "--last", "20m", "--resample", "300"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "not enough data" in err and "(time range --last 20m:" in err and "the data spans" in err


def test_data_may_be_a_folder_of_csv_files_read_in_name_order(tiny_csv: Path, tmp_path: Path) -> None:
    folder = tmp_path / "readings"
    folder.mkdir()
    text = tiny_csv.read_text(encoding="utf-8").splitlines()
    header, body = text[0], text[1:]
    half = len(body) // 2
    (folder / "b-later.csv").write_text("\n".join([header, *body[half:]]) + "\n", encoding="utf-8")
    (folder / "a-earlier.csv").write_text("\n".join([header, *body[:half]]) + "\n", encoding="utf-8")
    (folder / ".tmp-half-copied.csv").write_text("garbage", encoding="utf-8")
    (folder / "notes.txt").write_text("not data", encoding="utf-8")
    assert [p.name for p in data_mod.csv_files([folder])] == ["a-earlier.csv", "b-later.csv"]
    whole = data_mod.load_csvs([tiny_csv])
    split = data_mod.load_csvs([folder])
    assert split.reading_time.tolist() == whole.reading_time.tolist()
    assert [Path(f.path).name for f in split.files] == ["a-earlier.csv", "b-later.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"folder holds no \*\.csv file"):
        data_mod.load_csvs([empty])


# --------------------------------------------------------------------------- metadata


def test_metadata_written_before_the_time_range_still_validates() -> None:
    for path in sorted((REPO_ROOT / "models").glob("*/*/metadata.json")):
        metadata = ModelMetadata.model_validate(json.loads(path.read_text(encoding="utf-8")))
        assert metadata.data is not None and metadata.data.time_range is None, path
    imported = {"name": "x", "window_length": 6, "normalization": {"offset": 0, "scale": 1, "method": "identity"}}
    assert ModelMetadata.model_validate(imported).data is None


def test_a_trained_version_records_its_time_range(
    make_options: Callable[..., Options], tmp_path: Path, tiny: Readings
) -> None:
    pytest.importorskip("tensorflow")
    from ml_training.train import run

    newest = float(tiny.reading_time.max())
    result = run(make_options(tmp_path / "models", model="ann", last=2.5 * DAY))
    written: dict[str, Any] = json.loads((result.version_dir / "metadata.json").read_text(encoding="utf-8"))
    record = written["data"]["time_range"]
    assert record["last"] == "60h" and record["until"] is None
    assert record["since"] == iso(newest - 2.5 * DAY)
    assert record["last_reading"] == iso(newest)
    assert written["training"]["last"] == "60h"
    assert result.dataset.spans["train"][0] >= newest - 2.5 * DAY
    parsed = ModelMetadata.model_validate(written).data
    assert parsed is not None and isinstance(parsed.time_range, TrainingTimeRange)
    assert parsed.time_range.since == datetime.fromtimestamp(newest - 2.5 * DAY, UTC)
    assert parsed.time_range.data_first_reading == datetime.fromtimestamp(float(tiny.reading_time.min()), UTC)
