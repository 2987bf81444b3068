"""TFLite model runtime on LiteRT. Knows nothing of MQTT or tenants.

Thread contract: a LoadedModel is built and warmed on one thread, then used by exactly one
serving thread at a time (TFLite interpreters are not thread-safe).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server_app.errors import ModelLoadError

try:  # LiteRT first: tflite-runtime's last release breaks under NumPy 2.
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - exercised only where LiteRT is absent
    from tflite_runtime.interpreter import Interpreter

METADATA_FILE = "metadata.json"
SUPPORTED_FORMAT_VERSIONS = (1,)


class Normalization(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    method: str = "tutorial"
    offset: float
    scale: float

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if not np.isfinite(value) or value == 0:
            raise ValueError("scale must be finite and non-zero")
        return value


class ModelFiles(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    tflite: str = "model.tflite"


class ModelMetadata(BaseModel):
    """The part of metadata.json the server relies on; the trainer writes more."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int
    name: str
    window_length: int = Field(gt=0)
    features: int = Field(gt=0)
    normalization: Normalization
    files: ModelFiles = Field(default_factory=ModelFiles)

    @field_validator("format_version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value not in SUPPORTED_FORMAT_VERSIONS:
            raise ValueError(f"unsupported format_version {value}")
        return value


def _bucket_sizes(max_batch: int) -> list[int]:
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    return sizes


class LoadedModel:
    """One version of one model: an interpreter per batch-size bucket, tensors allocated once.

    Batches are padded up to the next bucket (1, 2, 4, ... max_batch), so a worker keeps a
    handful of pre-allocated interpreters instead of resizing tensors on every call.
    """

    def __init__(self, name: str, version: int, metadata: ModelMetadata, model_bytes: bytes, max_batch: int) -> None:
        self.name = name
        self.version = version
        self.metadata = metadata
        self.max_batch = max_batch
        self._offset = np.float32(metadata.normalization.offset)
        self._scale = np.float32(metadata.normalization.scale)
        self._buckets = _bucket_sizes(max_batch)
        self._interpreters: dict[int, Any] = {}
        self._io: dict[int, tuple[int, int]] = {}
        for size in self._buckets:
            self._interpreters[size], self._io[size] = self._build(model_bytes, size)

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.metadata.window_length, self.metadata.features

    def _build(self, model_bytes: bytes, batch: int) -> tuple[Any, tuple[int, int]]:
        try:
            interpreter = Interpreter(model_content=model_bytes, num_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.name}/{self.version}: not a valid TFLite model: {exc}") from exc
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{self.name}/{self.version}: expected one input and one output tensor")
        signature = [int(d) for d in inputs[0].get("shape_signature", inputs[0]["shape"])]
        expected = [self.metadata.window_length, self.metadata.features]
        if len(signature) != 3 or signature[1:] != expected:
            raise ModelLoadError(
                f"{self.name}/{self.version}: model input {signature} disagrees with metadata "
                f"[batch, {expected[0]}, {expected[1]}]"
            )
        if signature[0] not in (-1, batch) and batch != 1:
            raise ModelLoadError(f"{self.name}/{self.version}: model input has a fixed batch size {signature[0]}")
        if inputs[0]["dtype"] != np.float32:
            raise ModelLoadError(f"{self.name}/{self.version}: model input must be float32")
        try:
            interpreter.resize_tensor_input(inputs[0]["index"], [batch, *expected], strict=False)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.name}/{self.version}: cannot allocate batch {batch}: {exc}") from exc
        return interpreter, (inputs[0]["index"], outputs[0]["index"])

    def warm_up(self) -> None:
        """One real invoke per bucket, so the first request does not pay for lazy init."""
        for size in self._buckets:
            window = np.zeros((size, *self.window_shape), dtype=np.float32)
            result = self._invoke(window)
            if result.shape[0] != size or not np.isfinite(result).all():
                raise ModelLoadError(f"{self.name}/{self.version}: warm-up produced {result.shape} / non-finite output")

    def _invoke(self, padded: np.ndarray) -> np.ndarray:
        size = padded.shape[0]
        interpreter = self._interpreters[size]
        input_index, output_index = self._io[size]
        interpreter.set_tensor(input_index, padded)
        interpreter.invoke()
        out: np.ndarray = interpreter.get_tensor(output_index)
        return out.reshape(size, -1)

    def predict_normalized(self, windows: np.ndarray) -> np.ndarray:
        """windows [n, window_length, features] normalised -> forecasts [n, outputs] normalised."""
        count = windows.shape[0]
        results: list[np.ndarray] = []
        for start in range(0, count, self.max_batch):
            chunk = windows[start : start + self.max_batch]
            size = next(b for b in self._buckets if b >= chunk.shape[0])
            if size != chunk.shape[0]:
                padded = np.zeros((size, *self.window_shape), dtype=np.float32)
                padded[: chunk.shape[0]] = chunk
            else:
                padded = np.ascontiguousarray(chunk, dtype=np.float32)
            results.append(self._invoke(padded)[: chunk.shape[0]])
        return results[0] if len(results) == 1 else np.concatenate(results)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self._offset) / self._scale

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        return normalized * self._scale + self._offset

    def predict(self, windows_raw: np.ndarray) -> np.ndarray:
        """Raw readings [n, window_length, features] -> raw forecasts [n] (first output)."""
        return self.denormalize(self.predict_normalized(self.normalize(windows_raw.astype(np.float32))))[:, 0]


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
    try:
        version = int(version_dir.name)
    except ValueError:
        raise ModelLoadError(f"{version_dir}: version folder name must be a positive integer") from None
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
