"""`--horizon H`: the trainer learns the next H readings; the server answers [n, H]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.model_format import ModelMetadata
from ml_training.cli import build_parser, options_from_args, run
from server_app.runtime import load_model_version
from tests.training.conftest import MakeOptions


def test_horizon_option_parses() -> None:
    args = build_parser().parse_args(["--data", "x.csv", "--model", "ann", "--repository", "r", "--horizon", "3"])
    assert options_from_args(args).horizon == 3
    args = build_parser().parse_args(["--data", "x.csv", "--model", "ann", "--repository", "r"])
    assert options_from_args(args).horizon == 1


def test_trained_horizon_is_served_as_n_by_h(make_options: MakeOptions, tmp_path: Path) -> None:
    result = run(make_options(tmp_path, model="ann", horizon=3))
    meta = ModelMetadata.model_validate(result.metadata)
    assert meta.forecast.horizon == 3 and meta.output_shape == [-1, 3]
    assert result.metadata["target"] == "next_values"
    steps = result.metadata["metrics"]["test"]["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    # step 1 is what the headline metrics describe
    assert steps[0]["model_mae"] == result.metadata["metrics"]["test"]["model"]["mae"]
    assert result.dataset.test.ahead is not None and result.dataset.test.ahead.shape[1] == 3
    np.testing.assert_array_equal(result.dataset.test.ahead[:, 0], result.dataset.test.y)

    loaded = load_model_version(result.version_dir)
    raw = result.dataset.test.x[:10].astype(np.float32)[..., np.newaxis]
    got = loaded.predict(raw)
    assert got.shape == (10, 3)
    norm = result.normalization
    keras_out = np.asarray(result.model.predict(norm.normalize(raw).astype(np.float32), verbose=0))
    np.testing.assert_allclose(got, norm.denormalize(keras_out), atol=1e-4, rtol=0)
