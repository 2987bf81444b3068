"""Model repositories and server configs for tests: private copies of the shipped models
(tests never serve the live ``models/`` folder), the server config as a dict, atomic writes."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODELS = Path(os.environ.get("TEST_SHIPPED_MODELS", REPO_ROOT / "models"))


def copy_model_repository(target: Path, names: tuple[str, ...] = ("lstm", "ann")) -> Path:
    """A private copy of the shipped models (tests add versions to it freely)."""
    for name in names:
        source = SHIPPED_MODELS / name / "1"
        assert (source / "model.tflite").is_file(), f"shipped model {source} missing: run `make models`"
        shutil.copytree(source, target / name / "1", ignore=shutil.ignore_patterns("saved_model", "*.keras", "*.png"))
    return target


def add_version(repository: Path, name: str, version: int, source_version: int = 1) -> Path:
    """Publish a copy of an existing version as a new one, atomically (temp folder + rename)."""
    temp = repository / name / f".tmp-{uuid.uuid4().hex}"
    shutil.copytree(repository / name / str(source_version), temp)
    final = repository / name / str(version)
    temp.rename(final)
    return final


def server_config_dict(
    host: str,
    port: int,
    repository: Path,
    *,
    shared_group: str | None = None,
    protocol: str = "auto",
    tenants: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A server config: lstm and ann from ``repository``, tenants acme (both) and beta (ann),
    no health port, reload polling every 0.2 s; ``sections`` update whole sections.

    The latency budget is 60 s: a test that is not about shedding must not see `overloaded`
    because a busy machine (or a model loading beside the serving thread) slowed it down; tests
    about overload set their own budget or queue bounds."""
    config: dict[str, Any] = {
        "broker": {"host": host, "port": port, "shared_group": shared_group, "protocol": protocol, "qos": 1},
        "models": models
        or {"lstm": {"repository": str(repository / "lstm")}, "ann": {"repository": str(repository / "ann")}},
        "tenants": tenants or {"acme": {"models": ["lstm", "ann"]}, "beta": {"models": ["ann"]}},
        "health": {"port": None},
        "reload": {"poll_interval_s": 0.2},
        "worker": {"latency_budget_ms": 60_000},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write atomically, as an operator's tooling (or a ConfigMap update) would."""
    temp = path.with_suffix(".tmp")
    temp.write_text(yaml.safe_dump(config))
    temp.replace(path)
    return path
