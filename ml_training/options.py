"""What one training run needs: :class:`Options` (the command line maps 1:1 onto it)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ml_training import data as data_mod
from ml_training.errors import OptionsError
from ml_training.normalization import METHODS, Method
from ml_training.time_range import TimeRange, format_duration, format_time

MODEL_TYPES = ("lstm", "ann")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True)
class Options:
    """Everything one training run needs (the command line maps 1:1 onto this)."""

    data: tuple[Path, ...]
    model: str
    repository: Path
    name: str | None = None
    stations: tuple[int, ...] = ()
    parameter: int = 122
    window: int = 6
    horizon: int = 1
    time_unit: str = "auto"
    epochs: int = 30
    batch_size: int = 64
    patience: int = 5
    learning_rate: float = 1e-3
    seed: int = 42
    normalization: Method = "tutorial"
    resample: float | None = None
    max_gap: float | None = None
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    since: float | None = None
    """Unix seconds: train on readings at or after this time (``--since``)."""
    until: float | None = None
    """Unix seconds: train on readings before this time (``--until``)."""
    last: float | None = None
    """Seconds: train on the readings in this long before the newest one (``--last``)."""
    quiet: bool = False

    @property
    def model_name(self) -> str:
        return self.name if self.name is not None else self.model

    def check(self) -> None:
        if self.model not in MODEL_TYPES:
            raise OptionsError(f"unknown model type {self.model!r}; choose from {MODEL_TYPES}")
        if not NAME_PATTERN.fullmatch(self.model_name):
            raise OptionsError(
                f"model name {self.model_name!r} is not allowed: use 1-63 characters "
                "a-z, 0-9, '_' and '-', starting with a letter or digit"
            )
        if self.normalization not in METHODS:
            raise OptionsError(f"unknown normalisation {self.normalization!r}; choose from {METHODS}")
        for label, value in (
            ("--window", self.window),
            ("--horizon", self.horizon),
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
        ):
            if value < 1:
                raise OptionsError(f"{label} must be at least 1, got {value}")
        if self.patience < 0:
            raise OptionsError(f"--patience must be 0 or more, got {self.patience}")
        if not self.learning_rate > 0:
            raise OptionsError(f"--learning-rate must be positive, got {self.learning_rate}")
        self.time_range().check()

    def time_range(self) -> TimeRange:
        return TimeRange(since=self.since, until=self.until, last=self.last)

    def data_config(self) -> data_mod.DataConfig:
        return data_mod.DataConfig(
            parameter_id=self.parameter,
            stations=self.stations,
            window=self.window,
            horizon=self.horizon,
            resample=self.resample,
            max_gap=self.max_gap,
            validation_fraction=self.validation_fraction,
            test_fraction=self.test_fraction,
        )

    def to_dict(self) -> dict[str, Any]:
        """All options, JSON-ready (the ``training`` section of metadata.json)."""
        out = asdict(self)
        out["data"] = [str(p) for p in self.data]
        out["repository"] = str(self.repository)
        out["stations"] = list(self.stations)
        out["name"] = self.model_name
        out["since"] = None if self.since is None else format_time(self.since)
        out["until"] = None if self.until is None else format_time(self.until)
        out["last"] = None if self.last is None else format_duration(self.last)
        return out

