"""Command line of ``python -m ml_training``: parse options, then :func:`ml_training.train.run`.

``python -m ml_training import MODEL.tflite ...`` adds a model trained elsewhere
(:mod:`ml_training.import_cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml_training.errors import EXIT_USAGE, TrainingError
from ml_training.normalization import METHODS
from ml_training.options import MODEL_TYPES, NAME_PATTERN, Options
from ml_training.time_range import parse_duration, parse_time
from ml_training.train import TrainingResult, native_stderr_captured, run

__all__ = [
    "MODEL_TYPES",
    "NAME_PATTERN",
    "Options",
    "TrainingResult",
    "build_parser",
    "main",
    "native_stderr_captured",
    "options_from_args",
    "run",
]

PROG = "python -m ml_training"


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


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        help="one or more CSV files in the BTS schema, or folders (their *.csv files, by name); "
        "read in the given order as if concatenated (a later duplicate of a (station, time) "
        "reading wins)",
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
    recent = parser.add_argument_group(
        "time range",
        "train on part of the data only (e.g. the readings since a drift alarm); applied to the "
        "readings of the selected parameter and stations before resampling, windowing and the "
        "chronological split, and recorded in metadata.json (data.time_range). TIME: ISO 8601 "
        "(UTC when it has no offset) or Unix seconds",
    )
    start = recent.add_mutually_exclusive_group()
    start.add_argument(
        "--since",
        type=_time,
        metavar="TIME",
        help="only readings at or after TIME, e.g. 2026-11-01T00:00Z",
    )
    recent.add_argument(
        "--until",
        type=_time,
        metavar="TIME",
        help="only readings before TIME (exclusive)",
    )
    start.add_argument(
        "--last",
        type=_duration,
        metavar="DURATION",
        help="only the readings in the last DURATION before the newest reading in the data "
        "(after --until), e.g. 7d, 36h, 90m, 1d12h, 2w or seconds; relative to the data, not the clock",
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
        "--time-unit",
        choices=("auto", "s", "ms", "us", "ns"),
        default="auto",
        help="unit of numeric reading_time values (Unix time); auto: detected per file from the "
        "magnitude (default: auto)",
    )
    parser.add_argument(
        "--horizon",
        type=_positive_int,
        default=1,
        metavar="H",
        help="forecast the next H readings (the served answer is [n, H], step 1 first); "
        "metrics are step 1 against persistence, plus the MAE of each step (default: 1)",
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
        horizon=args.horizon,
        time_unit=args.time_unit,
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
        since=args.since,
        until=args.until,
        last=args.last,
        quiet=args.quiet,
    )



def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run, print the new version folder; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["import"]:
        from ml_training import import_cli

        return import_cli.main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
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

