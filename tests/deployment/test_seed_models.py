"""The init container's seeding script (deployment/base/inference/seed_models.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from tests.deployment.manifests import BASE


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_models", BASE / "inference" / "seed_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_version(root: Path, model: str, version: str, marker: str = "shipped") -> Path:
    folder = root / model / version
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(b"tflite")
    (folder / "metadata.json").write_text(json.dumps({"marker": marker}))
    return folder


def test_seeds_every_shipped_version_of_a_model_missing_from_the_volume(tmp_path: Path) -> None:
    seed = load_script().seed
    shipped, volume = tmp_path / "image", tmp_path / "volume"
    make_version(shipped, "lstm", "1")
    make_version(shipped, "lstm", "2")
    make_version(shipped, "ann", "1")
    (shipped / "lstm" / ".tmp-3").mkdir()  # unfinished: never copied
    assert sorted(seed(shipped, volume)) == ["ann/1", "lstm/1", "lstm/2"]
    assert sorted(p.name for p in (volume / "lstm").iterdir()) == ["1", "2"]
    assert (volume / "ann" / "1" / "model.tflite").read_bytes() == b"tflite"


def test_leaves_a_model_with_versions_on_the_volume_alone(tmp_path: Path) -> None:
    seed = load_script().seed
    shipped, volume = tmp_path / "image", tmp_path / "volume"
    make_version(shipped, "lstm", "1")
    make_version(volume, "lstm", "4", marker="operator")
    assert seed(shipped, volume) == []
    assert sorted(p.name for p in (volume / "lstm").iterdir()) == ["4"]
    # A second start changes nothing either.
    assert seed(shipped, volume) == []


def test_an_incomplete_folder_on_the_volume_does_not_count_as_a_version(tmp_path: Path) -> None:
    seed = load_script().seed
    shipped, volume = tmp_path / "image", tmp_path / "volume"
    make_version(shipped, "lstm", "1")
    (volume / "lstm" / ".tmp-2").mkdir(parents=True)
    (volume / "lstm" / "5").mkdir()  # no metadata.json: not complete
    assert seed(shipped, volume) == ["lstm/1"]


def test_losing_a_race_with_another_pod_leaves_no_temporary_folder(tmp_path: Path) -> None:
    seed = load_script().seed
    shipped, volume = tmp_path / "image", tmp_path / "volume"
    make_version(shipped, "lstm", "1")
    # Another pod renamed its copy in between our check and our rename: simulate by a
    # non-empty target that has no metadata.json yet from our point of view.
    (volume / "lstm" / "1").mkdir(parents=True)
    (volume / "lstm" / "1" / "model.tflite").write_bytes(b"other")
    assert seed(shipped, volume) == []
    assert sorted(p.name for p in (volume / "lstm").iterdir()) == ["1"]
    assert (volume / "lstm" / "1" / "model.tflite").read_bytes() == b"other"


def test_no_shipped_models_is_not_an_error(tmp_path: Path) -> None:
    module = load_script()
    assert module.seed(tmp_path / "missing", tmp_path / "volume") == []
    assert module.main([str(tmp_path / "missing"), str(tmp_path / "volume")]) == 0
    assert module.main([]) == 2
