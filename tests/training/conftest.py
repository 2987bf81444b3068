"""Fixtures of the ml_training tests.

- ``tiny_csv``: small generated BTS-schema data (2 stations, 4 days), once per session.
- ``make_options``: factory for :class:`ml_training.cli.Options` of a tiny, fast training
  run (resample 300 s, 2 epochs) on ``tiny_csv`` into a given repository.
- ``trained``: one tiny model per type (parametrized over ``lstm`` and ``ann``), trained
  in-process once per session into its own repository and reused by every test.
- ``snapshot``: every path under a folder (to assert a repository is unchanged).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ml_training.cli import Options, TrainingResult, run
from ml_training.synth import SynthOptions, generate, write_csv

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_SYNTH = SynthOptions(stations=2, days=4, seed=7)
MakeOptions = Callable[..., Options]


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    write_csv(generate(TINY_SYNTH), path)
    return path


@pytest.fixture(scope="session")
def make_options(tiny_csv: Path) -> MakeOptions:
    def factory(repository: Path, model: str = "ann", **overrides: Any) -> Options:
        settings: dict[str, Any] = {
            "data": (tiny_csv,),
            "model": model,
            "repository": repository,
            "resample": 300.0,
            "epochs": 2,
            "patience": 0,
            "seed": 3,
            "quiet": True,
        }
        settings.update(overrides)
        return Options(**settings)

    return factory


@pytest.fixture(scope="session", params=["lstm", "ann"])
def trained(
    request: pytest.FixtureRequest, make_options: MakeOptions, tmp_path_factory: pytest.TempPathFactory
) -> TrainingResult:
    repository = tmp_path_factory.mktemp(f"repo-{request.param}")
    return run(make_options(repository, model=request.param))


def snapshot_of(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def snapshot() -> Callable[[Path], set[str]]:
    return snapshot_of
