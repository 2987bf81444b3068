"""Per-window invoke cost of TFLite forecasters in LiteRT, old export against new.

`python -m benchmarks.lstm_invoke [--old PATH] [--new PATH] [--also LABEL=PATH ...]`

Each file is loaded the way the worker loads it (``Interpreter(model_content=...,
num_threads=1)``, LiteRT's default delegates, i.e. XNNPACK where it applies), resized to
each batch size and allocated once; one sample is ``set_tensor`` + ``invoke`` +
``get_tensor`` of a batch of normalised windows, the way ``server_app.runtime`` runs a
batch (normalisation excluded). Samples are taken in rounds that alternate the files
(and batch sizes), so a noisy neighbour on the machine hits every file alike. Prints a
markdown table of per-window cost (sample time / batch) at p50, p90 and p99 and the ratio
of p50s against ``--old``, and writes it to ``benchmarks/results/lstm_invoke.md``.

The default ``--old`` is the unrolled export the LSTM shipped with before
(``benchmarks/baselines/lstm_unrolled.tflite``, same weights as ``models/lstm/1``); the
default ``--new`` is the shipped ``models/lstm/1/model.tflite``. Run it under
``flock /tmp/bench.lock`` on a shared machine. Imports neither TensorFlow nor server_app.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OLD = ROOT / "benchmarks" / "baselines" / "lstm_unrolled.tflite"
DEFAULT_NEW = ROOT / "models" / "lstm" / "1" / "model.tflite"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "lstm_invoke.md"
BATCHES = (1, 8, 64)
PERCENTILES = (50, 90, 99)


@dataclass
class Subject:
    """One model file, one allocated interpreter per batch size, and its samples (ns per invoke)."""

    label: str
    path: Path
    ops: int = 0  # operators in the file
    partitions: int = 0  # delegate partitions LiteRT made of them (at the largest batch)
    max_diff: float = 0.0  # largest |output - the first file's output| on the same windows
    slots: dict[int, tuple[Any, int, int, np.ndarray]] = field(default_factory=dict)
    samples: dict[int, list[int]] = field(default_factory=dict)


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=1)  # as server_app.runtime does


def load(label: str, path: Path, batches: Sequence[int], seed: int = 0) -> Subject:
    content = path.read_bytes()
    subject = Subject(label, path)
    rng = np.random.default_rng(seed)
    for batch in batches:
        interpreter = _interpreter(content)
        subject.ops = len(interpreter._get_ops_details())
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        tail = [int(d) for d in inp["shape_signature"][1:]]
        interpreter.resize_tensor_input(inp["index"], [batch, *tail], strict=False)
        interpreter.allocate_tensors()
        added = interpreter._get_ops_details()[subject.ops :]
        subject.partitions = sum(1 for op in added if op["op_name"] == "DELEGATE")
        windows = rng.uniform(-1.0, 1.0, (batch, *tail)).astype(np.float32)
        subject.slots[batch] = (interpreter, int(inp["index"]), int(out["index"]), windows)
        subject.samples[batch] = []
    return subject


def _sample(slot: tuple[Any, int, int, np.ndarray]) -> int:
    interpreter, inp, out, windows = slot
    started = time.perf_counter_ns()
    interpreter.set_tensor(inp, windows)
    interpreter.invoke()
    interpreter.get_tensor(out)
    return time.perf_counter_ns() - started


def measure(subjects: Sequence[Subject], batches: Sequence[int], rounds: int, per_round: int, warm: int) -> None:
    """``rounds`` rounds; in each, every (file, batch) takes ``per_round`` samples, in an order
    that alternates the files and reverses every other round."""
    for subject in subjects:
        for batch in batches:
            for _ in range(warm):
                _sample(subject.slots[batch])
    order = [(subject, batch) for batch in batches for subject in subjects]
    for round_ in range(rounds):
        for subject, batch in order if round_ % 2 == 0 else order[::-1]:
            slot = subject.slots[batch]
            subject.samples[batch].extend(_sample(slot) for _ in range(per_round))


def check_same_forecasts(subjects: Sequence[Subject], batches: Sequence[int]) -> None:
    """Each file's largest |difference| from the first file's outputs on the same windows."""
    for batch in batches:
        reference = None
        for subject in subjects:
            interpreter, inp, out, windows = subject.slots[batch]
            interpreter.set_tensor(inp, windows)
            interpreter.invoke()
            got = np.array(interpreter.get_tensor(out), dtype=np.float64)
            if reference is None:
                reference = got
            else:
                subject.max_diff = max(subject.max_diff, float(np.max(np.abs(got - reference))))


def per_window_us(samples: Sequence[int], batch: int) -> list[float]:
    values = np.asarray(samples, dtype=np.float64) / 1000.0 / batch
    return [float(np.percentile(values, p)) for p in PERCENTILES]


def table(subjects: Sequence[Subject], batches: Sequence[int]) -> str:
    lines = [
        "| file | ops | XNNPACK partitions | max abs diff | batch | p50 µs/window | p90 µs/window "
        "| p99 µs/window | p50 vs first |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch in batches:
        base = per_window_us(subjects[0].samples[batch], batch)[0]
        for subject in subjects:
            p50, p90, p99 = per_window_us(subject.samples[batch], batch)
            ratio = f"{base / p50:.2f}x faster" if subject is not subjects[0] else "1.00"
            lines.append(
                f"| {subject.label} | {subject.ops} | {subject.partitions} | {subject.max_diff:.2g} | {batch} "
                f"| {p50:.2f} | {p90:.2f} | {p99:.2f} | {ratio} |"
            )
    return "\n".join(lines)


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def _label_path(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {text!r}")
    return label, Path(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lstm_invoke", description=__doc__.split("\n\n")[1])
    parser.add_argument("--old", type=Path, default=DEFAULT_OLD, help="the baseline file (default: %(default)s)")
    parser.add_argument("--new", type=Path, default=DEFAULT_NEW, help="the file to compare (default: %(default)s)")
    parser.add_argument(
        "--also",
        type=_label_path,
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="more files to measure in the same rounds (repeatable)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="default: 1 8 64")
    parser.add_argument("--rounds", type=int, default=40, help="alternation rounds (default: %(default)s)")
    parser.add_argument("--per-round", type=int, default=50, help="samples per file, batch and round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    files = [("old", args.old), ("new", args.new), *args.also]
    missing = [str(path) for _, path in files if not path.is_file()]
    if missing:
        print(f"lstm_invoke: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    subjects = [load(label, path, args.batches) for label, path in files]
    check_same_forecasts(subjects, args.batches)
    measure(subjects, args.batches, args.rounds, args.per_round, warm=args.per_round)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    samples = args.rounds * args.per_round
    names = ", ".join(f"{s.label} = `{_shown(s.path)}`" for s in subjects)
    report = "\n".join(
        [
            "# LSTM invoke cost per window (LiteRT, num_threads=1, default delegates)",
            "",
            f"{when}, commit `{_commit()}`, {os.cpu_count()} CPUs, {platform.machine()}, Python "
            f"{platform.python_version()}. Files: {names}. One sample = set_tensor + invoke + get_tensor of "
            f"one batch (normalisation excluded), {samples} samples per file and batch in {args.rounds} "
            f"alternating rounds; per-window cost = sample / batch. *ops*: operators in the file; *XNNPACK "
            f"partitions*: delegate nodes LiteRT made of them; *max abs diff*: largest |output - "
            f"`{subjects[0].label}`'s output| on the same windows (normalised units).",
            "",
            table(subjects, args.batches),
            "",
        ]
    )
    print(report)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
