"""Atomic publication of a version: numbering, a concurrent trainer, failures leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_training.errors import ExportError
from ml_training.export import next_version, publish, versions
from tests.training.conftest import snapshot_of


def _fill(directory: Path) -> None:
    (directory / "model.tflite").write_bytes(b"model")


def _finalize(directory: Path, version: int) -> None:
    (directory / "metadata.json").write_text(json.dumps({"version": version}))


def test_versions_are_positive_integer_folders(tmp_path: Path) -> None:
    for name in ("1", "3", "0", "abc", ".tmp-1234", "12x"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert versions(tmp_path) == [1, 3]
    assert next_version(tmp_path) == 4
    assert next_version(tmp_path / "missing") == 1


def test_publish_first_and_next(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    first, version = publish(repository, "lstm", _fill, _finalize)
    assert (first, version) == (repository / "lstm" / "1", 1)
    second, version = publish(repository, "lstm", _fill, _finalize)
    assert (second, version) == (repository / "lstm" / "2", 2)
    assert json.loads((second / "metadata.json").read_text()) == {"version": 2}
    assert snapshot_of(repository / "lstm") == {
        "1",
        "1/model.tflite",
        "1/metadata.json",
        "2",
        "2/model.tflite",
        "2/metadata.json",
    }


def test_concurrent_trainer_takes_the_number(tmp_path: Path) -> None:
    """Another trainer renames its version into place between our numbering and our rename."""
    repository = tmp_path / "models"
    calls: list[int] = []

    def racing_finalize(directory: Path, version: int) -> None:
        calls.append(version)
        if len(calls) == 1:
            other = directory.parent / str(version)
            other.mkdir()
            (other / "metadata.json").write_text('{"other": true}')
        _finalize(directory, version)

    path, version = publish(repository, "ann", _fill, racing_finalize)
    assert calls == [1, 2]
    assert version == 2
    assert json.loads((path / "metadata.json").read_text()) == {"version": 2}
    assert json.loads((repository / "ann" / "1" / "metadata.json").read_text()) == {"other": True}
    assert sorted(p.name for p in (repository / "ann").iterdir()) == ["1", "2"]


def test_failure_leaves_no_partial_version(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    publish(repository, "lstm", _fill, _finalize)
    before = snapshot_of(repository)

    def broken_fill(directory: Path) -> None:
        (directory / "model.keras").write_bytes(b"half a model")
        raise ExportError("conversion failed")

    with pytest.raises(ExportError, match="conversion failed"):
        publish(repository, "lstm", broken_fill, _finalize)
    assert snapshot_of(repository) == before

    def crashing_finalize(directory: Path, version: int) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        publish(repository, "lstm", _fill, crashing_finalize)
    assert snapshot_of(repository) == before


def test_failure_in_a_new_repository_removes_the_folders_it_made(tmp_path: Path) -> None:
    repository = tmp_path / "new" / "models"

    def broken_fill(directory: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match="No space left on device"):
        publish(repository, "lstm", broken_fill, _finalize)
    assert not (tmp_path / "new").exists()


def test_export_failure_after_training_leaves_the_repository_unchanged(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml_training import export
    from ml_training.cli import main

    repository = tmp_path / "models"
    (repository / "ann" / "1").mkdir(parents=True)
    before = snapshot_of(repository)

    def failing_save(model: object, directory: Path, window: int, **kwargs: object) -> None:
        (directory / "model.keras").write_bytes(b"half written")
        raise ExportError("TFLite conversion failed: simulated")

    monkeypatch.setattr(export, "save_model_files", failing_save)
    args = ["--data", str(tiny_csv), "--model", "ann", "--repository", str(repository), "--resample", "300"]
    code = main([*args, "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: TFLite conversion failed: simulated" in err
    assert "Traceback" not in err
    assert snapshot_of(repository) == before
