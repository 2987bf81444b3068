"""Training of the forecasting models served by the inference service.

``python -m ml_training --help`` trains an LSTM or ANN on CSV files in the BTS schema
(``station_id, parameter_id, reading_time, value``) and writes a new version into the model
repository (``models/<name>/<version>/``). ``python -m ml_training.synth --help`` generates
sample data in that schema.

This package imports nothing heavy at import time: TensorFlow is imported only when a model
is built, so ``--help`` and input validation stay fast.
"""

from ml_training.errors import DataError, ExportError, OptionsError, TrainingError

__all__ = ["DataError", "ExportError", "OptionsError", "TrainingError"]
