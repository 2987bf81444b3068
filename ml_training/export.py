"""Export of a trained model into the model repository, atomically.

A new version is assembled in a hidden temporary folder inside the model's folder
(``<repository>/<name>/.tmp-<uuid>``; readers ignore names that are not positive integers)
and then renamed into place as ``<repository>/<name>/<version>/`` with one ``os.rename``,
so a reader sees either no version or a complete one. ``version`` is the largest existing
integer folder + 1; if a concurrent trainer takes that number first, the rename fails and
the next number is tried. On any failure the temporary folder is removed.

A version folder holds ``model.keras``, ``saved_model/`` (``model.export()``),
``model.tflite`` (dynamic batch dimension, TFLite builtin ops only; the LSTM's is built
from its weights by :mod:`ml_training.lstm_export`, not converted from the Keras graph),
``metadata.json`` and the PNG plots.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.model_format import FORMAT_VERSION, METADATA_FILE, TEMP_PREFIX, TFLITE_FILE, taken_versions
from ml_training.errors import ExportError

__all__ = ["FORMAT_VERSION", "METADATA_FILE", "TEMP_PREFIX", "TFLITE_FILE", "publish", "versions"]

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
MAX_RENAME_ATTEMPTS = 100
CHECK_BATCHES = (1, 8, 64)  # the TFLite file must match Keras at each of these batch sizes
CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TfliteInfo:
    """What the converted model looks like from LiteRT."""

    input_name: str
    output_name: str
    input_shape_signature: list[int]
    output_shape_signature: list[int]
    ops: list[str]
    size_bytes: int


def versions(model_dir: Path) -> list[int]:
    """Existing versions: sub-folders named by a positive integer (``1``, ``2``, ...), complete or not."""
    return taken_versions(model_dir)


def next_version(model_dir: Path) -> int:
    existing = versions(model_dir)
    return existing[-1] + 1 if existing else 1


def check_repository(repository: Path, name: str) -> None:
    """Fail early (before training) if the repository cannot take a new version."""
    for path in (repository, repository / name):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path}: exists and is not a folder")
    probe = repository / name
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(f"{probe}: not writable, cannot add a model version there")


def publish(
    repository: Path,
    name: str,
    fill: Callable[[Path], None],
    finalize: Callable[[Path, int], None],
) -> tuple[Path, int]:
    """Create ``repository/name/<next version>/`` atomically.

    ``fill(tmp)`` writes the version-independent files; ``finalize(tmp, version)`` writes
    the files that name the version (metadata.json) and is called again if the version
    number has to change because of a concurrent trainer.
    """
    model_dir = repository / name
    created: list[Path] = []  # folders this call creates, deepest first
    probe = model_dir
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    published = False
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{model_dir}: cannot create: {exc.strerror or exc}") from None
    tmp = model_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        tmp.mkdir(parents=True)  # parents: survive a concurrent cleanup of model_dir
        fill(tmp)
        version = next_version(model_dir)
        for _ in range(MAX_RENAME_ATTEMPTS):
            target = model_dir / str(version)
            if target.exists():
                version += 1
                continue
            finalize(tmp, version)
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                    version += 1  # a concurrent trainer took this number
                    continue
                raise ExportError(
                    f"{target}: cannot rename the new version into place: {exc.strerror or exc}"
                ) from None
            published = True
            _fsync_dir(model_dir)
            return target, version
        raise ExportError(f"{model_dir}: gave up finding a free version number after {MAX_RENAME_ATTEMPTS} attempts")
    except OSError as exc:
        raise ExportError(f"{tmp}: cannot write the model: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not published:
            for path in created:  # leave no empty folders behind on failure
                with contextlib.suppress(OSError):
                    path.rmdir()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, content: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- model files


def save_model_files(
    model: Any,
    directory: Path,
    window: int,
    features: int = 1,
    check_windows: np.ndarray | None = None,
) -> TfliteInfo:
    """Write model.keras, saved_model/ and model.tflite into ``directory`` and check them.

    The TFLite model uses TFLite builtin ops only (no Flex / Select TF ops), so LiteRT
    alone can run it. The LSTM is converted from a hand-written graph of its trained
    weights (:mod:`ml_training.lstm_export`: ~140 ops that XNNPACK runs as one partition,
    faster than the ~180 ops of the unrolled Keras graph); the ANN (and any model that
    module does not recognise) from the exported SavedModel. The file is then loaded in
    LiteRT and checked: dynamic batch dimension ``[-1, window, features]``, no Flex ops,
    and (with ``check_windows``, normalised ``[n, window, features]``) the same forecasts
    as Keras within 1e-4 at batch 1, 8 and 64.
    """
    import tensorflow as tf

    model.save(directory / KERAS_FILE)
    saved_model = directory / SAVED_MODEL_DIR
    model.export(str(saved_model), format="tf_saved_model", verbose=False)
    converter = _converter(model, saved_model, window, features)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        content = converter.convert()
    except Exception as exc:  # the converter raises several private error types
        message = " ".join(str(exc).split())[:2000]
        raise ExportError(f"TFLite conversion failed: {message}") from None
    (directory / TFLITE_FILE).write_bytes(content)
    info = inspect_tflite(content)
    expected = [-1, window, features]
    if info.input_shape_signature != expected:
        raise ExportError(
            f"converted TFLite input shape signature is {info.input_shape_signature}, "
            f"expected {expected} (dynamic batch)"
        )
    flex = [op for op in info.ops if op.lower().startswith("flex") or op == "CUSTOM"]
    if flex:
        raise ExportError(f"converted TFLite model needs non-builtin ops: {flex}")
    if check_windows is not None and len(check_windows):
        x = np.asarray(check_windows, dtype=np.float32)
        for batch in CHECK_BATCHES:
            windows = np.resize(x, (batch, *x.shape[1:]))  # repeats the windows if there are fewer
            expected_out = np.asarray(model.predict(windows, verbose=0), dtype=np.float32)
            got = run_tflite(content, windows)
            worst = float(np.max(np.abs(got - expected_out)))
            if not worst <= CHECK_TOLERANCE:
                raise ExportError(
                    f"converted TFLite model disagrees with Keras by {worst:g} at batch {batch} "
                    f"(limit {CHECK_TOLERANCE:g})"
                )
    return info


def _converter(model: Any, saved_model: Path, window: int, features: int) -> Any:
    """The LSTM from its hand-written graph (:mod:`ml_training.lstm_export`), anything else from the SavedModel."""
    import tensorflow as tf

    from ml_training import lstm_export

    if not lstm_export.supports(model):
        return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    holder = tf.Module()
    holder.forecast = lstm_export.handwritten_lstm(model, window, features)
    return tf.lite.TFLiteConverter.from_concrete_functions([holder.forecast.get_concrete_function()], holder)


def _interpreter(content: bytes) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - TensorFlow's own copy
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter(model_content=content)


def inspect_tflite(content: bytes) -> TfliteInfo:
    """Input/output names and shape signatures and the op list, as LiteRT sees them."""
    interpreter = _interpreter(content)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    ops = sorted({str(op["op_name"]) for op in interpreter._get_ops_details()})
    return TfliteInfo(
        input_name=str(inp["name"]),
        output_name=str(out["name"]),
        input_shape_signature=[int(v) for v in inp["shape_signature"]],
        output_shape_signature=[int(v) for v in out["shape_signature"]],
        ops=ops,
        size_bytes=len(content),
    )


def run_tflite(content: bytes, windows: np.ndarray) -> np.ndarray:
    """Run a batch ``[n, window, features]`` through the TFLite model in LiteRT."""
    interpreter = _interpreter(content)
    inp = interpreter.get_input_details()[0]
    x = np.asarray(windows, dtype=np.float32)
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    return np.array(interpreter.get_tensor(out["index"]), dtype=np.float32)
