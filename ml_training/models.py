"""The LSTM and ANN forecasters and their training loop.

Both take ``[batch, window, 1]`` normalised readings and return ``[batch, 1]``: the next
reading, normalised. The LSTM layers are unrolled (``unroll=True``): for short windows
that trains faster than Keras's loop and keeps the weights of earlier versions
reproducible. (Keras 3 LSTMs with a dynamic batch dimension also only convert to TFLite
builtin ops when unrolled; the export no longer converts this graph, though:
:mod:`ml_training.lstm_export` writes a leaner graph from the trained weights.)

Importing this module imports TensorFlow/Keras (slow); :mod:`ml_training.cli` imports it
only after the data has been validated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

ModelType = Literal["lstm", "ann"]
MODEL_TYPES: tuple[ModelType, ...] = ("lstm", "ann")
INPUT_NAME = "window"
OUTPUT_NAME = "forecast"
LSTM_UNITS = 32
ANN_UNITS = (32, 16)


def set_determinism(seed: int) -> None:
    """Same seed, same data, same machine -> same weights and predictions."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(model_type: str, window: int, features: int = 1, horizon: int = 1) -> Any:
    """An uncompiled Keras model ``[batch, window, features] -> [batch, horizon]``."""
    inputs = keras.Input(shape=(window, features), name=INPUT_NAME)
    if model_type == "lstm":
        x = keras.layers.LSTM(LSTM_UNITS, return_sequences=True, unroll=True, name="lstm_1")(inputs)
        x = keras.layers.LSTM(LSTM_UNITS, unroll=True, name="lstm_2")(x)
    elif model_type == "ann":
        x = keras.layers.Flatten(name="flatten")(inputs)
        for i, units in enumerate(ANN_UNITS, start=1):
            x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
    else:
        raise ValueError(f"unknown model type {model_type!r}; choose from {MODEL_TYPES}")
    outputs = keras.layers.Dense(horizon, name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=model_type)


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int
    patience: int
    learning_rate: float


class EpochPrinter(keras.callbacks.Callback):
    """One line per epoch: loss, val_loss, time, and a ``*`` on a new best val_loss."""

    def __init__(self, epochs: int, write: Callable[[str], None]) -> None:
        super().__init__()
        self._epochs = epochs
        self._write = write
        self._best = float("inf")
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        loss = float(logs.get("loss", float("nan")))
        val = float(logs.get("val_loss", float("nan")))
        best = val < self._best
        self._best = min(self._best, val)
        width = len(str(self._epochs))
        self._write(
            f"epoch {epoch + 1:>{width}}/{self._epochs}  loss {loss:.5f}  "
            f"val_loss {val:.5f}  {time.perf_counter() - self._started:.1f}s" + ("  *" if best else "")
        )


def fit(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    config: FitConfig,
    write: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Compile and train with Adam on MSE; returns the loss history.

    Training windows are shuffled between epochs (they all lie in the training span, so
    this leaks nothing); with ``patience > 0`` training stops when val_loss has not
    improved for that many epochs and the best weights are restored.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="mse",
    )
    callbacks: list[Any] = []
    if write is not None:
        callbacks.append(EpochPrinter(config.epochs, write))
    if config.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        )
    history = model.fit(
        _as_input(train[0]),
        train[1].astype(np.float32).reshape(len(train[1]), -1),
        validation_data=(_as_input(validation[0]), validation[1].astype(np.float32).reshape(len(validation[1]), -1)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def predict(model: Any, windows: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Normalised windows ``[n, window]`` or ``[n, window, 1]`` -> normalised forecasts [n] (or [n, horizon])."""
    out = np.asarray(model.predict(_as_input(windows), batch_size=batch_size, verbose=0), dtype=np.float64)
    out = out.reshape(len(out), -1)
    return out[:, 0] if out.shape[1] == 1 else out


def _as_input(windows: np.ndarray) -> np.ndarray:
    x = np.asarray(windows, dtype=np.float32)
    return x if x.ndim == 3 else x[..., np.newaxis]


def count_params(model: Any) -> int:
    return int(model.count_params())
