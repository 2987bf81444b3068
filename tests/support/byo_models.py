"""TFLite files like the ones users bring, built here with TensorFlow (small, built once per run).

* ``lstm_batch1``: a Keras LSTM converted WITHOUT unrolling at a fixed batch of 1 (a ``WHILE``
  loop: LiteRT cannot run it at batch 2, XNNPack "failed to reshape");
* ``newest_first``: a dense model whose answer depends on the order of the window (weights
  1..6), trained (here: built) on windows newest first, like the tutorial's ``norm_1..norm_6``;
* ``sequence``: an LSTM answering a sequence ``[1, 6, 1]`` at batch 1, of which the tutorial
  used element 0;
* ``ann_any_length``: an ANN on ``[-1, -1, 1]`` answering ``[-1, -1, 1]`` (one number per step);
* refused ones: ``flex`` (Select TF ops), ``two_inputs``, ``int_input``.

Also :func:`direct_invoke`: LiteRT on the file itself, the reference the served values must equal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

WINDOW = 6
SERVED = ("lstm_batch1", "newest_first", "sequence", "ann_any_length")
REFUSED = ("flex", "two_inputs", "int_input")


def _convert(model: Any, select_ops: bool = False) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if select_ops:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        converter._experimental_lower_tensor_list_ops = False
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content: bytes = converter.convert()
    return content


def _builders() -> dict[str, Any]:
    import keras

    def lstm_batch1() -> Any:
        inputs = keras.Input(shape=(WINDOW, 1), batch_size=1)
        hidden = keras.layers.LSTM(8)(inputs)  # not unrolled: a WHILE loop in TFLite
        return keras.Model(inputs, keras.layers.Dense(1)(hidden))

    def newest_first() -> Any:
        inputs = keras.Input(shape=(WINDOW, 1))
        flat = keras.layers.Flatten()(inputs)
        dense = keras.layers.Dense(1, use_bias=True)
        model = keras.Model(inputs, dense(flat))
        dense.set_weights([np.arange(1, WINDOW + 1, dtype=np.float32).reshape(WINDOW, 1) / 21.0, np.array([0.1])])
        return model

    def sequence() -> Any:
        inputs = keras.Input(shape=(WINDOW, 1), batch_size=1)
        hidden = keras.layers.LSTM(8, return_sequences=True)(inputs)
        return keras.Model(inputs, keras.layers.Dense(1)(hidden))

    def ann_any_length() -> Any:
        inputs = keras.Input(shape=(None, 1))
        hidden = keras.layers.Dense(8, activation="tanh")(inputs)
        return keras.Model(inputs, keras.layers.Dense(1)(hidden))

    def flex() -> Any:
        inputs = keras.Input(shape=(WINDOW, 1))
        return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.LSTM(4)(inputs)))

    def two_inputs() -> Any:
        a, b = keras.Input(shape=(WINDOW, 1)), keras.Input(shape=(WINDOW, 1))
        return keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Flatten()(a + b)))

    def int_input() -> Any:
        inputs = keras.Input(shape=(WINDOW, 1), dtype="int32")
        flat = keras.layers.Flatten()(keras.ops.cast(inputs, "float32"))
        return keras.Model(inputs, keras.layers.Dense(1)(flat))

    return {f.__name__: f for f in (lstm_batch1, newest_first, sequence, ann_any_length, flex, two_inputs, int_input)}


def build_models(directory: Path) -> dict[str, Path]:
    """``<directory>/<name>.tflite`` for every model above; built only when missing."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.tflite" for name in (*SERVED, *REFUSED)}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        keras.utils.set_random_seed(13)
        builders = _builders()
        for name in missing:
            content = _convert(builders[name](), select_ops=name == "flex")
            temp = paths[name].with_suffix(".tmp")
            temp.write_bytes(content)
            temp.replace(paths[name])
    return paths


def direct_invoke(path: Path, windows: np.ndarray) -> np.ndarray:
    """LiteRT on the file, one window per invoke at batch 1: windows [n, L, 1] (in the order the
    model expects) -> every output number of each window, [n, numbers]."""
    from ai_edge_litert.interpreter import Interpreter

    results = []
    for window in np.asarray(windows, dtype=np.float32):
        interpreter = Interpreter(model_path=str(path))
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [1, *window.shape], strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], window[np.newaxis])
        interpreter.invoke()
        results.append(np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])).ravel())
    return np.stack(results)
