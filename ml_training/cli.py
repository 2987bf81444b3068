"""Command line of ``python -m ml_training``: parse options, then :func:`run`.

:func:`run` is the whole pipeline and is what tests call in-process: load and validate the
CSV files, split chronologically, fit the normalisation on the training span, train, compare
with persistence on the test span, and publish a new version into the model repository.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml_training import data as data_mod
from ml_training import evaluate
from ml_training.errors import EXIT_USAGE, OptionsError, TrainingError
from ml_training.normalization import METHODS, Method, Normalization

MODEL_TYPES = ("lstm", "ann")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
PROG = "python -m ml_training"

Write = Callable[[str], None]


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
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
        ):
            if value < 1:
                raise OptionsError(f"{label} must be at least 1, got {value}")
        if self.patience < 0:
            raise OptionsError(f"--patience must be 0 or more, got {self.patience}")
        if not self.learning_rate > 0:
            raise OptionsError(f"--learning-rate must be positive, got {self.learning_rate}")

    def data_config(self) -> data_mod.DataConfig:
        return data_mod.DataConfig(
            parameter_id=self.parameter,
            stations=self.stations,
            window=self.window,
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
        return out


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


# --------------------------------------------------------------------------- parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 0.5:
        raise argparse.ArgumentTypeError(f"must be below 0.5, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Train an LSTM or ANN forecaster (next reading from the last WINDOW readings) on "
            "CSV data in the BTS schema (station_id, parameter_id, reading_time, value) and "
            "add it as a new version <repository>/<name>/<version>/ of the model repository: "
            "model.tflite (LiteRT, dynamic batch), model.keras, saved_model/, metadata.json "
            "and plots. The data is split by time (train/validation/test, no shuffling "
            "across time), the normalisation is fitted on the training span only, and the "
            "model is compared with the persistence forecast (next = last) on the test span."
        ),
        epilog=(
            "Exit status: 0 on success (the new version folder is printed last), 2 on bad "
            "input or options (a message on stderr, nothing written to the repository). "
            "Example: python -m ml_training --data data/bts_sample.csv --model lstm "
            "--repository work/models --resample 300"
        ),
    )
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        required=True,
        metavar="CSV",
        help="one or more CSV files in the BTS schema; read in the given order as if "
        "concatenated (a later duplicate of a (station, time) reading wins)",
    )
    parser.add_argument("--model", choices=MODEL_TYPES, required=True, help="model type: lstm or ann")
    parser.add_argument(
        "--repository",
        type=Path,
        required=True,
        metavar="DIR",
        help="model repository root, e.g. models/; the version goes to DIR/NAME/<n>/",
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        help="model name in the repository (default: the model type); [a-z0-9][a-z0-9_-]{0,62}",
    )
    parser.add_argument(
        "--station",
        dest="stations",
        type=int,
        action="append",
        default=None,
        metavar="ID",
        help="train on this station only; repeat for several (default: every station that "
        "has readings of the parameter); windows never span two stations",
    )
    parser.add_argument(
        "--parameter",
        type=int,
        default=122,
        metavar="ID",
        help="parameter_id to train on (default: 122, BTS 'Load of Power Grid')",
    )
    parser.add_argument(
        "--window",
        type=_positive_int,
        default=6,
        metavar="N",
        help="input readings per forecast (default: 6)",
    )
    parser.add_argument(
        "--resample",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="resample each station to a fixed interval, carrying the last reading forward "
        "(BTS data is report-on-change); default: use the readings as they are",
    )
    parser.add_argument(
        "--max-gap",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="a gap longer than this between two readings of a station splits its series; "
        "no window spans it (default: never split)",
    )
    parser.add_argument(
        "--normalization",
        choices=METHODS,
        default="tutorial",
        help="tutorial: (value - mean) / (max - mean); zscore: (value - mean) / std; "
        "both fitted on the training span only (default: tutorial)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=30,
        metavar="N",
        help="maximum training epochs (default: 30)",
    )
    parser.add_argument(
        "--patience",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="stop after N epochs without a better val_loss and keep the best weights; "
        "0 trains all epochs (default: 5)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="training batch size (default: 64)",
    )
    parser.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=1e-3,
        metavar="LR",
        help="Adam learning rate (default: 0.001)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=0.15,
        metavar="F",
        help="share of the samples (by time) for validation, right after the training span (default: 0.15)",
    )
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.15,
        metavar="F",
        help="share of the samples (by time) for the test, at the end (default: 0.15)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="random seed; the same seed, data and machine give the same model (default: 42)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only errors and, on success, the new version folder",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        data=tuple(args.data),
        model=args.model,
        repository=args.repository,
        name=args.name,
        stations=tuple(dict.fromkeys(args.stations or ())),
        parameter=args.parameter,
        window=args.window,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        learning_rate=args.learning_rate,
        seed=args.seed,
        normalization=args.normalization,
        resample=args.resample,
        max_gap=args.max_gap,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        quiet=args.quiet,
    )


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

    readings = data_mod.load_csvs(options.data)
    dataset = data_mod.prepare(readings, options.data_config())
    norm = Normalization.fit(options.normalization, dataset.train_values)
    _describe_data(say, dataset, norm)
    _quiet_tensorflow_logs()
    with native_stderr_captured():
        return _train_and_publish(options, dataset, norm, write, started)


def _train_and_publish(
    options: Options,
    dataset: data_mod.Dataset,
    norm: Normalization,
    write: Write | None,
    started: float,
) -> TrainingResult:
    say: Write = write if write is not None else (lambda _line: None)
    import tensorflow as tf

    from ml_training import export, models

    models.set_determinism(options.seed)
    model = models.build_model(options.model, options.window)
    say(
        f"training {options.model} ({models.count_params(model)} parameters), up to "
        f"{options.epochs} epoch{'s' if options.epochs != 1 else ''}, batch {options.batch_size}, seed {options.seed}"
    )
    fit_started = time.perf_counter()
    history = models.fit(
        model,
        (norm.normalize(dataset.train.x), norm.normalize(dataset.train.y)),
        (norm.normalize(dataset.validation.x), norm.normalize(dataset.validation.y)),
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
            predictions["test"],
            f"{title}: forecast vs actual, test span",
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
                "target": "next_value",
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
                "data": dataset.describe(),
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


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run, print the new version folder; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
        result = run(options, write=None if options.quiet else _print)
    except TrainingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was added to the repository", file=sys.stderr)
        return 130
    print(result.version_dir, flush=True)
    return 0
