"""Does scoring forecasts online cost throughput? The same closed-loop steps with requests
that name their series and time (the service tracks and scores them, issue 14) and without,
alternated (ABBA...), single-window and 64-window messages, one worker, one real Mosquitto.

    python -m benchmarks.quality_overhead                  # 4 rounds x 2 sizes x 2 modes x 5 s, ~2 min
    python -m benchmarks.quality_overhead --rounds 6 --step-s 8

Prints one JSON line per step and a SUMMARY per message size: the mean throughput of each mode,
their ratio, and the spread between rounds of the same mode (the noise to compare it with).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.processes import REPO_ROOT, one_worker_session
from benchmarks.run import model_shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models")
    args = parser.parse_args(argv)

    window_length, features = model_shape(args.models)
    results: dict[tuple[int, bool], list[float]] = {}
    with one_worker_session(args.models, args.qos, "quality", window_length, features) as (_worker, loadgen):
        for windows in (1, 64):
            step = {"cmd": "step", "mode": "closed", "windows": windows, "duration": args.step_s, "drain": 5.0,
                    "concurrency": args.concurrency if windows == 1 else max(1, args.concurrency // 8)}
            loadgen.command({**step, "duration": 2.0, "series": True}, timeout=60)  # warm-up (River import too)
            for round_index in range(args.rounds):
                order = (False, True) if round_index % 2 == 0 else (True, False)
                for series in order:
                    loadgen.command({"cmd": "settle", "timeout": 10.0}, timeout=30)
                    result = loadgen.command({**step, "series": series}, timeout=args.step_s + 60)
                    forecasts = float(result["throughput"]) * windows
                    results.setdefault((windows, series), []).append(forecasts)
                    print(json.dumps({"round": round_index, "windows": windows, "tracking": series,
                                      "forecasts_per_s": round(forecasts, 1), "p99_ms": result["latency_ms"]["p99"],
                                      "errors": result["errors"]}), flush=True)
    for windows in (1, 64):
        off, on = results[(windows, False)], results[(windows, True)]
        summary = {
            "windows_per_message": windows,
            "off_forecasts_per_s": round(statistics.fmean(off), 1),
            "on_forecasts_per_s": round(statistics.fmean(on), 1),
            "on_over_off": round(statistics.fmean(on) / statistics.fmean(off), 3),
            "off_spread_pct": round(100.0 * (max(off) - min(off)) / statistics.fmean(off), 1),
            "on_spread_pct": round(100.0 * (max(on) - min(on)) / statistics.fmean(on), 1),
            "rounds": args.rounds, "step_s": args.step_s, "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
