"""Error types of :mod:`ml_training`.

Every expected failure (bad input data, bad options, a failed export) raises a subclass of
:class:`TrainingError`. The command line catches exactly this type, prints its message
without a traceback and exits with :data:`EXIT_USAGE`.
"""

from __future__ import annotations

EXIT_USAGE = 2
"""Exit status for bad input or options (the same status argparse uses)."""


class TrainingError(Exception):
    """Root of all expected ml_training errors; the message is shown to the user as is."""


class DataError(TrainingError):
    """The input data is missing, malformed or insufficient."""


class OptionsError(TrainingError):
    """A combination of options is invalid."""


class ExportError(TrainingError):
    """The trained model could not be written into the model repository."""
