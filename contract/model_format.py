"""The model-format contract: version folders, `metadata.json`, normalisation. One home.

Written by the trainer (`ml_training`) and the import command (`python -m ml_training import`),
read by the server (`server_app.runtime`, `server_app.repository`) and the seeding tool.

**Version folders.** `<repository>/<name>/<version>/`, version a positive integer without
leading zeros. A folder is complete when it has `metadata.json`. Writers assemble a version in
a dot-named temporary folder (`.tmp-...`) beside its final place and rename it into place, so
readers see no version or a complete one; names that are not versions are ignored.

**Normalisation.** `normalized = (raw - offset) / scale`, `raw = normalized * scale + offset`:
`tutorial` (offset = mean, scale = max - mean, as the original tutorial), `zscore` (offset =
mean, scale = population std) or `identity` (offset 0, scale 1: the model takes raw readings).

**The model's contract** (fields an imported model states; their defaults are what the trainer
has always written, so old metadata keeps its meaning):

* `input_order`: `oldest_first` (our trainer) or `newest_first` (the original tutorial's models,
  trained on `[norm_1 .. norm_N]`). Windows travel oldest first on the wire; the server reverses
  them for a newest-first model.
* `batch_sizes`: `"dynamic"` (any batch size: the server batches up to its max_batch) or the
  list of batch sizes the model runs (e.g. `[1]` for a converted LSTM with a `WHILE` loop): the
  server then runs one invoke per listed size, padding the last one.
* `forecast`: which elements of the output tensor, read per window as a flat row-major vector,
  are the forecast: `start` (negative counts from the end, -1 = the last element) and `horizon`
  (H steps, step 1 first). The server answers `[n, H]`.
* `input_name` / `output_name`: the tensors to use when the file has several (`output_name`
  picks the forecast output); `input_shape` / `output_shape`: signatures the file must match
  (-1 = any size).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METADATA_FILE = "metadata.json"
TFLITE_FILE = "model.tflite"
TEMP_PREFIX = ".tmp-"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
VERSION_DIR_RE = re.compile(r"^[1-9][0-9]{0,8}$")

NormalizationMethod = Literal["tutorial", "zscore", "identity"]
NORMALIZATION_METHODS: tuple[NormalizationMethod, ...] = ("tutorial", "zscore", "identity")
FITTED_METHODS: tuple[NormalizationMethod, ...] = ("tutorial", "zscore")
FORMULA = "normalized = (raw - offset) / scale"
InputOrder = Literal["oldest_first", "newest_first"]
INPUT_ORDERS: tuple[InputOrder, ...] = ("oldest_first", "newest_first")


# --------------------------------------------------------------------------- version folders


def is_version_name(name: str) -> bool:
    """`1`, `2`, ... `999999999`; not `01`, `0`, `.tmp-x`, `3.partial`."""
    return VERSION_DIR_RE.match(name) is not None


def version_folders(model_dir: Path) -> list[tuple[int, Path]]:
    """Complete version folders of one model (they have metadata.json), ascending."""
    try:
        entries = list(Path(model_dir).iterdir())
    except OSError:
        return []
    found = [(int(e.name), e) for e in entries if is_version_name(e.name) and (e / METADATA_FILE).is_file()]
    return sorted(found)


def taken_versions(model_dir: Path) -> list[int]:
    """Every version number in use, complete or not (a writer must not reuse any of them)."""
    try:
        entries = list(Path(model_dir).iterdir())
    except OSError:
        return []
    return sorted(int(e.name) for e in entries if is_version_name(e.name) and e.is_dir())


# --------------------------------------------------------------------------- normalisation


class Normalization(BaseModel):
    """`normalized = (raw - offset) / scale`; float32 in, float32 out (float64 likewise)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: NormalizationMethod = "tutorial"
    offset: float
    scale: float
    formula: str = FORMULA

    @field_validator("offset")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("offset must be finite")
        return value

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError("scale must be finite and non-zero")
        return value

    @model_validator(mode="after")
    def _identity_is_identity(self) -> Normalization:
        if self.method == "identity" and (self.offset != 0 or self.scale != 1):
            raise ValueError("identity normalisation has offset 0 and scale 1")
        return self

    @staticmethod
    def identity() -> Normalization:
        return Normalization(method="identity", offset=0.0, scale=1.0)

    @staticmethod
    def fit(method: NormalizationMethod, values: np.ndarray) -> Normalization:
        """Fit on the training span's values; ValueError when there is nothing to fit."""
        if method == "identity":
            return Normalization.identity()
        if method not in FITTED_METHODS:
            raise ValueError(f"unknown normalisation {method!r}; choose from {NORMALIZATION_METHODS}")
        data = np.asarray(values, dtype=np.float64)
        if data.size == 0:
            raise ValueError("cannot fit the normalisation: no training values")
        mean = float(data.mean())
        scale = float(data.max()) - mean if method == "tutorial" else float(data.std())
        if not (math.isfinite(scale) and scale > 1e-12 * max(1.0, abs(mean))):
            raise ValueError(
                f"cannot normalise: the training span is constant (every value is "
                f"{mean:g}), so there is nothing to learn; use more or other data"
            )
        return Normalization(method=method, offset=mean, scale=scale)

    # Python floats are "weak" scalars (NumPy 2): float32 arrays stay float32, float64 stay float64.
    def normalize(self, raw: np.ndarray) -> np.ndarray:
        result: np.ndarray = (_floats(raw) - self.offset) / self.scale
        return result

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        result: np.ndarray = _floats(normalized) * self.scale + self.offset
        return result

    def to_dict(self) -> dict[str, Any]:
        """The `normalization` section of metadata.json."""
        return self.model_dump()


def _floats(values: np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray) and (values.dtype == np.float32 or values.dtype == np.float64):
        return values
    array = np.asarray(values)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


# --------------------------------------------------------------------------- metadata.json


class ModelFiles(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    tflite: str = TFLITE_FILE


class ForecastSpec(BaseModel):
    """Which elements of the output (per window, flattened) are the forecast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(0, description="first forecast element; negative counts from the end (-1: the last)")
    horizon: int = Field(1, gt=0, description="forecast steps H; the answer is [n, H], step 1 first")

    def stop(self, elements: int) -> int:
        """End of the slice for an output of `elements` numbers per window (ValueError if it does not fit)."""
        start = self.start + elements if self.start < 0 else self.start
        if start < 0 or start + self.horizon > elements:
            raise ValueError(
                f"forecast elements start {self.start}, horizon {self.horizon} do not fit an output of "
                f"{elements} number(s) per window"
            )
        return start + self.horizon

    def first(self, elements: int) -> int:
        return self.stop(elements) - self.horizon


class TrainingTimeRange(BaseModel):
    """`data.time_range`: which readings a trained version saw (`--since/--until/--last`).

    All times are ISO 8601 UTC. `since` (inclusive) and `until` (exclusive) are the bounds
    applied, `null` when open; with `--last`, `since` is the bound it resolved to and `last`
    the duration as given (e.g. `7d`). `first_reading` / `last_reading`: the readings used;
    `data_first_reading` / `data_last_reading`: the span of the selected parameter and
    stations in the input files, before the range.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    since: datetime | None = None
    until: datetime | None = None
    last: str | None = None
    first_reading: datetime
    last_reading: datetime
    data_first_reading: datetime | None = None
    data_last_reading: datetime | None = None


class TrainingData(BaseModel):
    """`data`: what a version was trained on (files, stations, spans...; kept as extra).

    Only `time_range` is read by others; metadata written before it existed, and imported
    models (no `data` section), stay valid.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    time_range: TrainingTimeRange | None = None


class ModelMetadata(BaseModel):
    """`metadata.json`. The server relies on the fields below; writers add more (kept as extra)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int = FORMAT_VERSION
    name: str
    window_length: int = Field(gt=0)
    features: int = Field(1, gt=0)
    normalization: Normalization
    files: ModelFiles = Field(default_factory=ModelFiles)
    input_order: InputOrder = "oldest_first"
    batch_sizes: Literal["dynamic"] | list[int] = "dynamic"
    forecast: ForecastSpec = Field(default_factory=ForecastSpec)
    input_name: str | None = None
    output_name: str | None = None
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    data: TrainingData | None = None

    @field_validator("format_version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value not in SUPPORTED_FORMAT_VERSIONS:
            raise ValueError(f"unsupported format_version {value} (this version reads {SUPPORTED_FORMAT_VERSIONS})")
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, value: Literal["dynamic"] | list[int]) -> Literal["dynamic"] | list[int]:
        if isinstance(value, list):
            if not value or any(size < 1 for size in value):
                raise ValueError('batch_sizes is "dynamic" or a non-empty list of positive batch sizes')
            return sorted(set(value))
        return value

    @property
    def horizon(self) -> int:
        return self.forecast.horizon

    @property
    def batch_sizes_stated(self) -> bool:
        return "batch_sizes" in self.model_fields_set


def shape_matches(actual: list[int], declared: list[int]) -> bool:
    """Same rank, and every dimension equal where both are known (-1 or None: any size)."""
    return len(actual) == len(declared) and all(a == d or a < 0 or d < 0 for a, d in zip(actual, declared, strict=True))


__all__ = [
    "FORECAST_DEFAULT",
    "FORMAT_VERSION",
    "FORMULA",
    "INPUT_ORDERS",
    "METADATA_FILE",
    "NORMALIZATION_METHODS",
    "TEMP_PREFIX",
    "TFLITE_FILE",
    "ForecastSpec",
    "InputOrder",
    "ModelFiles",
    "ModelMetadata",
    "Normalization",
    "NormalizationMethod",
    "TrainingData",
    "TrainingTimeRange",
    "is_version_name",
    "shape_matches",
    "taken_versions",
    "version_folders",
]

FORECAST_DEFAULT = ForecastSpec()
