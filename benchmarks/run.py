"""The whole benchmark: `python -m benchmarks [--quick] [--out benchmarks/results]`.

One real Mosquitto (started here, 127.0.0.1, TCP_NODELAY) serves the whole run. For each
QoS level, first the bare echo worker (benchmarks/echo.py) and then our real worker
(`python -m server_app --config ...` in its own process, two models loaded) are put under
the same load from the same generator (benchmarks/loadgen.py, its own process):

- open loop: offered rates stepped up until a step is not sustained (throughput under 95%
  of the offered rate, any error or unanswered request, or p99 over the latency limit; a
  step that fails on p99 alone is run once more, since a shared VM stalls now and then),
  each step waiting (bounded) for the machine to be quiet first and run again when other
  processes took more than `quiet_cores` during it and it failed,
  then the gap between the last sustained and the first failed rate bisected; then one
  step at half the maximum sustainable rate;
- closed loop: a few concurrency levels (requests outstanding at all times);
- single-window messages and batched messages (64 windows each), addressed to each of the
  plan's models (the worker sweeps `lstm` and `ann`; the echo answers every model alike, so it
  is swept once), in each of the plan's encodings (OIP JSON, OIP binary tensors);
- one open-loop step at each fixed rate (1,000/s) a sweep did not run.

Before and after the blocks, each model's compute per message (normalise + invoke +
denormalise, 1 and 64 windows: benchmarks/model_cost.py) is measured in a short subprocess;
the report states the worker's max rate against the bound `1 / (1 / echo's max rate + model
cost per message)` as well as against the echo alone.

Also measured: the worker's time from process start to /readyz answering 200, its RSS with
two models loaded (idle after start and the peak under load), and per step the CPU used by
the system under test, the broker, the generator and everything else on the machine (these
machines are shared: the ratio to the echo measured in the same run is the figure to trust).

The plan is in plan.py, the processes in processes.py, one target's steps in session.py, the
command line in cli.py; this module runs a plan end to end and records what it ran on.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.cpu_meter import CpuMeter
from benchmarks.model_cost import merge_runs
from benchmarks.plan import PayloadPlan, Plan
from benchmarks.processes import (
    MODEL,
    REPO_ROOT,
    TENANT,
    BenchmarkError,
    LineProcess,
    WorkerProcess,
    start_echo,
    start_loadgen,
    start_worker,
)
from benchmarks.session import Session, wait_quiet

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_OUT",
    "PayloadPlan",
    "Plan",
    "git_commit",
    "measure_model_cost",
    "measure_startups",
    "model_shape",
    "run_benchmark",
]

DEFAULT_MODELS = REPO_ROOT / "models"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"


def model_shape(models: Path) -> tuple[int, int]:
    metadata = json.loads((models / MODEL / "1" / "metadata.json").read_text())
    return int(metadata["window_length"]), int(metadata["features"])


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    return None


def _meta(plan: Plan, models: Path, broker_version: str) -> dict[str, Any]:
    import numpy
    import orjson
    import paho.mqtt

    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "broker": broker_version,
        "versions": {"paho-mqtt": paho.mqtt.__version__, "orjson": orjson.__version__, "numpy": numpy.__version__},
        "models": str(models),
        "tenant": TENANT,
        "model": MODEL,
        "models_addressed": plan.models,
        "encodings": plan.encodings,
        "plan": asdict(plan),
    }


def measure_startups(
    broker_port: int, models: Path, workdir: Path, runs: int, overrides: dict[str, Any]
) -> list[dict[str, float]]:
    results = []
    for index in range(runs):
        worker = start_worker(broker_port, models, 1, workdir, f"startup{index}", overrides=overrides)
        try:
            time.sleep(0.5)
            rss_settled = psutil.Process(worker.pid).memory_info().rss / 2**20
        finally:
            worker.stop()
        results.append({
            "time_to_ready_s": round(worker.time_to_ready_s, 3),
            "rss_ready_mb": round(worker.rss_ready_mb, 1),
            "rss_idle_mb": round(rss_settled, 1),
        })
        print(f"  start-up {index + 1}/{runs}: ready in {worker.time_to_ready_s:.2f} s, RSS {rss_settled:.1f} MB",
              flush=True)
    return results


def run_benchmark(plan: Plan, models: Path, workdir: Path | None = None) -> dict[str, Any]:
    """Run `plan` end to end; return the report dict (see report.py for its rendering)."""
    from tests.support.mosquitto import MosquittoBroker

    if not (models / "lstm" / "1" / "model.tflite").is_file() or not (models / "ann" / "1" / "model.tflite").is_file():
        raise BenchmarkError(f"models missing under {models} (need lstm/1 and ann/1): run `make models`")
    window_length, features = model_shape(models)
    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="bench-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    broker = MosquittoBroker(work / "mosquitto", persistence=False)
    broker.start()
    broker_pid = broker.pid
    assert broker_pid is not None
    version = subprocess.run([str(broker.executable), "-h"], capture_output=True, text=True, timeout=10).stdout
    report: dict[str, Any] = {"meta": _meta(plan, models, version.splitlines()[0] if version else "mosquitto")}
    blocks: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        if plan.startup_runs and "worker" in plan.targets:
            print("worker start-up (process start to /readyz 200, two models):", flush=True)
            runs = measure_startups(broker.port, models, work, plan.startup_runs, plan.worker_overrides)
            report["startup"] = {"runs": runs}
        cost_runs = [measure_model_cost(plan, models, work, "before")] if plan.model_cost else []
        for qos in plan.qos_levels:
            for target in plan.targets:
                print(f"{target}, QoS {qos}:", flush=True)
                blocks.append(_run_block(target, qos, plan, broker.port, broker_pid, models, work,
                                         window_length, features))
        if plan.model_cost:
            cost_runs.append(measure_model_cost(plan, models, work, "after"))
    finally:
        broker.stop()
    report["blocks"] = blocks
    if plan.model_cost:
        report["model_cost"] = {"runs": cost_runs, "p50_us": merge_runs(cost_runs)}
    report["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    report["meta"]["load_average_at_end"] = list(os.getloadavg())
    if "startup" in report or any(b["target"] == "worker" for b in blocks):
        report.setdefault("startup", {"runs": []})
        runs = report["startup"]["runs"] + [
            {"time_to_ready_s": b["time_to_ready_s"], "rss_ready_mb": b["rss_ready_mb"]}
            for b in blocks if b["target"] == "worker"
        ]
        report["startup"]["all_time_to_ready_s"] = [r["time_to_ready_s"] for r in runs]
        report["startup"]["time_to_ready_median_s"] = statistics.median(r["time_to_ready_s"] for r in runs)
        report["startup"]["time_to_ready_max_s"] = max(r["time_to_ready_s"] for r in runs)
    from benchmarks.report import summarize

    report["summary"] = summarize(report)
    if own_tmp:
        shutil.rmtree(work, ignore_errors=True)
    return report


def measure_model_cost(plan: Plan, models: Path, work: Path, when: str) -> dict[str, Any]:
    """`python -m benchmarks.model_cost --json` in its own process, after waiting (bounded) for a quiet machine."""
    names = sorted({*plan.models, "lstm", "ann"}, key=lambda n: (n != "lstm", n != "ann", n))
    windows = sorted({p.windows for p in plan.payloads})
    _, others = wait_quiet(CpuMeter({}), plan)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.model_cost", "--json", "--models", str(models),
         "--names", ",".join(names), "--windows", ",".join(map(str, windows)),
         "--rounds", str(plan.model_cost_rounds)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    (work / f"model-cost-{when}.log").write_text(out.stderr)
    if out.returncode != 0:
        raise BenchmarkError(f"model_cost failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["when"] = when
    result["others_before"] = round(others, 2)
    figures = ", ".join(
        f"{name} {n} {f['p50_us']:.0f}" for name, sizes in result["models"].items() for n, f in sizes.items()
    )
    print(f"model cost per message ({when} the blocks), p50 µs: {figures}", flush=True)
    return result


def _run_block(
    target: str, qos: int, plan: Plan, broker_port: int, broker_pid: int, models: Path, work: Path,
    window_length: int, features: int,
) -> dict[str, Any]:
    block: dict[str, Any] = {"target": target, "qos": qos}
    worker: WorkerProcess | None = None
    echo: LineProcess | None = None
    loadgen: LineProcess | None = None
    try:
        if target == "worker":
            # After the echo's overload steps the broker and the exiting echo may still be busy:
            # a start-up timed then measures them, not the worker (a 9 s start was seen that way).
            wait_quiet(CpuMeter({}), plan)  # every process counts, the broker included
            worker = start_worker(broker_port, models, qos, work, f"q{qos}", overrides=plan.worker_overrides)
            target_pid = worker.pid
            block["time_to_ready_s"] = round(worker.time_to_ready_s, 3)
            block["rss_ready_mb"] = round(worker.rss_ready_mb, 1)
            print(f"  worker ready in {worker.time_to_ready_s:.2f} s, RSS {worker.rss_ready_mb:.1f} MB", flush=True)
        else:
            echo = start_echo(broker_port, qos, work)
            target_pid = echo.pid
            block["rss_ready_mb"] = round(psutil.Process(target_pid).memory_info().rss / 2**20, 1)
        loadgen = start_loadgen(broker_port, qos, work, window_length, features)
        meter = CpuMeter({"target": target_pid, "broker": broker_pid, "loadgen": loadgen.pid})
        session = Session(loadgen, meter, plan, target_pid)
        block["payloads"] = [session.sweep(variant) for variant in plan.variants(target, qos)]
        block["rss_peak_mb"] = round(max(session.rss_peak_mb, block["rss_ready_mb"]), 1)
    finally:
        if loadgen is not None:
            loadgen.stop()  # closing its stdin ends its command loop; it disconnects cleanly
        if echo is not None:
            echo.stop()
        if worker is not None:
            block["exit_code"] = worker.stop()
    return block


if __name__ == "__main__":  # `python -m benchmarks.run`, as before: the same command line as `python -m benchmarks`
    from benchmarks.cli import main

    sys.exit(main())
