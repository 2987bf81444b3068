"""Same sitting: the paho echo, our worker, and the hand-written MQTT 5 worker loop
(benchmarks/experiments/mqtt5_worker.py), single-window messages at QoS 1.

`python -m benchmarks.experiments.compare [--rounds 2] [--step-s 2] [--targets echo,worker,mqtt5,mqtt5-bare]
[--worker LABEL=CHECKOUT ...]`

One Mosquitto; per round, each target in turn (alternated, so that the machine's drift hits
all of them alike) under the benchmark's own load generator: closed loop with 8 and with 64
requests outstanding (the max rate), then open loop at 1,000 requests/s (the p99). Prints one
JSON line per step and a table at the end; `--json FILE` keeps the steps. `--worker
LABEL=CHECKOUT` adds our worker as another checkout of the repository has it (`git worktree add
CHECKOUT COMMIT`): an A/B of worker versions in the same sitting as the echo. Run it under
`flock /tmp/bench.lock` like every timing run on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.cpu_meter import CpuMeter
from benchmarks.processes import (
    LOCALHOST,
    SHARED_GROUP,
    BenchmarkError,
    LineProcess,
    WorkerProcess,
    free_port,
    http_status,
    start_echo,
    start_loadgen,
    start_worker,
    stop_process,
    worker_config,
)
from benchmarks.run import DEFAULT_MODELS, model_shape

TARGETS = ("echo", "worker", "mqtt5", "mqtt5-bare")
STEPS: list[dict[str, Any]] = [
    {"mode": "closed", "concurrency": 8},
    {"mode": "closed", "concurrency": 64},
    {"mode": "open", "rate": 1000.0, "tick_ms": 1.0},
]


def start_mqtt5(port: int, work: Path, models: Path, bare: bool) -> LineProcess:
    args = [sys.executable, "-m", "benchmarks.experiments.mqtt5_worker", "--host", LOCALHOST, "--port", str(port),
            "--qos", "1", "--group", SHARED_GROUP, "--model", str(models / "lstm" / "1")]
    name = "mqtt5-bare" if bare else "mqtt5"
    process = LineProcess([*args, "--bare"] if bare else args, name, work / f"{name}.log")
    process.event(60.0)
    return process


def start_checkout_worker(
    port: int, models: Path, work: Path, label: str, checkout: Path
) -> subprocess.Popen[bytes]:
    """`python -m server_app` of another checkout (its own code on PYTHONPATH), ready at /readyz."""
    import yaml

    health_port = free_port()
    config = worker_config(port, health_port, models, 1, f"bench-{label}-{os.getpid()}", {"log_level": "WARNING"})
    config_path = work / f"worker-{label}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}
    with (work / f"worker-{label}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server_app", "--config", str(config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=checkout, env=env,
        )
    deadline = time.monotonic() + 60.0
    while http_status(health_port, "/readyz", timeout=0.5) != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process, 10)
            raise BenchmarkError(f"worker {label} ({checkout}) not ready; see {work / f'worker-{label}.log'}")
        time.sleep(0.01)
    return process


def run_target(
    target: str, port: int, broker_pid: int, models: Path, work: Path, step_s: float,
    checkouts: dict[str, Path] | None = None,
) -> list[dict[str, Any]]:
    window_length, features = model_shape(models)
    worker: WorkerProcess | None = None
    other: subprocess.Popen[bytes] | None = None
    process: LineProcess | None = None
    loadgen: LineProcess | None = None
    rows: list[dict[str, Any]] = []
    try:
        if checkouts and target in checkouts:
            other = start_checkout_worker(port, models, work, target, checkouts[target])
            pid = other.pid
        elif target == "worker":
            worker = start_worker(port, models, 1, work, "compare", overrides={"log_level": "WARNING"})
            pid = worker.pid
        elif target == "echo":
            process = start_echo(port, 1, work)
            pid = process.pid
        else:
            process = start_mqtt5(port, work, models, bare=target == "mqtt5-bare")
            pid = process.pid
        loadgen = start_loadgen(port, 1, work, window_length, features)
        meter = CpuMeter({"target": pid, "broker": broker_pid, "loadgen": loadgen.pid})
        loadgen.command({"cmd": "step", "mode": "closed", "concurrency": 8, "windows": 1, "duration": 0.5,
                         "drain": 3.0}, 60)  # warm-up
        for step in STEPS:
            usage: dict[str, Any] = {}
            with meter.measure(usage):
                result = loadgen.command({"cmd": "step", "windows": 1, "duration": step_s, "drain": 3.0, **step},
                                         step_s + 60)
            row = {
                "target": target, **step, "throughput": round(result["throughput"]), "sent": result["sent"],
                "answered": result["answered"], "errors": result["errors"], "unanswered": result["unanswered"],
                "p50_ms": round(result["latency_ms"]["p50"], 3), "p99_ms": round(result["latency_ms"]["p99"], 3),
                "cpu": {k: round(v, 2) for k, v in usage["cpu_cores"].items()},
            }
            print(orjson.dumps(row).decode(), flush=True)
            rows.append(row)
    finally:
        if loadgen is not None:
            loadgen.stop()
        if process is not None:
            process.stop()
        if worker is not None:
            worker.stop()
        if other is not None:
            stop_process(other, 20)
    return rows


def table(rows: list[dict[str, Any]], targets: list[str]) -> str:
    def values(target: str, key: str, **step: Any) -> list[float]:
        return [r[key] for r in rows if r["target"] == target and all(r.get(k) == v for k, v in step.items())]

    echo8 = statistics.median(values("echo", "throughput", concurrency=8) or [0])
    echo64 = statistics.median(values("echo", "throughput", concurrency=64) or [0])
    echo_p99 = statistics.median(values("echo", "p99_ms", rate=1000.0) or [0])
    lines = [
        "| target | closed 8 msg/s (runs) | / echo | closed 64 msg/s (runs) | / echo "
        "| p99 at 1,000/s ms (runs) | / echo |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target in targets:
        c8, c64 = values(target, "throughput", concurrency=8), values(target, "throughput", concurrency=64)
        p99 = values(target, "p99_ms", rate=1000.0)

        def ratio(mine: list[float], echo: float) -> str:
            return f"{statistics.median(mine) / echo:.0%}" if mine and echo else "-"

        lines.append(
            f"| {target} | {statistics.median(c8):,.0f} ({', '.join(f'{v:,.0f}' for v in c8)}) | {ratio(c8, echo8)} "
            f"| {statistics.median(c64):,.0f} ({', '.join(f'{v:,.0f}' for v in c64)}) | {ratio(c64, echo64)} "
            f"| {statistics.median(p99):.2f} ({', '.join(f'{v:.2f}' for v in p99)}) "
            f"| {statistics.median(p99) / echo_p99:.2f}x |" if c8 and c64 and p99 and echo_p99 else f"| {target} | - |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--step-s", type=float, default=2.0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--json", type=Path, help="write every step here")
    parser.add_argument("--worker", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="also our worker as CHECKOUT (another checkout of this repository) has it")
    args = parser.parse_args(argv)
    checkouts = {label: Path(path).resolve() for label, _, path in (w.partition("=") for w in args.worker)}
    from tests.support.mosquitto import MosquittoBroker

    targets = [t for t in args.targets.split(",") if t] + [label for label in checkouts if label not in args.targets]
    unknown = set(targets) - set(TARGETS) - set(checkouts)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    models = args.models.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    rows: list[dict[str, Any]] = []
    broker = MosquittoBroker(work / "mosquitto", persistence=False)
    broker.start()
    assert broker.pid is not None
    try:
        for _ in range(args.rounds):
            for target in targets:
                rows += run_target(target, broker.port, broker.pid, models, work, args.step_s, checkouts)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(table(rows, targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
