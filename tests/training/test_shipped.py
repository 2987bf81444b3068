"""The shipped sample models (``models/lstm/1``, ``models/ann/1``) and the data they came from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from ml_training.data import DataConfig, load_csvs, prepare

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "bts_sample.csv"


@pytest.fixture(scope="module", params=["lstm", "ann"])
def shipped(request: pytest.FixtureRequest) -> Path:
    version_dir = ROOT / "models" / request.param / "1"
    assert (version_dir / "metadata.json").is_file(), f"{version_dir} missing: see docs/training.md"
    return version_dir


def test_trained_on_the_shipped_data_and_beats_persistence(shipped: Path) -> None:
    meta = json.loads((shipped / "metadata.json").read_text())
    (source,) = meta["data"]["files"]
    assert source["path"] == "data/bts_sample.csv"
    assert source["sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert meta["training"]["resample"] == 300.0
    test = meta["metrics"]["test"]
    assert test["model"]["mae"] < test["persistence"]["mae"]
    assert test["model"]["rmse"] < test["persistence"]["rmse"]


def test_server_serves_what_keras_predicts(shipped: Path) -> None:
    from server_app.runtime import load_model_version

    loaded = load_model_version(shipped)
    offset, scale = loaded.metadata.normalization.offset, loaded.metadata.normalization.scale
    dataset = prepare(load_csvs([DATA]), DataConfig(resample=300))
    raw = dataset.test.x[:64][..., np.newaxis].astype(np.float32)
    model = keras.models.load_model(shipped / "model.keras")
    expected = model.predict((raw - np.float32(offset)) / np.float32(scale), verbose=0)[:, 0] * scale + offset
    np.testing.assert_allclose(loaded.predict(raw), expected, rtol=0, atol=1e-4)
