"""`python -m ml_training import`: models we did not train, served as their metadata says.

Each served value equals a direct LiteRT invoke of the same file on the window in the order
the model declares (normalised units, 1e-6).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.model_format import ModelMetadata, Normalization
from ml_training.cli import main
from server_app.errors import ModelLoadError
from server_app.runtime import load_model_version
from tests.support.byo_models import build_models, direct_invoke
from tests.support.configs import SHIPPED_MODELS
from tests.support.payloads import windows_from_sample

TUTORIAL = ["--normalization", "tutorial", "--offset", "15", "--scale", "10"]
IMPORTS: dict[str, list[str]] = {
    "lstm_batch1": TUTORIAL,
    "newest_first": [*TUTORIAL, "--input-order", "newest_first"],
    "sequence": [*TUTORIAL, "--forecast-output", "0"],
    "ann_any_length": ["--normalization", "identity", "--window", "6", "--forecast-output", "-1"],
}


@pytest.fixture(scope="session")
def byo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp() / "byo-models")


def _import(byo: dict[str, Path], repository: Path, model: str, *extra: str, name: str | None = None) -> Path:
    code = main(["import", str(byo[model]), "--name", name or model.replace("_", "-"),
                 "--repository", str(repository), *extra])
    assert code == 0
    versions = sorted((repository / (name or model.replace("_", "-"))).iterdir())
    return versions[-1]


def _expected(path: Path, meta: ModelMetadata, raw: np.ndarray) -> np.ndarray:
    """Normalised forecasts by hand: normalise, order as declared, invoke, take the declared elements."""
    windows = meta.normalization.normalize(raw.astype(np.float32))
    if meta.input_order == "newest_first":
        windows = windows[:, ::-1]
    out = direct_invoke(path, windows)
    stop = meta.forecast.stop(out.shape[1])
    return out[:, stop - meta.forecast.horizon : stop]


@pytest.mark.parametrize("model", list(IMPORTS))
def test_imported_model_is_served_as_the_file_answers(byo: dict[str, Path], tmp_path: Path, model: str) -> None:
    version_dir = _import(byo, tmp_path, model, *IMPORTS[model])
    raw = json.loads((version_dir / "metadata.json").read_text())
    meta = ModelMetadata.model_validate(raw)
    assert sorted(p.name for p in version_dir.iterdir()) == ["metadata.json", "model.tflite"]
    assert (version_dir / "model.tflite").read_bytes() == byo[model].read_bytes()
    loaded = load_model_version(version_dir)  # warm-up included: fixed-batch models are not refused
    windows = windows_from_sample(37, seed=3)  # more than one invoke's worth for every model
    want = _expected(byo[model], meta, windows)
    got = loaded.predict_normalized(meta.normalization.normalize(windows))
    assert got.shape == (37, 1)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(loaded.predict(windows), meta.normalization.denormalize(want)[:, 0], atol=1e-4)


def test_what_the_import_infers(byo: dict[str, Path], tmp_path: Path) -> None:
    metas = {m: json.loads((_import(byo, tmp_path, m, *IMPORTS[m]) / "metadata.json").read_text()) for m in IMPORTS}
    assert metas["lstm_batch1"]["batch_sizes"] == [1]
    assert "WHILE" in metas["lstm_batch1"]["tflite"]["ops"]
    assert metas["lstm_batch1"]["source"]["batch_probe"]["2"].startswith("fails")
    assert metas["newest_first"]["batch_sizes"] == "dynamic"
    assert metas["newest_first"]["input_order"] == "newest_first"
    assert metas["sequence"]["output_shape"] == [1, 6, 1] and metas["sequence"]["batch_sizes"] == [1]
    assert metas["sequence"]["forecast"] == {"start": 0, "horizon": 1}
    assert metas["ann_any_length"]["output_shape"] == [-1, -1, 1]
    assert metas["ann_any_length"]["forecast"] == {"start": -1, "horizon": 1}
    assert metas["ann_any_length"]["normalization"]["method"] == "identity"
    for meta in metas.values():
        assert meta["model_type"] == "imported" and meta["version"] == 1


def test_newest_first_differs_from_oldest_first(byo: dict[str, Path], tmp_path: Path) -> None:
    """The order matters for this model: serving it the wrong way round gives other numbers."""
    newest = load_model_version(_import(byo, tmp_path, "newest_first", *IMPORTS["newest_first"]))
    oldest = load_model_version(_import(byo, tmp_path, "newest_first", *TUTORIAL, name="as-oldest"))
    windows = windows_from_sample(8, seed=5)
    assert np.abs(newest.predict(windows) - oldest.predict(windows)).max() > 0.1


def test_sequence_output_as_a_horizon(byo: dict[str, Path], tmp_path: Path) -> None:
    version_dir = _import(byo, tmp_path, "sequence", *TUTORIAL, "--forecast-output", "0:6", name="seq-horizon")
    meta = ModelMetadata.model_validate_json((version_dir / "metadata.json").read_text())
    assert meta.horizon == 6
    loaded = load_model_version(version_dir)
    windows = windows_from_sample(3, seed=9)
    got = loaded.predict_normalized(meta.normalization.normalize(windows))
    assert got.shape == (3, 6)
    np.testing.assert_allclose(got, _expected(byo["sequence"], meta, windows), atol=1e-6, rtol=0)
    assert loaded.predict(windows).shape == (3, 6)


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("flex", ["--normalization", "identity"], "Select TensorFlow (Flex) ops"),
        ("two_inputs", ["--normalization", "identity"], "has 2 inputs"),
        ("int_input", ["--normalization", "identity"], "is int32"),
        ("sequence", ["--normalization", "identity"], "answers 6 numbers per window"),
        ("ann_any_length", ["--normalization", "identity"], "dynamic window length; give it with --window"),
        ("ann_any_length", ["--normalization", "identity", "--window", "6", "--forecast-output", "6"], "do not fit"),
        ("lstm_batch1", ["--normalization", "tutorial"], "needs --offset and --scale"),
    ],
)
def test_refused_clearly_and_nothing_written(
    byo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, extra: list[str], message: str
) -> None:
    code = main(["import", str(byo[model]), "--name", "x", "--repository", str(tmp_path / "repo"), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "repo").exists()


def test_stated_dynamic_batch_that_does_not_run_names_the_batch_size(byo: dict[str, Path], tmp_path: Path) -> None:
    version_dir = _import(byo, tmp_path, "lstm_batch1", *TUTORIAL)
    meta_path = version_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["batch_sizes"] = "dynamic"
    meta.pop("input_shape")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"batch size 2: .*\"batch_sizes\": \[1\]"):
        load_model_version(version_dir)
    # The operator's way out without touching the file: max_batch 1 for this model.
    assert load_model_version(version_dir, max_batch=1).batch_sizes == [1]


def test_fixed_batch_file_with_old_metadata_is_served_at_its_batch(byo: dict[str, Path], tmp_path: Path) -> None:
    """Metadata without the new fields (as hand-made before): the file's fixed batch is taken."""
    version_dir = tmp_path / "old" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.tflite").write_bytes(byo["lstm_batch1"].read_bytes())
    norm = Normalization(method="tutorial", offset=15.0, scale=10.0)
    (version_dir / "metadata.json").write_text(json.dumps(
        {"format_version": 1, "name": "old", "window_length": 6, "features": 1, "normalization": norm.to_dict()}
    ))
    loaded = load_model_version(version_dir)
    assert loaded.batch_sizes == [1]
    windows = windows_from_sample(5, seed=1)
    want = direct_invoke(byo["lstm_batch1"], norm.normalize(windows))
    np.testing.assert_allclose(loaded.predict_normalized(norm.normalize(windows)), want, atol=1e-6, rtol=0)


def test_shipped_metadata_reads_as_before() -> None:
    """Old metadata keeps working: defaults are what the trainer always meant."""
    meta = ModelMetadata.model_validate_json((SHIPPED_MODELS / "lstm" / "1" / "metadata.json").read_text())
    assert (meta.input_order, meta.batch_sizes, meta.forecast.start, meta.horizon) == ("oldest_first", "dynamic", 0, 1)
