"""Does the live console cost the serving loop anything? Single-window throughput with the
console page polling and without, alternated, on one worker and one real Mosquitto.

    python -m benchmarks.console_overhead                      # 4 rounds of 2 x 5 s, ~1 min
    python -m benchmarks.console_overhead --rounds 6 --step-s 8 --poll-interval 0.25
    python -m benchmarks.console_overhead --hook-only          # ns per answer of the worker's hook

Each round runs one closed-loop step (``--concurrency`` requests in flight, one window each)
with nobody reading the console, then one while a poller fetches ``/console.json`` every
``--poll-interval`` seconds (the page polls every 1 s; the default 0.5 s is twice that), in
alternating order (ABBA...) so that drift of the machine falls on both. Reuses the benchmark's
public pieces (Mosquitto, ``start_worker``, ``start_loadgen``); prints one JSON line per step
and a summary: the mean of each mode, the difference, and the spread between rounds of the
same mode (the noise the difference must be compared with).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.processes import LOCALHOST, REPO_ROOT, one_worker_session
from benchmarks.run import model_shape


class ConsolePoller:
    """Fetches the page once, then its JSON every `interval` seconds, like an open browser tab."""

    def __init__(self, port: int, interval: float) -> None:
        self.base = f"http://{LOCALHOST}:{port}"
        self.interval = interval
        self.fetches = 0
        self.bytes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-poller", daemon=True)

    def _get(self, path: str) -> None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                self.bytes += len(response.read())
                self.fetches += 1
        except OSError:
            self.failures += 1

    def _run(self) -> None:
        self._get("/")
        while not self._stop.wait(self.interval):
            self._get("/console.json")

    def __enter__(self) -> ConsolePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def hook_cost(calls: int = 200_000) -> dict[str, float]:
    """Nanoseconds per ConsoleStats.record call (the serving thread's only console cost), best of 5,
    for an answer with a forecast and for an error; the same for the Prometheus answer counter."""
    import timeit

    import numpy as np

    from contract.errors import Overloaded
    from server_app.console import ConsoleStats
    from server_app.metrics import Metrics
    from server_app.service import Prediction

    stats = ConsoleStats()
    metrics = Metrics()
    ok = Prediction("lstm", 1, np.ones((1, 1), dtype=np.float32), 0.001)
    error = Overloaded("busy")
    received = time.monotonic()

    def best(statement: Any) -> float:
        return min(timeit.repeat(statement, number=calls, repeat=5)) / calls * 1e9

    return {
        "record_forecast_ns": round(best(lambda: stats.record("acme", "lstm", ok, received)), 1),
        "record_error_ns": round(best(lambda: stats.record("acme", "lstm", error, received)), 1),
        "prometheus_count_answer_ns": round(best(lambda: metrics.count_answer("acme", "lstm", "ok")), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--hook-only", action="store_true", help="only the micro-benchmark of the per-answer hook")
    args = parser.parse_args(argv)
    print("HOOK " + json.dumps(hook_cost()), flush=True)
    if args.hook_only:
        return 0

    window_length, features = model_shape(args.models)
    results: dict[str, list[float]] = {"off": [], "polling": []}
    with one_worker_session(args.models, args.qos, "console", window_length, features) as (worker, loadgen):
        step = {"cmd": "step", "mode": "closed", "windows": 1, "duration": args.step_s, "drain": 5.0,
                "concurrency": args.concurrency}
        loadgen.command({**step, "duration": 2.0}, timeout=60)  # warm-up, not counted
        for round_index in range(args.rounds):
            order = ("off", "polling") if round_index % 2 == 0 else ("polling", "off")
            for mode in order:
                loadgen.command({"cmd": "settle", "timeout": 10.0}, timeout=30)
                if mode == "polling":
                    with ConsolePoller(worker.health_port, args.poll_interval) as poller:
                        result = loadgen.command(step, timeout=args.step_s + 60)
                    extra: dict[str, Any] = {"fetches": poller.fetches, "failures": poller.failures,
                                             "json_bytes": poller.bytes // max(1, poller.fetches)}
                else:
                    result = loadgen.command(step, timeout=args.step_s + 60)
                    extra = {}
                results[mode].append(float(result["throughput"]))
                print(json.dumps({"round": round_index, "console": mode, "throughput": round(result["throughput"], 1),
                                  "p99_ms": result["latency_ms"]["p99"], "errors": result["errors"], **extra}),
                      flush=True)
    off, polling = results["off"], results["polling"]
    summary = {
        "off_mean": round(statistics.fmean(off), 1),
        "polling_mean": round(statistics.fmean(polling), 1),
        "difference_pct": round(100.0 * (statistics.fmean(polling) / statistics.fmean(off) - 1.0), 2),
        "off_spread_pct": round(100.0 * (max(off) - min(off)) / statistics.fmean(off), 2),
        "polling_spread_pct": round(100.0 * (max(polling) - min(polling)) / statistics.fmean(polling), 2),
        "rounds": args.rounds, "step_s": args.step_s, "concurrency": args.concurrency,
        "poll_interval_s": args.poll_interval, "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
