"""Import a `.tflite` forecaster trained elsewhere into the model repository.

The file is inspected with LiteRT (the runtime the server uses; no TensorFlow): what can be
read from the file is read (window length, features, tensor names, output size per window),
which batch sizes really run is probed (and whether batching changes any window's answer),
and what the LiteRT-only server cannot run is refused with the reason. What the file cannot
say (the normalisation, the input order, which output elements are the forecast when there
are several) comes from the caller. The version folder (`model.tflite` + `metadata.json`) is
written atomically, exactly as the trainer writes its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from contract.model_format import (
    FORMAT_VERSION,
    METADATA_FILE,
    TFLITE_FILE,
    ForecastSpec,
    InputOrder,
    ModelMetadata,
    Normalization,
)
from ml_training import export
from ml_training.errors import TrainingError

PROBE_BATCH_SIZES = (1, 2, 3, 4, 8, 16, 32, 64)
TOLERANCE = 1e-4


class ImportRefused(TrainingError):
    """The file cannot be served as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ImportOptions:
    model_file: Path
    name: str
    repository: Path
    normalization: Normalization
    input_order: InputOrder = "oldest_first"
    forecast: str | None = None  # "START" or "START:STOP" over the output numbers of one window
    output: str | None = None  # output tensor name, when the model has several
    window: int | None = None  # when the file's time dimension is dynamic
    features: int | None = None


@dataclass
class Inspection:
    """What LiteRT says about the file, and what probing found."""

    input_name: str
    input_shape: list[int]
    output_name: str
    output_shape: list[int]
    ops: list[str]
    window_length: int
    features: int
    elements: int = 0  # output numbers per window
    batch_sizes: str | list[int] = "dynamic"
    probe: dict[str, str] = field(default_factory=dict)  # batch size -> "ok" or why not


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    try:
        return Interpreter(model_content=content, num_threads=1)
    except (ValueError, RuntimeError) as exc:
        raise ImportRefused(f"not a TFLite model LiteRT can read: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def inspect(content: bytes, options: ImportOptions) -> Inspection:
    """Read the file's contract; refuse what the server cannot run."""
    interpreter = _interpreter(content)
    ops = sorted({str(op["op_name"]) for op in interpreter._get_ops_details()})
    flex = [op for op in ops if op.startswith("Flex")]
    if flex:
        raise ImportRefused(
            f"the model needs Select TensorFlow (Flex) ops {flex}, which only a TensorFlow-linked runtime has; the "
            "server runs LiteRT alone. Convert it with TFLite builtin ops only (converter.target_spec.supported_ops "
            "= [tf.lite.OpsSet.TFLITE_BUILTINS]; for a Keras LSTM: unroll=True, or a fixed batch size)"
        )
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        listed = [f"{d['name']} {[int(v) for v in d['shape_signature']]}" for d in inputs]
        raise ImportRefused(f"the model has {len(inputs)} inputs {listed}; the server feeds exactly one window tensor")
    inp = inputs[0]
    if inp["dtype"] != np.float32:
        raise ImportRefused(
            f"the model input {inp['name']} is {np.dtype(inp['dtype']).name}; the server feeds float32 windows "
            "(quantised or integer inputs are not supported: convert with float32 input and output)"
        )
    signature = [int(d) for d in inp["shape_signature"]]
    window, features = _window_shape(signature, options)
    outputs = interpreter.get_output_details()
    out = _choose_output(outputs, options.output)
    if out["dtype"] != np.float32:
        kind = np.dtype(out["dtype"]).name
        raise ImportRefused(f"the model output {out['name']} is {kind}; the server reads float32")
    return Inspection(
        input_name=str(inp["name"]),
        input_shape=signature,
        output_name=str(out["name"]),
        output_shape=[int(d) for d in out["shape_signature"]],
        ops=ops,
        window_length=window,
        features=features,
    )


def _window_shape(signature: list[int], options: ImportOptions) -> tuple[int, int]:
    if len(signature) not in (2, 3):
        raise ImportRefused(
            f"the model input has shape {signature}; the server feeds [batch, window, features] or [batch, window]"
        )
    window = signature[1] if signature[1] > 0 else options.window
    if window is None:
        raise ImportRefused(f"the model input {signature} has a dynamic window length; give it with --window N")
    if options.window is not None and options.window != window:
        raise ImportRefused(f"--window {options.window} disagrees with the model input {signature}")
    features = signature[2] if len(signature) == 3 and signature[2] > 0 else (options.features or 1)
    if options.features is not None and options.features != features:
        raise ImportRefused(f"--features {options.features} disagrees with the model input {signature}")
    return window, features


def _choose_output(outputs: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    listed = [f"{d['name']} {[int(v) for v in d['shape_signature']]}" for d in outputs]
    if name is not None:
        for detail in outputs:
            if detail["name"] == name:
                return detail
        raise ImportRefused(f"--output {name!r} is not an output of the model; it has {listed}")
    if len(outputs) != 1:
        raise ImportRefused(
            f"the model has {len(outputs)} outputs {listed}; say which is the forecast with --output NAME"
        )
    return outputs[0]


def _run(content: bytes, info: Inspection, windows: np.ndarray) -> np.ndarray:
    """One invoke at batch len(windows) -> outputs [batch, numbers per window]."""
    interpreter = _interpreter(content)
    inp = next(d for d in interpreter.get_input_details() if d["name"] == info.input_name)
    out = next(d for d in interpreter.get_output_details() if d["name"] == info.output_name)
    shape = [len(windows), info.window_length] + ([info.features] if len(info.input_shape) == 3 else [])
    interpreter.resize_tensor_input(inp["index"], shape, strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(windows, dtype=np.float32).reshape(shape))
    interpreter.invoke()
    result = np.array(interpreter.get_tensor(out["index"]), dtype=np.float32)
    return result.reshape(len(windows), -1)


def probe(content: bytes, info: Inspection, sizes: tuple[int, ...] = PROBE_BATCH_SIZES) -> None:
    """Which batch sizes run, with the same answer per window as at batch 1; fills `info`."""
    candidates = sorted({*sizes, *([info.input_shape[0]] if info.input_shape[0] > 0 else [])})
    rng = np.random.default_rng(0)
    windows = rng.uniform(-1.0, 1.0, (max(candidates), info.window_length, info.features)).astype(np.float32)
    try:
        single = np.concatenate([_run(content, info, windows[i : i + 1]) for i in range(len(windows))])
    except (ValueError, RuntimeError) as exc:
        raise ImportRefused(f"LiteRT cannot run the model on one window: {_short(exc)}") from None
    if not np.isfinite(single).all():
        raise ImportRefused("the model answers non-finite numbers on ordinary windows")
    info.elements = single.shape[1]
    scale = max(1.0, float(np.max(np.abs(single))))
    working = []
    for size in candidates:
        try:
            result = _run(content, info, windows[:size])
        except (ValueError, RuntimeError) as exc:
            info.probe[str(size)] = f"fails: {_short(exc)[:160]}"
            continue
        worst = float(np.max(np.abs(result - single[:size]))) if result.shape == single[:size].shape else np.inf
        if worst <= TOLERANCE * scale:
            info.probe[str(size)] = "ok"
            working.append(size)
        else:
            info.probe[str(size)] = f"runs, but answers differ from batch 1 by {worst:.3g}"
    if not working:
        raise ImportRefused(f"the model runs at none of the batch sizes {candidates}: {info.probe}")
    # Every size runs and agrees: dynamic, even where the file's signature says a fixed batch.
    info.batch_sizes = "dynamic" if working == candidates else working


def forecast_spec(text: str | None, info: Inspection) -> ForecastSpec:
    """`--forecast-output` over the output numbers of one window: START or START:STOP."""
    if text is None:
        if info.elements == 1:
            return ForecastSpec()
        raise ImportRefused(
            f"the model answers {info.elements} numbers per window (output {info.output_name} "
            f"{info.output_shape}); say which are the forecast with --forecast-output: 0 (the first, one step; "
            f"what the original tutorial used), -1 (the last, one step) or 0:{info.elements} (a horizon of "
            f"{info.elements} steps, step 1 first)"
        )
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise ImportRefused(f"--forecast-output {text!r}: expected START or START:STOP, e.g. 0, -1 or 0:6") from None
    if len(parts) == 1:
        spec = ForecastSpec(start=parts[0], horizon=1)
    elif len(parts) == 2 and parts[1] > parts[0] >= 0:
        spec = ForecastSpec(start=parts[0], horizon=parts[1] - parts[0])
    else:
        raise ImportRefused(f"--forecast-output {text!r}: expected START or START:STOP with 0 <= START < STOP")
    try:
        spec.stop(info.elements)
    except ValueError as exc:
        raise ImportRefused(f"--forecast-output {text!r}: {exc}") from None
    return spec


def _litert_version() -> str:
    try:
        return dist_metadata.version("ai-edge-litert")
    except dist_metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def build_metadata(options: ImportOptions, info: Inspection, spec: ForecastSpec, content: bytes) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "name": options.name,
        "model_type": "imported",
        "window_length": info.window_length,
        "features": info.features,
        "target": "next_value" if spec.horizon == 1 else "next_values",
        "input_order": options.input_order,
        "batch_sizes": info.batch_sizes,
        "forecast": spec.model_dump(),
        "input_name": info.input_name,
        "output_name": info.output_name,
        "input_shape": info.input_shape,
        "output_shape": info.output_shape,
        "normalization": options.normalization.to_dict(),
        "files": {"tflite": TFLITE_FILE},
        "tflite": {"ops": info.ops, "size_bytes": len(content), "output_numbers_per_window": info.elements},
        "source": {
            "file": str(options.model_file),
            "sha256": hashlib.sha256(content).hexdigest(),
            "batch_probe": info.probe,
        },
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "litert_version": _litert_version(),
    }


def import_model(options: ImportOptions) -> tuple[Path, int, dict[str, Any]]:
    """Inspect, probe and publish; returns (version folder, version, metadata written)."""
    try:
        content = options.model_file.read_bytes()
    except OSError as exc:
        raise ImportRefused(f"{options.model_file}: cannot read: {exc.strerror or exc}") from None
    export.check_repository(options.repository, options.name)
    info = inspect(content, options)
    probe(content, info)
    spec = forecast_spec(options.forecast, info)
    draft = build_metadata(options, info, spec, content)
    try:
        ModelMetadata.model_validate(draft)
    except ValidationError as exc:  # pragma: no cover - the checks above come first
        raise ImportRefused(f"metadata would not validate: {exc}") from None
    written: dict[str, Any] = {}

    def fill(directory: Path) -> None:
        (directory / TFLITE_FILE).write_bytes(content)

    def finalize(directory: Path, version: int) -> None:
        written.clear()
        written.update({**draft, "version": version})
        export.write_json(directory / METADATA_FILE, written)

    version_dir, version = export.publish(options.repository, options.name, fill, finalize)
    return version_dir, version, dict(written)
