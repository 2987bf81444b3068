"""TFLite model runtime on LiteRT. Knows nothing of MQTT or tenants.

A version folder's `metadata.json` (schema: :mod:`contract.model_format`) states the model's
contract and this module honours it, so the data plane never special-cases a model:

* batch sizes: a `"dynamic"` model gets one interpreter per bucket 1, 2, 4, ... max_batch and
  batches are padded to the next bucket; a model that runs only at fixed sizes (`[1]`) gets
  those, and a batch of n windows becomes ceil(n / size) invokes;
* input order: windows arrive oldest first; a `newest_first` model gets them reversed;
* forecast: the chosen elements of the chosen output, `[n, horizon]`.

Thread contract: a LoadedModel is built and warmed on one thread, then used by exactly one
serving thread at a time (TFLite interpreters are not thread-safe).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from contract.model_format import METADATA_FILE, ModelMetadata, Normalization, is_version_name, shape_matches
from server_app.errors import ModelLoadError

try:  # LiteRT first: tflite-runtime's last release breaks under NumPy 2.
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - exercised only where LiteRT is absent
    from tflite_runtime.interpreter import Interpreter

__all__ = ["METADATA_FILE", "LoadedModel", "ModelMetadata", "Normalization", "load_model_version", "read_metadata"]

BATCH_HINT = (
    'if the model only runs at fixed batch sizes, state them in metadata.json ("batch_sizes": [1]; '
    "`python -m ml_training import` probes them) or set models.<name>.max_batch: 1 in the server config"
)
CONSISTENCY_TOLERANCE = 1e-4


def _bucket_sizes(max_batch: int) -> list[int]:
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    return sizes


@dataclass(frozen=True, slots=True)
class _Slot:
    """One interpreter allocated for one batch size."""

    interpreter: Any
    input_index: int
    output_index: int
    input_shape: tuple[int, ...]


def _pick(details: list[dict[str, Any]], name: str | None, what: str, field: str) -> dict[str, Any]:
    if name is not None:
        for detail in details:
            if detail["name"] == name:
                return detail
        names = [str(d["name"]) for d in details]
        raise ValueError(f"metadata {field} {name!r} names no {what} tensor of the model (it has {names})")
    if len(details) != 1:
        names = [str(d["name"]) for d in details]
        raise ValueError(f"the model has {len(details)} {what} tensors {names}; name the one to use in {field}")
    return details[0]


class LoadedModel:
    """One version of one model: an interpreter per batch size, tensors allocated once."""

    def __init__(self, name: str, version: int, metadata: ModelMetadata, model_bytes: bytes, max_batch: int) -> None:
        self.name = name
        self.version = version
        self.metadata = metadata
        self.normalization: Normalization = metadata.normalization
        self._label = f"{name}/{version}"
        self._reverse = metadata.input_order == "newest_first"
        self._horizon = metadata.forecast.horizon
        self._first = 0
        self._stop = self._horizon  # fixed at warm-up, once the output size per window is known
        self._model_bytes = model_bytes
        input_tail, self._signature_batch = self._inspect()
        self.batch_sizes = self._sizes(max_batch)
        self.max_batch = max_batch  # what the caller asked for (reuse key)
        self.invoke_batch = self.batch_sizes[-1]  # most windows one invoke takes
        self._slots = {size: self._build(size, input_tail) for size in self.batch_sizes}
        self._model_bytes = b""

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.metadata.window_length, self.metadata.features

    @property
    def horizon(self) -> int:
        return self._horizon

    # -- loading -----------------------------------------------------------------------
    def _interpreter(self) -> Any:
        try:
            return Interpreter(model_content=self._model_bytes, num_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self._label}: not a valid TFLite model: {exc}") from exc

    def _tensors(self, interpreter: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            inp = _pick(interpreter.get_input_details(), self.metadata.input_name, "input", "input_name")
            out = _pick(interpreter.get_output_details(), self.metadata.output_name, "output", "output_name")
        except ValueError as exc:
            raise ModelLoadError(f"{self._label}: {exc}") from None
        return inp, out

    def _inspect(self) -> tuple[tuple[int, ...], int]:
        """Check the input against the metadata; returns the input's non-batch shape and its batch dimension."""
        interpreter = self._interpreter()
        if len(interpreter.get_input_details()) != 1:
            names = [str(d["name"]) for d in interpreter.get_input_details()]
            raise ModelLoadError(f"{self._label}: the model has {len(names)} inputs {names}; the server feeds one")
        inp, out = self._tensors(interpreter)
        if inp["dtype"] != np.float32:
            raise ModelLoadError(f"{self._label}: model input must be float32, not {np.dtype(inp['dtype']).name}")
        signature = [int(d) for d in inp.get("shape_signature", inp["shape"])]
        length, features = self.window_shape
        if signature[1:] in ([length, features], [length * features]):
            tail: tuple[int, ...] = tuple(signature[1:])
        elif signature[1:] in ([-1, features], [length, -1], [-1, -1]) and len(signature) == 3:
            tail = (length, features)
        else:
            raise ModelLoadError(
                f"{self._label}: model input {signature} disagrees with metadata [batch, {length}, {features}]"
            )
        for declared, tensor, field in ((self.metadata.input_shape, inp, "input_shape"),
                                        (self.metadata.output_shape, out, "output_shape")):
            actual = [int(d) for d in tensor.get("shape_signature", tensor["shape"])]
            if declared is not None and not shape_matches(actual, declared):
                raise ModelLoadError(f"{self._label}: metadata {field} {declared} disagrees with the model's {actual}")
        return tail, signature[0]

    def _sizes(self, max_batch: int) -> list[int]:
        stated = self.metadata.batch_sizes
        if stated == "dynamic" and not self.metadata.batch_sizes_stated and self._signature_batch > 0:
            stated = [self._signature_batch]  # a fixed input batch and nothing said: take the file's word
        if stated == "dynamic":
            return _bucket_sizes(max_batch)
        fitting = [size for size in stated if size <= max_batch]
        return fitting or [stated[0]]

    def _build(self, batch: int, tail: tuple[int, ...]) -> _Slot:
        interpreter = self._interpreter()
        inp, out = self._tensors(interpreter)
        shape = (batch, *tail)
        try:
            interpreter.resize_tensor_input(inp["index"], list(shape), strict=False)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(self._batch_problem(batch, f"cannot allocate it: {exc}")) from exc
        return _Slot(interpreter, int(inp["index"]), int(out["index"]), shape)

    def _batch_problem(self, batch: int, what: str) -> str:
        message = f"{self._label}: batch size {batch}: {what}"
        return f"{message}; {BATCH_HINT}" if batch > 1 else message

    def warm_up(self) -> None:
        """A real invoke per batch size (so the first request pays no lazy init), checking that
        the forecast elements exist and that batching does not change any window's answer."""
        rng = np.random.default_rng(0)
        largest = self.batch_sizes[-1]
        windows = rng.uniform(-1.0, 1.0, (largest, *self.window_shape)).astype(np.float32)
        outputs: dict[int, np.ndarray] = {}
        for size in self.batch_sizes:
            try:
                result = self._invoke(size, windows[:size])
            except (ValueError, RuntimeError) as exc:
                raise ModelLoadError(self._batch_problem(size, f"invoke failed: {exc}")) from exc
            if result.shape[0] != size or not np.isfinite(result).all():
                raise ModelLoadError(
                    self._batch_problem(size, f"warm-up produced shape {list(result.shape)} or non-finite numbers")
                )
            outputs[size] = result
        elements = {result.shape[1] for result in outputs.values()}
        if len(elements) != 1:
            raise ModelLoadError(f"{self._label}: output numbers per window change with the batch size: {elements}")
        count = elements.pop()
        try:
            self._stop = self.metadata.forecast.stop(count)
        except ValueError as exc:
            raise ModelLoadError(f"{self._label}: {exc}") from None
        self._first = self._stop - self._horizon
        if self.batch_sizes[0] == 1 and largest > 1:
            single = np.concatenate([self._invoke(1, windows[i : i + 1]) for i in range(largest)])
            for size, result in outputs.items():
                worst = float(np.max(np.abs(result - single[:size])))
                if not worst <= CONSISTENCY_TOLERANCE * max(1.0, float(np.max(np.abs(single)))):
                    raise ModelLoadError(
                        self._batch_problem(size, f"the model answers {worst:.3g} away from its batch-1 answers")
                    )

    # -- serving -------------------------------------------------------------------------
    def _invoke(self, size: int, windows: np.ndarray) -> np.ndarray:
        """Up to `size` windows (normalised, in the model's order) -> all outputs [count, elements]."""
        slot = self._slots[size]
        count = windows.shape[0]
        if count != size:
            padded = np.zeros((size, *self.window_shape), dtype=np.float32)
            padded[:count] = windows
        else:
            padded = np.ascontiguousarray(windows, dtype=np.float32)
        slot.interpreter.set_tensor(slot.input_index, padded.reshape(slot.input_shape))
        slot.interpreter.invoke()
        out: np.ndarray = slot.interpreter.get_tensor(slot.output_index)
        return out.reshape(size, -1)[:count]

    def predict_normalized(self, windows: np.ndarray) -> np.ndarray:
        """windows [n, window_length, features] normalised, oldest first -> forecasts [n, horizon] normalised."""
        if self._reverse:
            windows = windows[:, ::-1]
        count = windows.shape[0]
        if count == 0:
            return np.zeros((0, self._horizon), dtype=np.float32)
        step = self.invoke_batch
        results: list[np.ndarray] = []
        for start in range(0, count, step):
            chunk = windows[start : start + step]
            size = next(b for b in self.batch_sizes if b >= chunk.shape[0])
            results.append(self._invoke(size, chunk)[:, self._first : self._stop])
        return results[0] if len(results) == 1 else np.concatenate(results)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.normalization.normalize(raw)

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        return self.normalization.denormalize(normalized)

    def predict(self, windows_raw: np.ndarray) -> np.ndarray:
        """Raw readings [n, window_length, features] -> raw forecasts [n] (one step) or [n, horizon]."""
        forecasts = self.denormalize(self.predict_normalized(self.normalize(windows_raw.astype(np.float32))))
        return forecasts[:, 0] if self._horizon == 1 else forecasts


def read_metadata(version_dir: Path) -> ModelMetadata:
    path = version_dir / METADATA_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ModelMetadata.model_validate(raw)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ModelLoadError(f"{path}: {problems}") from exc


def load_model_version(
    version_dir: Path, name: str | None = None, max_batch: int = 64, warm: bool = True
) -> LoadedModel:
    """Load and (by default) warm one version folder `<repository>/<name>/<version>/`."""
    version_dir = Path(version_dir)
    if not is_version_name(version_dir.name):
        raise ModelLoadError(f"{version_dir}: version folder name must be a positive integer")
    version = int(version_dir.name)
    metadata = read_metadata(version_dir)
    model_path = version_dir / metadata.files.tflite
    try:
        model_bytes = model_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{model_path}: cannot read: {exc}") from exc
    model = LoadedModel(name or metadata.name, version, metadata, model_bytes, max_batch)
    if warm:
        model.warm_up()
    return model
