"""Bad input: a clear message naming the file, line and column, exit code 2, no traceback,
and the model repository left exactly as it was (no new version, no temp folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ml_training.cli import main
from ml_training.errors import EXIT_USAGE
from tests.training.conftest import snapshot_of

HEADER = "station_id,parameter_id,reading_time,value\n"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A repository that already holds one version, so "unchanged" means something."""
    repo = tmp_path / "models"
    (repo / "lstm" / "1").mkdir(parents=True)
    (repo / "lstm" / "1" / "metadata.json").write_text("{}")
    return repo


def _rows(count: int, station: int = 1161114002, start: int = 1_700_000_000) -> str:
    return "".join(f"{station},122,{start + 60 * i},{10 + i % 7}\n" for i in range(count))


def _write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _fail(
    capsys: pytest.CaptureFixture[str], repository: Path, data: list[Path] | Path, *extra: str, model: str = "lstm"
) -> str:
    before = snapshot_of(repository)
    paths = data if isinstance(data, list) else [data]
    code = main(["--data", *map(str, paths), "--model", model, "--repository", str(repository), *extra])
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert snapshot_of(repository) == before
    return captured.err


def test_missing_column(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "station_id,parameter_id,reading_time\n1161114002,122,1700000000\n")
    err = _fail(capsys, repository, path)
    assert f"{path}: missing column 'value'" in err
    assert "required: station_id, parameter_id, reading_time, value" in err


def test_not_a_number(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(3) + "1161114002,122,1700009999,abc\n" + _rows(40, start=1_700_010_000))
    err = _fail(capsys, repository, path)
    # Header = line 1, three good rows = lines 2-4, the bad one is line 5.
    assert f"{path}: line 5: column 'value': not a number: 'abc'" in err


def test_nan_value(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(2) + "1161114002,122,1700009999,NaN\n" + _rows(40, start=1_700_010_000))
    err = _fail(capsys, repository, path)
    assert f"{path}: line 4: column 'value': not a finite number: 'NaN'" in err


def test_missing_value_and_count_of_more(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(2) + "1161114002,122,1700009999,\n1161114002,122,1700019999,x\n")
    err = _fail(capsys, repository, path)
    assert f"{path}: line 4: column 'value': missing value (and 1 more row)" in err


def test_bad_reading_time(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(2) + "1161114002,122,yesterday,12\n")
    err = _fail(capsys, repository, path)
    assert f"{path}: line 4: column 'reading_time': not unix seconds or an ISO 8601 time: 'yesterday'" in err


def test_non_integer_station(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + "11611.5,122,1700000000,12\n")
    err = _fail(capsys, repository, path)
    assert f"{path}: line 2: column 'station_id': not an integer: '11611.5'" in err


def test_too_few_rows(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(12))
    err = _fail(capsys, repository, path)
    assert f"{path}: not enough data" in err
    assert "--window 6" in err


def test_too_few_rows_for_the_test_span(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 40 readings: 28 train, 6 validation, 6 test; 6 test readings cannot make a window of 6 + 1.
    path = _write(tmp_path, HEADER + _rows(40))
    err = _fail(capsys, repository, path)
    assert f"{path}: not enough data: the validation span has no complete window" in err


def test_unknown_station(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(100) + _rows(100, station=1161114004))
    err = _fail(capsys, repository, path, "--station", "42")
    assert f"{path}: station 42 not found with parameter_id 122" in err
    assert "stations present: 1161114002, 1161114004" in err


def test_unknown_parameter(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(100))
    err = _fail(capsys, repository, path, "--parameter", "7")
    assert f"{path}: no readings with parameter_id 7 (parameter ids present: 122)" in err


def test_nonexistent_file(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, HEADER + _rows(100), name="good.csv")
    missing = tmp_path / "missing.csv"
    err = _fail(capsys, repository, [good, missing])
    assert f"{missing}: no such file" in err


def test_empty_file_and_directory(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = _write(tmp_path, "")
    assert f"{empty}: file is empty" in _fail(capsys, repository, empty)
    header_only = _write(tmp_path, HEADER, name="header.csv")
    assert f"{header_only}: no data rows after the header" in _fail(capsys, repository, header_only)
    # A folder stands for its *.csv files (tests/training/test_time_range.py); none is an error.
    folder = tmp_path / "no-csv-here"
    folder.mkdir()
    assert f"{folder}: folder holds no *.csv file" in _fail(capsys, repository, folder)


def test_ragged_csv(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(3) + "1,2,3,4,5,6\n")
    err = _fail(capsys, repository, path)
    assert f"{path}: not a valid CSV file" in err


def test_constant_training_data(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f"1161114002,122,{1_700_000_000 + 60 * i},{12 if i < 70 else 10 + i % 5}\n" for i in range(100))
    err = _fail(capsys, repository, _write(tmp_path, HEADER + rows))
    assert "the training span is constant (every value is 12)" in err


def test_bad_model_name(tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(100))
    err = _fail(capsys, repository, path, "--name", "Bad/Name")
    assert "model name 'Bad/Name' is not allowed" in err


def test_repository_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, HEADER + _rows(100))
    not_a_folder = _write(tmp_path, "x", name="models")
    err = _fail(capsys, not_a_folder, path)
    assert f"{not_a_folder}: exists and is not a folder" in err
    assert not_a_folder.read_text() == "x"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--window", "0", "must be at least 1"),
        ("--epochs", "x", "not an integer"),
        ("--resample", "-5", "must be a positive number"),
        ("--test-fraction", "0.7", "must be below 0.5"),
        ("--normalization", "minmax", "invalid choice"),
    ],
)
def test_bad_option_values(
    tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    path = _write(tmp_path, HEADER + _rows(100))
    before = snapshot_of(repository)
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(path), "--model", "ann", "--repository", str(repository), option, value])
    assert exit_info.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert snapshot_of(repository) == before


def test_repository_not_created_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = tmp_path / "fresh-repo"
    _fail(capsys, fresh, tmp_path / "missing.csv")
    assert not fresh.exists()


def test_bad_input_in_a_real_process(tmp_path: Path, repository: Path) -> None:
    path = _write(tmp_path, HEADER + _rows(3) + "1161114002,122,1700009999,abc\n")
    before = snapshot_of(repository)
    proc = subprocess.run(
        [sys.executable, "-m", "ml_training", "--data", str(path), "--model", "lstm", "--repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_USAGE
    assert proc.stdout == ""
    assert proc.stderr == f"python -m ml_training: error: {path}: line 5: column 'value': not a number: 'abc'\n"
    assert snapshot_of(repository) == before
