"""Seed the models volume from the models shipped in the image (init container).

    python /scripts/seed_models.py /app/models /models

For each model folder in the image (``/app/models/<name>/``), if the volume has no
complete version of that model yet (``/models/<name>/<N>/metadata.json``), copy every
shipped version. A model that already has a version on the volume is left alone, so an
operator's own versions (and deletions) survive pod restarts.

Each version is copied into a dot-named temporary folder next to its final place and
renamed into place, the same protocol as ``ml_training`` and ``kubectl cp`` roll-outs:
workers polling the volume never see a half-copied version, and two pods seeding at
the same time cannot both win (the second rename fails and its copy is removed).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from contract.model_format import TEMP_PREFIX, version_folders


def complete_versions(model_dir: Path) -> list[str]:
    """Complete version folders (the contract's rule: integer name, metadata.json present)."""
    return [folder.name for _, folder in version_folders(model_dir)]


def seed(source: Path, target: Path) -> list[str]:
    """Copy shipped versions of models that have none on the target; return what was added."""
    added: list[str] = []
    if not source.is_dir():
        print(f"seed-models: no shipped models at {source}; nothing to seed", flush=True)
        return added
    tag = f"{socket.gethostname()}-{os.getpid()}"
    for model in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        destination = target / model.name
        existing = complete_versions(destination)
        if existing:
            print(f"seed-models: {model.name}: volume has versions {existing}; left alone", flush=True)
            continue
        destination.mkdir(parents=True, exist_ok=True)
        for version in complete_versions(model):
            temporary = destination / f"{TEMP_PREFIX}seed-{tag}-{version}"
            shutil.copytree(model / version, temporary)
            try:
                os.rename(temporary, destination / version)
            except OSError:  # another pod renamed its copy first
                shutil.rmtree(temporary, ignore_errors=True)
                continue
            added.append(f"{model.name}/{version}")
            print(f"seed-models: added {model.name}/{version}", flush=True)
    return added


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: seed_models.py SHIPPED_MODELS_DIR VOLUME_DIR", file=sys.stderr)
        return 2
    seed(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
