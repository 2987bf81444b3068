"""Fixtures of the reliability suite (workers as subprocesses, real Mosquitto)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving import copy_model_repository


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A private copy of the shipped lstm and ann models."""
    return copy_model_repository(tmp_path / "models")
