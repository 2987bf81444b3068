"""What the model costs per message: normalise + invoke + denormalise, as the worker does it.

`python -m benchmarks.model_cost [--models models] [--names lstm,ann] [--windows 1,64] [--json]`

For each model of the repository (version 1) and each message size, the time of the worker's
per-message compute (`server_app.service` `_run` with `server_app.runtime`): the raw windows
normalised with the metadata's normalisation, reversed for a `newest_first` model, invoked on an
interpreter allocated for the batch size (`num_threads=1`, as the worker; a model that runs only
at fixed batch sizes gets ceil(n / size) invokes, the last padded), the forecast elements sliced
and denormalised. LiteRT (`ai_edge_litert`) is used directly: benchmarks do not import
`server_app`; the metadata comes from `contract.model_format`.

Rounds alternate the models and sizes (lstm 1, lstm 64, ann 1, ann 64, lstm 1, ...) so a noisy
neighbour shows as a spread between rounds rather than as one model's figure; the figure used
is the p50 of every timed call. `--json` prints one JSON line (the benchmark runs this module
as its own short step in a subprocess).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.model_format import METADATA_FILE, ModelMetadata

__all__ = ["ModelCostCase", "main", "measure_model_costs", "summarize_samples"]

DEFAULT_ROUNDS = 5
DEFAULT_CALLS = 200  # timed calls per model, size and round
WARM_CALLS = 20


def _bucket(count: int, sizes: list[int]) -> int:
    return next((size for size in sizes if size >= count), sizes[-1])


class ModelCostCase:
    """One model version, interpreters for one message size, its per-message compute."""

    def __init__(self, version_dir: Path, windows: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.metadata = ModelMetadata.model_validate(json.loads((version_dir / METADATA_FILE).read_text()))
        self.windows = windows
        model_bytes = (version_dir / self.metadata.files.tflite).read_bytes()
        md = self.metadata
        self._reverse = md.input_order == "newest_first"
        self._norm = md.normalization
        shape = (md.window_length, md.features)
        stated = md.batch_sizes
        sizes = [windows] if stated == "dynamic" else sorted(stated)
        self._invoke_batch = sizes[-1] if stated != "dynamic" else windows
        self._slots: dict[int, tuple[Any, int, int, tuple[int, ...]]] = {}
        chunks = {min(self._invoke_batch, windows - start) for start in range(0, windows, self._invoke_batch)}
        for size in sorted({_bucket(chunk, sizes) for chunk in chunks}):
            interpreter = Interpreter(model_content=model_bytes, num_threads=1)
            inp = _pick(interpreter.get_input_details(), md.input_name)
            out = _pick(interpreter.get_output_details(), md.output_name)
            signature = [int(d) for d in inp.get("shape_signature", inp["shape"])]
            tail = tuple(signature[1:]) if -1 not in signature[1:] else shape
            interpreter.resize_tensor_input(inp["index"], [size, *tail], strict=False)
            interpreter.allocate_tensors()
            self._slots[size] = (interpreter, int(inp["index"]), int(out["index"]), (size, *tail))
        self._sizes = sorted(self._slots)
        self._shape = shape
        # the forecast elements, known once the output size per window is (as the worker's warm-up)
        self._first, self._stop = 0, md.forecast.horizon
        elements = self._invoke(self._sizes[0], np.zeros((min(windows, self._sizes[0]), *shape), np.float32)).shape[1]
        self._stop = md.forecast.stop(elements)
        self._first = self._stop - md.forecast.horizon
        rng = np.random.default_rng(windows)
        self.raw = rng.uniform(8.0, 22.0, (windows, *shape)).astype(np.float32)

    def _invoke(self, size: int, windows: np.ndarray) -> np.ndarray:
        interpreter, input_index, output_index, input_shape = self._slots[size]
        count = windows.shape[0]
        if count != size:
            padded = np.zeros((size, *self._shape), dtype=np.float32)
            padded[:count] = windows
        else:
            padded = np.ascontiguousarray(windows, dtype=np.float32)
        interpreter.set_tensor(input_index, padded.reshape(input_shape))
        interpreter.invoke()
        out: np.ndarray = interpreter.get_tensor(output_index)
        return out.reshape(size, -1)[:count]

    def run(self, raw: np.ndarray) -> np.ndarray:
        """One message: raw windows [n, length, features] -> raw forecasts [n, horizon]."""
        windows = self._norm.normalize(raw)
        if self._reverse:
            windows = windows[:, ::-1]
        parts = []
        for start in range(0, windows.shape[0], self._invoke_batch):
            chunk = windows[start : start + self._invoke_batch]
            parts.append(self._invoke(_bucket(chunk.shape[0], self._sizes), chunk)[:, self._first : self._stop])
        forecasts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._norm.denormalize(forecasts)

    def time_calls(self, calls: int) -> list[float]:
        """`calls` timed messages, seconds each."""
        raw, run, clock = self.raw, self.run, time.perf_counter
        samples = []
        for _ in range(calls):
            started = clock()
            run(raw)
            samples.append(clock() - started)
        return samples


def _pick(details: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    for detail in details:
        if name is None or detail["name"] == name:
            return detail
    raise ValueError(f"no tensor named {name!r}")


@dataclass
class _Series:
    samples: list[float]
    round_p50s: list[float]


def summarize_samples(samples: list[float], round_p50s: list[float]) -> dict[str, Any]:
    """Seconds -> the µs figures of one model and size: p50 (the one used), p90, and the rounds' p50s."""
    us = np.asarray(samples, dtype=np.float64) * 1e6
    p50, p90 = np.percentile(us, [50, 90]).tolist()
    return {
        "p50_us": round(float(p50), 2),
        "p90_us": round(float(p90), 2),
        "calls": len(samples),
        "round_p50_us": [round(v * 1e6, 2) for v in round_p50s],
    }


def measure_model_costs(
    models: Path, names: list[str], windows: list[int], rounds: int = DEFAULT_ROUNDS, calls: int = DEFAULT_CALLS
) -> dict[str, Any]:
    """{"models": {name: {"1": {...}, "64": {...}}}, ...}: per-message cost (µs) of each model and size."""
    cases = {(name, n): ModelCostCase(models / name / "1", n) for name in names for n in windows}
    series = {key: _Series([], []) for key in cases}
    for case in cases.values():
        case.time_calls(WARM_CALLS)
    started = time.perf_counter()
    for round_index in range(rounds):
        order = list(cases) if round_index % 2 == 0 else list(reversed(cases))
        for key in order:
            samples = cases[key].time_calls(calls)
            series[key].samples.extend(samples)
            series[key].round_p50s.append(float(np.median(samples)))
    result: dict[str, Any] = {
        "rounds": rounds,
        "calls_per_round": calls,
        "duration_s": round(time.perf_counter() - started, 2),
        "num_threads": 1,
        "models": {},
    }
    for (name, n), found in series.items():
        result["models"].setdefault(name, {})[str(n)] = summarize_samples(found.samples, found.round_p50s)
    return result


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Several runs (e.g. before and after the blocks) -> {model: {windows: p50 µs}}: the median of the runs' p50s."""
    merged: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, sizes in run.get("models", {}).items():
            for windows, figures in sizes.items():
                merged.setdefault(name, {}).setdefault(windows, []).append(float(figures["p50_us"]))
    return {
        name: {windows: round(float(np.median(values)), 2) for windows, values in sizes.items()}
        for name, sizes in merged.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    parser.add_argument("--names", default="lstm,ann")
    parser.add_argument("--windows", default="1,64")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--json", action="store_true", help="one JSON line (for the benchmark)")
    args = parser.parse_args(argv)
    names = [n for n in args.names.split(",") if n]
    windows = [int(w) for w in args.windows.split(",") if w]
    result = measure_model_costs(args.models, names, windows, args.rounds, args.calls)
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    print("| model | windows/msg | p50 µs | p90 µs | p50 of each round (µs) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, sizes in result["models"].items():
        for n, figures in sizes.items():
            rounds = ", ".join(f"{v:.1f}" for v in figures["round_p50_us"])
            print(f"| {name} | {n} | {figures['p50_us']:.1f} | {figures['p90_us']:.1f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
