"""``python -m ml_training import MODEL.tflite --name NAME --repository DIR ...``.

Adds a forecaster trained elsewhere as a new version of the model repository (see
:mod:`ml_training.importer`); prints what it found and, last, the new version folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from contract.model_format import INPUT_ORDERS, NORMALIZATION_METHODS, Normalization
from ml_training.errors import EXIT_USAGE, OptionsError, TrainingError
from ml_training.importer import ImportOptions, import_model
from ml_training.options import NAME_PATTERN

PROG = "python -m ml_training import"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Add a TFLite forecaster trained elsewhere as a new version <repository>/<name>/<version>/ "
            "(model.tflite + metadata.json, renamed into place atomically). The file is inspected with "
            "LiteRT: window length, features and tensors are read from it, and the batch sizes it really "
            "runs are probed. Refused: models needing Select TensorFlow (Flex) ops, several inputs, "
            "non-float32 inputs or outputs."
        ),
        epilog=(
            "Example (the original tutorial's LSTM, trained on norm_1..norm_6, newest first, answering a "
            "sequence of which element 0 is the forecast): python -m ml_training import lstm.tflite --name "
            "tutorial-lstm --repository work/models --normalization tutorial --offset 14.96 --scale 10.04 "
            "--input-order newest_first --forecast-output 0"
        ),
    )
    parser.add_argument("model_file", type=Path, metavar="MODEL.tflite", help="the TFLite file")
    parser.add_argument("--name", required=True, help="model name in the repository; [a-z0-9][a-z0-9_-]{0,62}")
    parser.add_argument("--repository", type=Path, required=True, metavar="DIR", help="model repository root")
    parser.add_argument(
        "--normalization",
        choices=NORMALIZATION_METHODS,
        required=True,
        help="how the model's inputs were normalised: identity (raw readings in, raw forecasts out), or "
        "tutorial / zscore with --offset and --scale (normalized = (raw - offset) / scale)",
    )
    parser.add_argument("--offset", type=float, help="normalisation offset (the training mean)")
    parser.add_argument("--scale", type=float, help="normalisation scale (max - mean for tutorial, std for zscore)")
    parser.add_argument(
        "--input-order",
        choices=INPUT_ORDERS,
        default="oldest_first",
        help="order of the readings in the model's input window (default: oldest_first; the original "
        "tutorial's models were trained on norm_1..norm_N, which is newest_first)",
    )
    parser.add_argument(
        "--forecast-output",
        metavar="START[:STOP]",
        help="which of the output numbers of one window are the forecast, when there are several: "
        "0 (the first), -1 (the last), 0:6 (a horizon of six steps, step 1 first)",
    )
    parser.add_argument("--output", metavar="NAME", help="the forecast output tensor, when the model has several")
    parser.add_argument("--window", type=int, metavar="N", help="window length, when the model input leaves it open")
    parser.add_argument("--features", type=int, metavar="N", help="features per reading, when the input leaves it open")
    return parser


def options_from_args(args: argparse.Namespace) -> ImportOptions:
    if not NAME_PATTERN.fullmatch(args.name):
        raise OptionsError(f"model name {args.name!r} is not allowed: use 1-63 characters a-z, 0-9, '_' and '-'")
    if args.normalization == "identity":
        if args.offset is not None or args.scale is not None:
            raise OptionsError("--normalization identity takes no --offset / --scale")
        norm = Normalization.identity()
    else:
        if args.offset is None or args.scale is None:
            raise OptionsError(
                f"--normalization {args.normalization} needs --offset and --scale (the numbers the model was "
                "trained with: normalized = (raw - offset) / scale); use identity if it takes raw readings"
            )
        try:
            norm = Normalization(method=args.normalization, offset=args.offset, scale=args.scale)
        except ValidationError as exc:
            raise OptionsError(f"normalisation: {exc.errors()[0]['msg']}") from None
    for label, value in (("--window", args.window), ("--features", args.features)):
        if value is not None and value < 1:
            raise OptionsError(f"{label} must be at least 1, got {value}")
    return ImportOptions(
        model_file=args.model_file,
        name=args.name,
        repository=args.repository,
        normalization=norm,
        input_order=args.input_order,
        forecast=args.forecast_output,
        output=args.output,
        window=args.window,
        features=args.features,
    )


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        version_dir, version, meta = import_model(options)
    except TrainingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    forecast = meta["forecast"]
    print(
        f"imported {options.model_file} as {options.name} version {version}: window {meta['window_length']} x "
        f"{meta['features']} ({meta['input_order']}), batch sizes {meta['batch_sizes']}, forecast elements "
        f"{forecast['start']}..+{forecast['horizon']} of {meta['tflite']['output_numbers_per_window']} per window "
        f"(output {meta['output_name']} {meta['output_shape']}), normalisation {meta['normalization']['method']}",
        flush=True,
    )
    print(version_dir, flush=True)
    return 0
