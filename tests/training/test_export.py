"""End to end: a tiny LSTM and ANN are trained in-process and their exported version checked."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from ml_training.cli import TrainingResult
from ml_training.evaluate import mae, rmse
from tests.training.conftest import MakeOptions, snapshot_of

WINDOW = 6


def _keras_predict(result: TrainingResult, normalized: np.ndarray) -> np.ndarray:
    return np.asarray(result.model.predict(normalized.astype(np.float32), verbose=0))


def _normalized_test_windows(result: TrainingResult, count: int) -> np.ndarray:
    x = result.dataset.test.x
    reps = int(np.ceil(count / len(x)))
    raw = np.concatenate([x] * reps)[:count]
    return result.normalization.normalize(raw)[..., np.newaxis].astype(np.float32)


def test_version_folder_contents(trained: TrainingResult) -> None:
    version_dir = trained.version_dir
    assert version_dir.name == "1"
    assert version_dir.parent.name == trained.metadata["name"] == trained.metadata["model_type"]
    names = {p.name for p in version_dir.iterdir()}
    assert {
        "model.keras",
        "saved_model",
        "model.tflite",
        "metadata.json",
        "forecast_test.png",
        "training_curves.png",
    } <= names
    assert (version_dir / "saved_model" / "saved_model.pb").is_file()
    for png in ("forecast_test.png", "training_curves.png"):
        assert (version_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No temporary folder is left next to the version.
    assert [p.name for p in version_dir.parent.iterdir()] == ["1"]
    # Small files: the whole version stays well under a megabyte or two.
    total = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_tflite_has_only_builtin_ops_and_dynamic_batch(trained: TrainingResult) -> None:
    interpreter = Interpreter(model_path=str(trained.version_dir / "model.tflite"))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops, "no ops found"
    assert not [op for op in ops if op.lower().startswith("flex") or op == "CUSTOM"], ops
    detail = interpreter.get_input_details()[0]
    assert list(detail["shape_signature"]) == [-1, WINDOW, 1]
    assert detail["dtype"] == np.float32
    assert list(interpreter.get_output_details()[0]["shape_signature"]) == [-1, 1]


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_litert_batches_match_keras(trained: TrainingResult, batch: int) -> None:
    interpreter = Interpreter(model_path=str(trained.version_dir / "model.tflite"))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [batch, WINDOW, 1])
    interpreter.allocate_tensors()
    windows = _normalized_test_windows(trained, batch)
    interpreter.set_tensor(inp["index"], windows)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = _keras_predict(trained, windows)
    assert got.shape == (batch, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_saved_formats_reload(trained: TrainingResult) -> None:
    windows = _normalized_test_windows(trained, 16)
    reloaded = keras.models.load_model(trained.version_dir / "model.keras")
    np.testing.assert_allclose(
        reloaded.predict(windows, verbose=0), _keras_predict(trained, windows), rtol=0, atol=1e-6
    )
    layer = keras.layers.TFSMLayer(str(trained.version_dir / "saved_model"), call_endpoint="serve")
    np.testing.assert_allclose(np.asarray(layer(windows)), _keras_predict(trained, windows), rtol=0, atol=1e-5)


def test_metadata_contract(trained: TrainingResult) -> None:
    text = (trained.version_dir / "metadata.json").read_text(encoding="utf-8")
    meta = json.loads(text)
    assert "NaN" not in text and "Infinity" not in text
    assert meta == trained.metadata
    assert meta["format_version"] == 1
    assert meta["version"] == 1
    assert meta["window_length"] == WINDOW
    assert meta["features"] == 1
    assert meta["target"] == "next_value"
    norm = meta["normalization"]
    assert norm["method"] == "tutorial"
    assert norm["formula"] == "normalized = (raw - offset) / scale"
    assert isinstance(norm["offset"], float) and isinstance(norm["scale"], float) and norm["scale"] > 0
    assert meta["files"]["tflite"] == "model.tflite"
    assert meta["files"]["keras"] == "model.keras"
    assert meta["files"]["saved_model"] == "saved_model"
    for key in ("tflite", "keras", "saved_model"):
        assert (trained.version_dir / meta["files"][key]).exists()
    assert meta["input_name"] and meta["output_name"]

    data = meta["data"]
    (source,) = data["files"]
    assert source["sha256"] == hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
    assert data["parameter_id"] == 122
    assert data["stations"] == [1161114002, 1161114004]
    assert data["rows"] > 0
    assert set(data["windows"]) == {"train", "validation", "test"}
    assert all(n > 0 for n in data["windows"].values())
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
    spans = data["spans"]
    for name in ("train", "validation", "test"):
        lo, hi = spans[name]
        assert iso.match(lo) and iso.match(hi) and lo <= hi
    assert spans["train"][1] < spans["validation"][0] <= spans["validation"][1] < spans["test"][0]

    metrics = meta["metrics"]
    assert metrics["units"] == "raw"
    for who in ("model", "persistence"):
        assert set(metrics["test"][who]) >= {"mae", "rmse"}

    training = meta["training"]
    assert training["epochs"] == 2 and training["seed"] == 3 and training["window"] == WINDOW
    assert training["batch_size"] == 64 and training["normalization"] == "tutorial"
    assert training["resample"] == 300.0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", meta["created_at"])
    assert meta["tensorflow_version"]


def test_metrics_match_a_recomputation(trained: TrainingResult) -> None:
    test = trained.dataset.test
    predicted = trained.normalization.denormalize(
        _keras_predict(trained, trained.normalization.normalize(test.x)[..., np.newaxis]).reshape(-1)
    )
    stored = trained.metadata["metrics"]["test"]
    assert stored["model"]["mae"] == pytest.approx(mae(predicted, test.y), abs=1e-5)
    assert stored["model"]["rmse"] == pytest.approx(rmse(predicted, test.y), abs=1e-5)
    assert stored["persistence"]["mae"] == pytest.approx(mae(test.x[:, -1], test.y))
    assert stored["persistence"]["rmse"] == pytest.approx(rmse(test.x[:, -1], test.y))


def test_normalization_fitted_on_training_span_only(trained: TrainingResult) -> None:
    values = trained.dataset.train_values
    norm = trained.metadata["normalization"]
    assert norm["offset"] == pytest.approx(values.mean())
    assert norm["scale"] == pytest.approx(values.max() - values.mean())
    everything = np.concatenate([values, trained.dataset.validation.y, trained.dataset.test.y])
    assert norm["offset"] != pytest.approx(everything.mean(), abs=1e-9)


def test_server_loader_round_trip(trained: TrainingResult) -> None:
    from server_app.runtime import load_model_version

    loaded = load_model_version(trained.version_dir)
    meta = loaded.metadata
    assert meta.window_length == WINDOW
    assert meta.features == 1
    offset, scale = meta.normalization.offset, meta.normalization.scale
    assert offset == trained.normalization.offset
    assert scale == trained.normalization.scale

    for batch in (1, 7, 64):
        raw = trained.dataset.test.x[:batch][..., np.newaxis].astype(np.float32)
        got = loaded.predict(raw)
        assert got.shape == (batch,)
        normalized = (raw - np.float32(offset)) / np.float32(scale)
        expected = _keras_predict(trained, normalized)[:, 0] * scale + offset
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_same_seed_same_model(trained: TrainingResult, make_options: MakeOptions, tmp_path: Path) -> None:
    from ml_training.cli import run

    again = run(make_options(tmp_path / "repo", model=trained.metadata["model_type"]))
    windows = _normalized_test_windows(trained, 64)
    np.testing.assert_array_equal(_keras_predict(again, windows), _keras_predict(trained, windows))
    assert again.metadata["metrics"] == trained.metadata["metrics"]
    assert (again.version_dir / "model.tflite").read_bytes() == (trained.version_dir / "model.tflite").read_bytes()


def test_next_run_adds_version_two(make_options: MakeOptions, tmp_path: Path) -> None:
    from ml_training.cli import run

    repository = tmp_path / "repo"
    (repository / "ann" / "1").mkdir(parents=True)
    (repository / "ann" / "1" / "keep.txt").write_text("an older version")
    (repository / "ann" / "not-a-version").mkdir()
    result = run(make_options(repository, model="ann", name="ann", epochs=1))
    assert result.version == 2
    assert result.version_dir == repository / "ann" / "2"
    assert json.loads((result.version_dir / "metadata.json").read_text())["version"] == 2
    assert (repository / "ann" / "1" / "keep.txt").read_text() == "an older version"
    assert snapshot_of(repository / "ann") >= {"1", "1/keep.txt", "not-a-version", "2", "2/metadata.json"}
    assert not [p for p in (repository / "ann").iterdir() if p.name.startswith(".")]
