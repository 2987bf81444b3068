"""The model repository on disk: `<repository>/<version>/` folders (rule: :mod:`contract.model_format`).

Trainers write a version into a dot-named temporary folder and rename it into place, so a
folder with an integer name is complete; anything else (".tmp-...", "3.partial") is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contract.model_format import METADATA_FILE, is_version_name


@dataclass(frozen=True, slots=True)
class VersionFolder:
    version: int
    path: Path
    stamp: float  # mtime of metadata.json: a changed stamp means "try loading again"


def list_versions(repository: Path) -> list[VersionFolder]:
    """Complete version folders, ascending; a missing repository has none."""
    found: list[VersionFolder] = []
    try:
        entries = list(repository.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not is_version_name(entry.name):
            continue
        try:
            stamp = (entry / METADATA_FILE).stat().st_mtime
        except OSError:
            continue  # no metadata.json (yet): not a complete version
        found.append(VersionFolder(int(entry.name), entry, stamp))
    return sorted(found, key=lambda folder: folder.version)
