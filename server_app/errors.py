"""Server-side failures that are not answers to a request (request errors: contract.errors)."""

from __future__ import annotations

from contract.settings import ConfigError

__all__ = ["ConfigError", "ModelLoadError"]


class ModelLoadError(Exception):
    """A model version could not be loaded; the previous version keeps serving."""
