"""Normalisation for training: the contract's :class:`contract.model_format.Normalization`,
fitted on the training span only; a span that cannot be fitted is a :class:`DataError`.

``tutorial`` is the original tutorial's ``(value - mean) / (max - mean)``; ``zscore`` is
``(value - mean) / std`` (population). The formula and its inverse live in the contract.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from contract import model_format
from contract.model_format import FORMULA
from ml_training.errors import DataError

Method = Literal["tutorial", "zscore"]
METHODS: tuple[Method, ...] = ("tutorial", "zscore")

__all__ = ["FORMULA", "METHODS", "Method", "Normalization"]


class Normalization(model_format.Normalization):
    """The contract's normalisation; :meth:`fit` raises :class:`DataError` for the trainer's CLI."""

    @staticmethod
    def fit(method: model_format.NormalizationMethod, values: np.ndarray) -> Normalization:
        try:
            fitted = model_format.Normalization.fit(method, values)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        return Normalization(**fitted.model_dump())
