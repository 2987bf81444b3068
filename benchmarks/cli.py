"""The whole benchmark: `python -m benchmarks [--quick] [--out benchmarks/results]`.

The command line: a plan (full or `--quick`, narrowed by the options), the run (run.py), then
the report (report.py). What a run does: see run.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks.plan import ENCODINGS, Plan
from benchmarks.run import DEFAULT_MODELS, DEFAULT_OUT, run_benchmark

__all__ = ["main", "parse_override"]


def parse_override(text: str) -> tuple[str, Any]:
    """`worker.max_delay_ms=0` -> ("worker.max_delay_ms", 0) (the value is YAML)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def _choose(text: str, allowed: tuple[str, ...], option: str, parser: argparse.ArgumentParser) -> list[str]:
    chosen = [name for name in text.split(",") if name]
    unknown = [name for name in chosen if name not in allowed]
    if unknown or not chosen:
        parser.error(f"{option}: choose from {','.join(allowed)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~80 s: QoS 1 only, 1 s steps, fewer rates")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON, report.md and PNG go")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model repository with lstm/1 and ann/1")
    parser.add_argument("--qos", type=int, action="append", choices=(0, 1), help="only these QoS levels")
    parser.add_argument("--step-s", type=float, help="seconds per step")
    parser.add_argument("--targets", help="comma-separated subset of echo,worker (default both)")
    parser.add_argument("--payloads", help="comma-separated subset of single,batched (default both)")
    parser.add_argument(
        "--model-names", help="comma-separated models the requests address, of lstm,ann (default: the plan's)"
    )
    parser.add_argument("--encodings", help="comma-separated payload encodings, of json,binary (default: the plan's)")
    parser.add_argument("--no-model-cost", action="store_true", help="skip the model cost steps (and the bound)")
    parser.add_argument("--keep-workdir", type=Path, help="keep logs and configs in this folder")
    parser.add_argument(
        "--set", dest="overrides", type=parse_override, action="append", metavar="KEY=VALUE",
        help="override a key of the worker's config, e.g. worker.max_delay_ms=0 (repeatable)",
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    if args.qos:
        plan.qos_levels = args.qos
    if args.step_s:
        plan.step_s = args.step_s
    if args.targets:
        plan.targets = [t for t in ("echo", "worker") if t in args.targets.split(",")]
    if args.overrides:
        plan.worker_overrides = dict(args.overrides)
    if args.model_names:  # explicit: every payload to these models (the plan's per-payload choice dropped)
        plan.models = _choose(args.model_names, ("lstm", "ann"), "--model-names", parser)
        for payload in plan.payloads:
            payload.models = None
    if args.encodings:  # explicit: every payload in these encodings
        plan.encodings = _choose(args.encodings, ENCODINGS, "--encodings", parser)
        for payload in plan.payloads:
            payload.encodings = None
    if args.no_model_cost:
        plan.model_cost = False
    if args.payloads:
        plan.payloads = [p for p in plan.payloads if p.name in args.payloads.split(",")]
    report = run_benchmark(plan, args.models.resolve(), args.keep_workdir)
    from benchmarks.report import write_report

    paths = write_report(report, args.out)
    print("\n" + paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
