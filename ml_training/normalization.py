"""Affine normalisation fitted on the training span only.

Both methods are stored the same way, as ``offset`` and ``scale``::

    normalized = (raw - offset) / scale
    raw = normalized * scale + offset

* ``tutorial``: the original tutorial's ``(value - mean) / max(value - mean)``, i.e.
  ``offset = mean``, ``scale = max(value) - mean`` (so the training maximum maps to 1);
* ``zscore``: ``offset = mean``, ``scale = standard deviation`` (population, ddof = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ml_training.errors import DataError

Method = Literal["tutorial", "zscore"]
METHODS: tuple[Method, ...] = ("tutorial", "zscore")
FORMULA = "normalized = (raw - offset) / scale"


@dataclass(frozen=True)
class Normalization:
    method: Method
    offset: float
    scale: float

    @staticmethod
    def fit(method: Method, values: np.ndarray) -> Normalization:
        """Fit on the training span's values."""
        data = np.asarray(values, dtype=np.float64)
        if data.size == 0:
            raise DataError("cannot fit the normalisation: no training values")
        mean = float(data.mean())
        if method == "tutorial":
            scale = float(data.max()) - mean
        elif method == "zscore":
            scale = float(data.std())
        else:  # pragma: no cover - argparse restricts the choices
            raise DataError(f"unknown normalisation {method!r}; choose from {METHODS}")
        if not (math.isfinite(scale) and scale > 1e-12 * max(1.0, abs(mean))):
            raise DataError(
                f"cannot normalise: the training span is constant (every value is "
                f"{mean:g}), so there is nothing to learn; use more or other data"
            )
        return Normalization(method=method, offset=mean, scale=scale)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, dtype=np.float64) - self.offset) / self.scale

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        return np.asarray(normalized, dtype=np.float64) * self.scale + self.offset

    def to_dict(self) -> dict[str, object]:
        """The ``normalization`` section of metadata.json."""
        return {
            "method": self.method,
            "offset": self.offset,
            "scale": self.scale,
            "formula": FORMULA,
        }
