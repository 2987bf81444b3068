"""The training pipeline, :func:`run`: what tests call in-process.

Load and validate the CSV files, split chronologically, fit the normalisation on the
training span, train, compare with persistence on the test span, and publish a new version
into the model repository.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.model_format import ModelMetadata
from ml_training import data as data_mod
from ml_training import evaluate
from ml_training import time_range as time_range_mod
from ml_training.errors import DataError, TrainingError
from ml_training.normalization import Normalization
from ml_training.options import Options

Write = Callable[[str], None]


@dataclass
class TrainingResult:
    """What :func:`run` produced (the Keras model is kept for tests and notebooks)."""

    version_dir: Path
    version: int
    metadata: dict[str, Any]
    model: Any
    dataset: data_mod.Dataset
    normalization: Normalization
    history: dict[str, list[float]] = field(default_factory=dict)



# --------------------------------------------------------------------------- running


def _quiet_tensorflow_logs() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold back what TensorFlow and LiteRT write to file descriptor 2 (C++ log lines).

    On success it is dropped; if the block raises, it is written to stderr before the
    error propagates, so nothing useful for a diagnosis is lost.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                text = held.read()
                if text:
                    os.write(2, text)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(options: Options, write: Write | None = None) -> TrainingResult:
    """Train, evaluate and publish one model version. ``write`` receives progress lines.

    Raises :class:`~ml_training.errors.TrainingError` on bad input, before anything is
    written to the repository.
    """
    say: Write = write if write is not None else (lambda _line: None)
    started = time.perf_counter()
    options.check()
    from ml_training import export

    export.check_repository(options.repository, options.model_name)

    readings = data_mod.load_csvs(options.data, options.time_unit)
    time_range = options.time_range()
    readings, range_record = time_range_mod.apply(
        readings, time_range, parameter=options.parameter, stations=options.stations
    )
    try:
        dataset = data_mod.prepare(readings, options.data_config())
    except DataError as exc:
        if not time_range.active or range_record is None:
            raise
        raise DataError(
            f"{exc} (time range {time_range.label()}: {range_record['readings_in_range']} reading(s) from "
            f"{range_record['first_reading']} to {range_record['last_reading']}; the data spans "
            f"{range_record['data_first_reading']} .. {range_record['data_last_reading']})"
        ) from None
    norm = Normalization.fit(options.normalization, dataset.train_values)
    if range_record is not None and time_range.active:
        say(
            f"time range {time_range.label()}: {range_record['readings_in_range']} reading(s) "
            f"{range_record['first_reading']} .. {range_record['last_reading']} "
            f"({range_record['readings_outside']} outside; the data spans "
            f"{range_record['data_first_reading']} .. {range_record['data_last_reading']})"
        )
    _describe_data(say, dataset, norm)
    _quiet_tensorflow_logs()
    with native_stderr_captured():
        return _train_and_publish(options, dataset, norm, write, started, range_record)


def _train_and_publish(
    options: Options,
    dataset: data_mod.Dataset,
    norm: Normalization,
    write: Write | None,
    started: float,
    range_record: dict[str, Any] | None = None,
) -> TrainingResult:
    say: Write = write if write is not None else (lambda _line: None)
    import tensorflow as tf

    from ml_training import export, models

    models.set_determinism(options.seed)
    model = models.build_model(options.model, options.window, horizon=options.horizon)
    say(
        f"training {options.model} ({models.count_params(model)} parameters), up to "
        f"{options.epochs} epoch{'s' if options.epochs != 1 else ''}, batch {options.batch_size}, seed {options.seed}"
    )
    fit_started = time.perf_counter()
    history = models.fit(
        model,
        (norm.normalize(dataset.train.x), norm.normalize(dataset.train.targets())),
        (norm.normalize(dataset.validation.x), norm.normalize(dataset.validation.targets())),
        models.FitConfig(
            epochs=options.epochs,
            batch_size=options.batch_size,
            patience=options.patience,
            learning_rate=options.learning_rate,
        ),
        write=write,
    )
    fit_seconds = time.perf_counter() - fit_started
    val_losses = history.get("val_loss", [])
    best_epoch = int(np.argmin(val_losses)) + 1 if val_losses else len(val_losses)

    metrics: dict[str, Any] = {"units": "raw"}
    predictions: dict[str, np.ndarray] = {}
    for split in ("validation", "test"):
        windows = dataset.split(split)
        predictions[split] = norm.denormalize(models.predict(model, norm.normalize(windows.x)))
        if not np.isfinite(predictions[split]).all():
            raise TrainingError(
                f"training diverged: the model predicts non-finite values on the {split} span; "
                "try a lower --learning-rate or another --normalization"
            )
        metrics[split] = evaluate.split_metrics(predictions[split], windows)

    check = norm.normalize(dataset.test.x[:64])[..., np.newaxis]
    tflite_info: list[export.TfliteInfo] = []
    plots = [evaluate.FORECAST_PLOT, evaluate.TRAINING_PLOT]
    title = options.model_name
    if options.model_name != options.model:
        title += f" ({options.model})"

    def fill(directory: Path) -> None:
        say("exporting model.keras, saved_model/, model.tflite and plots")
        tflite_info.append(export.save_model_files(model, directory, options.window, check_windows=check))
        evaluate.plot_forecast(
            directory / evaluate.FORECAST_PLOT,
            dataset.test,
            predictions["test"] if options.horizon == 1 else predictions["test"][:, 0],
            f"{title}: forecast vs actual, test span" + (" (step 1)" if options.horizon > 1 else ""),
            dataset.stations,
        )
        evaluate.plot_history(
            directory / evaluate.TRAINING_PLOT,
            history,
            f"{title}: training curves",
        )

    metadata: dict[str, Any] = {}

    def finalize(directory: Path, version: int) -> None:
        info = tflite_info[0]
        metadata.clear()
        metadata.update(
            {
                "format_version": export.FORMAT_VERSION,
                "name": options.model_name,
                "version": version,
                "model_type": options.model,
                "window_length": options.window,
                "features": 1,
                "target": "next_value" if options.horizon == 1 else "next_values",
                "input_order": "oldest_first",
                "batch_sizes": "dynamic",
                "forecast": {"start": 0, "horizon": options.horizon},
                "input_name": info.input_name,
                "output_name": info.output_name,
                "input_shape": info.input_shape_signature,
                "output_shape": info.output_shape_signature,
                "normalization": norm.to_dict(),
                "files": {
                    "tflite": export.TFLITE_FILE,
                    "keras": export.KERAS_FILE,
                    "saved_model": export.SAVED_MODEL_DIR,
                    "plots": plots,
                },
                "tflite": {"ops": info.ops, "size_bytes": info.size_bytes},
                "data": {**dataset.describe(), "time_range": range_record},
                "metrics": metrics,
                "training": {
                    **options.to_dict(),
                    "epochs_run": len(history.get("loss", [])),
                    "best_epoch": best_epoch,
                    "parameters": models.count_params(model),
                    "loss": "mse (normalised units)",
                    "optimizer": "adam",
                    "fit_seconds": round(fit_seconds, 2),
                    "history": history,
                },
                "created_at": _utc_now(),
                "tensorflow_version": tf.__version__,
            }
        )
        ModelMetadata.model_validate(metadata)  # the trainer writes what the server reads
        export.write_json(directory / export.METADATA_FILE, metadata)

    version_dir, version = export.publish(options.repository, options.model_name, fill, finalize)
    say("")
    say(evaluate.format_table(options.model_name, metrics["test"]))
    say(f"done in {time.perf_counter() - started:.1f}s: version {version} of {options.model_name}")
    return TrainingResult(
        version_dir=version_dir,
        version=version,
        metadata=dict(metadata),
        model=model,
        dataset=dataset,
        normalization=norm,
        history=history,
    )


def _describe_data(say: Write, dataset: data_mod.Dataset, norm: Normalization) -> None:
    cfg = dataset.config
    files = ", ".join(f.path for f in dataset.files)
    say(
        f"data: {files}: {dataset.rows} readings of parameter {cfg.parameter_id}, "
        f"{len(dataset.stations)} station(s), {dataset.duplicates_dropped} duplicate(s) "
        "dropped"
    )
    if cfg.resample is not None:
        say(
            f"resampled every {cfg.resample:g}s (last reading carried forward): "
            f"{dataset.samples} samples in {dataset.segments} segment(s)"
        )
    for name in data_mod.SPLITS:
        lo, hi = dataset.spans[name]
        say(f"  {name:<10} {len(dataset.split(name)):>7} windows  {data_mod.iso_time(lo)} .. {data_mod.iso_time(hi)}")
    say(f"normalisation {norm.method}: offset {norm.offset:.6g}, scale {norm.scale:.6g} (fitted on the training span)")

