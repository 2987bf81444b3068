"""The LSTM's hand-written TFLite graph (ml_training.lstm_export): same forecasts as Keras, builtin ops only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from ml_training import export, lstm_export
from ml_training.cli import TrainingResult
from ml_training.models import build_model
from tests.training.conftest import MakeOptions

WINDOW = 6
OPS = ["ADD", "CONCATENATION", "FULLY_CONNECTED", "LOGISTIC", "MUL", "SPLIT", "STRIDED_SLICE", "TANH"]


@pytest.fixture(scope="module")
def one_epoch(make_options: MakeOptions, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    from ml_training.cli import run

    return run(make_options(tmp_path_factory.mktemp("repo-lstm-1epoch"), model="lstm", epochs=1))


def _windows(result: TrainingResult, count: int) -> np.ndarray:
    x = result.dataset.test.x
    raw = np.resize(x, (count, x.shape[1]))
    return result.normalization.normalize(raw)[..., np.newaxis].astype(np.float32)


def _run(content: bytes, windows: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=content, num_threads=1)  # as the server runs it
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(windows.shape), strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], windows)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def _convert(model: Any, window: int, features: int) -> bytes:
    import tensorflow as tf

    holder = tf.Module()
    holder.forecast = lstm_export.handwritten_lstm(model, window, features)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([holder.forecast.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return bytes(converter.convert())


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_trained_lstm_matches_keras(one_epoch: TrainingResult, batch: int) -> None:
    content = (one_epoch.version_dir / "model.tflite").read_bytes()
    windows = _windows(one_epoch, batch)
    expected = np.asarray(one_epoch.model.predict(windows, verbose=0))
    got = _run(content, windows)
    assert got.shape == expected.shape == (batch, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_trained_lstm_ops_are_the_lean_builtins(one_epoch: TrainingResult) -> None:
    path: Path = one_epoch.version_dir / "model.tflite"
    info = export.inspect_tflite(path.read_bytes())
    assert info.ops == OPS  # builtins only; no SHAPE/FILL (dynamic state), PACK/UNPACK or TRANSPOSE
    assert one_epoch.metadata["tflite"]["ops"] == OPS
    assert info.input_shape_signature == [-1, WINDOW, 1]
    assert info.output_shape_signature == [-1, 1]


def test_xnnpack_takes_the_whole_graph(one_epoch: TrainingResult) -> None:
    """Why it is faster: LiteRT's default XNNPACK delegate replaces the graph with one partition."""
    interpreter = Interpreter(model_path=str(one_epoch.version_dir / "model.tflite"), num_threads=1)
    before = len(interpreter._get_ops_details())
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [64, WINDOW, 1], strict=False)
    interpreter.allocate_tensors()
    delegated = [op for op in interpreter._get_ops_details()[before:] if op["op_name"] == "DELEGATE"]
    if not delegated:
        pytest.skip("this LiteRT build applies no default delegate")
    assert len(delegated) == 1


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_any_size_of_stacked_lstm(batch: int) -> None:
    """Other windows, several features, a longer horizon, three layers: still Keras's numbers."""
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input(shape=(9, 3))
    x = keras.layers.LSTM(8, return_sequences=True, unroll=True)(inputs)
    x = keras.layers.LSTM(16, return_sequences=True)(x)
    x = keras.layers.LSTM(4)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert lstm_export.supports(model)
    windows = np.random.default_rng(batch).normal(size=(batch, 9, 3)).astype(np.float32)
    got = _run(_convert(model, 9, 3), windows)
    np.testing.assert_allclose(got, model.predict(windows, verbose=0), rtol=0, atol=1e-4)


def test_other_models_take_the_savedmodel_path() -> None:
    import keras

    assert not lstm_export.supports(build_model("ann", WINDOW))
    assert lstm_export.supports(build_model("lstm", WINDOW, horizon=3))
    inputs = keras.Input(shape=(WINDOW, 1))
    relu = keras.layers.LSTM(4, activation="relu")(inputs)
    assert not lstm_export.supports(keras.Model(inputs, keras.layers.Dense(1)(relu)))
    backwards = keras.layers.LSTM(4, go_backwards=True)(inputs)
    assert not lstm_export.supports(keras.Model(inputs, keras.layers.Dense(1)(backwards)))
    gru = keras.layers.GRU(4)(inputs)
    assert not lstm_export.supports(keras.Model(inputs, keras.layers.Dense(1)(gru)))
    with pytest.raises(ValueError, match="not a stack of LSTM layers"):
        lstm_export.handwritten_lstm(build_model("ann", WINDOW), WINDOW, 1)
