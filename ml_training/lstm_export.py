"""The LSTM's TFLite graph, written out by hand from the trained Keras weights.

Converting the Keras graph itself (``unroll=True``, the only way Keras 3 LSTMs with a
dynamic batch convert to builtin ops) gives ~180 small ops, among them SHAPE and FILL for
the zero initial state. Those make the state tensors dynamic, so LiteRT's default XNNPACK
delegate takes only four fragments of the graph and the rest runs op by op on the builtin
kernels. This module builds the same arithmetic as a ``tf.function`` that converts to
ops XNNPACK takes whole (one delegate partition at every batch size):

* every step slices its input ``x_t`` from the window (STRIDED_SLICE) and computes all
  four gates with one FULLY_CONNECTED on ``concat(x_t, h)`` against the stacked
  ``[kernel; recurrent_kernel]`` (one matmul instead of two and an ADD);
* the first step has no state: no recurrent matmul, and ``c = i * g`` (the Keras graph
  multiplies zeros there);
* SPLIT into i, f, g, o, then LOGISTIC/TANH and MUL/ADD as in the Keras cell; the first
  layer's outputs feed the second layer step by step (no PACK/UNPACK/TRANSPOSE).

Ops: CONCATENATION, FULLY_CONNECTED, LOGISTIC, MUL, ADD, SPLIT, STRIDED_SLICE, TANH, all
builtins; input ``[-1, window, features]`` as before, so the runtime resizes per batch.
The forecasts equal Keras's to float rounding (the export checks 1e-4 at batch 1, 8 and
64). Only the plain stacked-LSTM shape this trainer builds is handled
(:func:`supports`); anything else is converted from the SavedModel as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["handwritten_lstm", "supports"]


def _lstm_layers(model: Any) -> tuple[list[Any], Any] | None:
    """The model's LSTM layers and its final Dense layer, or None if it is not Input -> LSTM... -> Dense."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) < 2 or not isinstance(layers[-1], keras.layers.Dense):
        return None
    lstms, dense = layers[:-1], layers[-1]
    if not all(type(layer) is keras.layers.LSTM for layer in lstms):
        return None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    for index, layer in enumerate(lstms):
        config = layer.get_config()
        last = index == len(lstms) - 1
        if (
            config.get("activation") != "tanh"
            or config.get("recurrent_activation") != "sigmoid"
            or not config.get("use_bias", True)
            or config.get("go_backwards")
            or config.get("stateful")
            or bool(config.get("return_sequences")) == last
            or config.get("return_state")
        ):
            return None
    if dense.get_config().get("activation") != "linear" or not dense.get_config().get("use_bias", True):
        return None
    return lstms, dense


def supports(model: Any) -> bool:
    """True if :func:`handwritten_lstm` can rebuild this model (stacked tanh/sigmoid LSTMs + linear Dense)."""
    return _lstm_layers(model) is not None


def handwritten_lstm(model: Any, window: int, features: int) -> Any:
    """A ``tf.function`` ``[batch, window, features] -> [batch, outputs]`` computing ``model``'s forecast.

    Its concrete function converts to TFLite builtins only (see the module docstring).
    """
    import tensorflow as tf

    found = _lstm_layers(model)
    if found is None:
        raise ValueError(f"model {model.name!r} is not a stack of LSTM layers under a linear Dense layer")
    lstms, dense = found
    weights = []
    for layer in lstms:
        kernel, recurrent, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
        weights.append((kernel, np.concatenate([kernel, recurrent]), bias))
    dense_kernel, dense_bias = (np.asarray(w, dtype=np.float32) for w in dense.get_weights())

    def forecast(x: Any) -> Any:
        inputs = [x[:, t, :] for t in range(window)]
        h = None
        for kernel, stacked, bias in weights:
            h = c = None
            outputs = []
            for x_t in inputs:
                if h is None:
                    z = tf.matmul(x_t, kernel) + bias
                else:
                    z = tf.matmul(tf.concat([x_t, h], axis=1), stacked) + bias
                i, f, g, o = tf.split(z, 4, axis=1)  # Keras's gate order
                i, g, o = tf.sigmoid(i), tf.tanh(g), tf.sigmoid(o)
                c = i * g if c is None else tf.sigmoid(f) * c + i * g
                h = o * tf.tanh(c)
                outputs.append(h)
            inputs = outputs
        return tf.matmul(h, dense_kernel) + dense_bias

    spec = tf.TensorSpec([None, window, features], tf.float32, name="window")
    return tf.function(forecast, input_signature=[spec], autograph=False)
