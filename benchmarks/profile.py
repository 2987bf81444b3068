"""Profile the real worker under load with py-spy: where its per-message time goes.

`python -m benchmarks.profile [--out benchmarks/results] [--duration 8]`

Starts Mosquitto, `python -m server_app` (QoS 1, two models) and the load generator as in
the benchmark, then for each scenario keeps the worker saturated (closed loop) while
`py-spy record` samples it twice: once all busy threads (`--threads`; where the time of each
thread goes) and once only the thread holding the GIL (`--gil`; what the one Python core
the worker has is spent on). Writes `profile.md` (top functions by self and inclusive
share of samples, per-thread shares) and one flame graph SVG per scenario.

Needs `py-spy` (`pip install py-spy`) and ptrace permission on the worker process.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cpu_meter import CpuMeter
from benchmarks.processes import BenchmarkError, start_loadgen, start_worker
from benchmarks.run import DEFAULT_MODELS, DEFAULT_OUT, model_shape

PROFILE_NAME = "profile.md"
SAMPLE_RATE = 200


@dataclass
class Scenario:
    name: str
    title: str
    windows: int
    concurrency: int = 0  # closed loop when > 0
    rate: float = 0.0  # else open loop at this rate
    qos: int = 1
    model: str = "lstm"
    encoding: str = "json"

    def load(self, duration: float, drain: float) -> dict[str, Any]:
        offered: dict[str, Any] = (
            {"mode": "closed", "concurrency": self.concurrency}
            if self.concurrency
            else {"mode": "open", "rate": self.rate, "tick_ms": 1.0}
        )
        return {"cmd": "step", "windows": self.windows, "duration": duration, "drain": drain, "model": self.model,
                "encoding": self.encoding, **offered}


SCENARIOS = [
    Scenario("single-qos1", "single-window messages, QoS 1, saturated: closed loop, 64 outstanding", 1, 64),
    Scenario("single-qos1-2000", "single-window messages, QoS 1, open loop at 2000 requests/s", 1, rate=2000),
    Scenario("batched-qos1", "64-window messages, QoS 1, saturated: closed loop, 8 outstanding", 64, 8),
    Scenario("batched-ann-qos1", "64-window messages to the ann, QoS 1, saturated: closed loop, 8 outstanding",
             64, 8, model="ann"),
    Scenario("batched-ann-binary-qos1", "as batched-ann-qos1, binary tensors both ways", 64, 8, model="ann",
             encoding="binary"),
]


def find_py_spy() -> str:
    for candidate in (str(Path(sys.executable).parent / "py-spy"), shutil.which("py-spy")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise BenchmarkError("py-spy not found: `pip install py-spy` into this environment")


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy raw (collapsed) output: `frame;frame;...;leaf count` per line, root first."""
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    """`handle_batch (server_app/worker.py:266)` -> `handle_batch (server_app/worker.py)` (by function)."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path})" if path else name


def analyze(stacks: list[tuple[list[str], int]], threads: bool) -> dict[str, Any]:
    """Self and inclusive shares by function; per-thread shares when stacks start with a thread frame."""
    total = sum(count for _, count in stacks) or 1
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    for frames, count in stacks:
        body = frames
        if threads and frames and frames[0].startswith("thread ("):
            per_thread[_thread_name(frames)] += count
            body = frames[1:]
        names = [_short(f) for f in body if not f.startswith("process ")]
        if not names:
            continue
        self_counts[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    return {
        "samples": total,
        "self": [(name, 100.0 * c / total) for name, c in self_counts.most_common(25)],
        "inclusive": [(name, 100.0 * c / total) for name, c in inclusive.most_common(40)],
        "threads": [(name, 100.0 * c / total) for name, c in per_thread.most_common()],
    }


def _thread_name(frames: list[str]) -> str:
    """`thread (23694): paho-mqtt-client-<id>` -> `paho network` (ids differ between runs)."""
    name = frames[0].partition("): ")[2] or frames[0]
    return "paho network" if name.startswith("paho-mqtt-client") else name


def record(py_spy: str, pid: int, seconds: float, output: Path, extra: list[str]) -> str:
    command = [py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(SAMPLE_RATE), "--nonblocking", "-o",
               str(output), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if result.returncode != 0 or not output.exists():
        raise BenchmarkError(f"py-spy failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return output.read_text(errors="replace") if output.suffix == ".txt" else ""


def profile_scenario(
    scenario: Scenario, broker_port: int, broker_pid: int, models: Path, work: Path, out: Path, duration: float,
    py_spy: str,
) -> dict[str, Any]:
    window_length, features = model_shape(models)
    worker = start_worker(broker_port, models, scenario.qos, work, f"profile-{scenario.name}")
    loadgen = None
    try:
        loadgen = start_loadgen(broker_port, scenario.qos, work, window_length, features)
        meter = CpuMeter({"worker": worker.pid, "broker": broker_pid, "loadgen": loadgen.pid})
        # warm up, so the profile is of the steady state
        loadgen.command(scenario.load(1.0, 5.0), 60)
        total = 3 * duration + 3
        step_result: dict[str, Any] = {}
        usage: dict[str, Any] = {}

        def drive() -> None:
            with meter.measure(usage):
                step_result.update(loadgen.command(scenario.load(total, 10.0), total + 90))

        driver = threading.Thread(target=drive, name="drive", daemon=True)
        driver.start()
        time.sleep(1.0)
        raw_threads = record(py_spy, worker.pid, duration, work / f"{scenario.name}-threads.txt",
                             ["--format", "raw", "--threads", "--function"])
        raw_gil = record(py_spy, worker.pid, duration, work / f"{scenario.name}-gil.txt",
                         ["--format", "raw", "--gil", "--threads", "--function"])
        svg = out / f"profile-{scenario.name}.svg"
        record(py_spy, worker.pid, duration, svg, ["--format", "flamegraph", "--threads"])
        driver.join(total + 120)
    finally:
        if loadgen is not None:
            loadgen.stop()
        worker.stop()
    return {
        "scenario": scenario,
        "threads": analyze(parse_raw(raw_threads), threads=True),
        "gil": analyze(parse_raw(raw_gil), threads=True),
        "ticks": int(duration * SAMPLE_RATE),
        "load": step_result,
        "cpu": usage.get("cpu_cores", {}),
        "svg": svg.name,
    }


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Worker profile under load (py-spy)",
        "",
        f"{meta['when']}, commit `{meta['commit'][:12]}`, {meta['cpus']} CPUs. Worker: `python -m server_app` "
        "(QoS 1, models lstm + ann, shipped defaults), Mosquitto and the benchmark's load generator on the same "
        "machine; the load runs through the three recordings (busy threads, GIL holder, flame graph), py-spy "
        "samples at 200 Hz (`--nonblocking --function`).",
        "",
        "*GIL* tables: only samples where a thread held the GIL, i.e. shares of the one Python core the worker "
        "can use; *self* is time in the function itself (including C code it calls that does not release the "
        "GIL, e.g. orjson, numpy, paho's socket writes), *inclusive* adds its callees.",
        "",
    ]
    for result in results:
        scenario: Scenario = result["scenario"]
        load, cpu = result["load"], result["cpu"]
        lat = load.get("latency_ms", {})
        lines += [
            f"## {scenario.title}",
            "",
            f"Load during the recording: {load.get('throughput', 0):,.0f} answers/s "
            f"({load.get('forecasts_per_s', 0):,.0f} forecasts/s), p50 {_ms(lat.get('p50'))}, p99 "
            f"{_ms(lat.get('p99'))}; CPU cores: worker {cpu.get('worker', 0):.2f}, broker "
            f"{cpu.get('broker', 0):.2f}, load generator {cpu.get('loadgen', 0):.2f}, others "
            f"{cpu.get('others', 0):.2f}. Flame graph: [{result['svg']}]({result['svg']}).",
            "",
            f"Busy (not idle) thread samples, {result['threads']['samples']} in {result['ticks']} ticks: "
            + ", ".join(f"{name} {pct:.0f}%" for name, pct in result["threads"]["threads"]),
            "",
            f"GIL held in {result['gil']['samples']} of {result['ticks']} sampling ticks "
            f"({100.0 * result['gil']['samples'] / max(result['ticks'], 1):.0f}%); by thread: "
            + ", ".join(f"{name} {pct:.0f}%" for name, pct in result["gil"]["threads"]),
            "",
            f"### GIL holder, self time ({result['gil']['samples']} samples)",
            "",
            "| % | function |",
            "| ---: | --- |",
            *[f"| {pct:.1f} | `{name}` |" for name, pct in result["gil"]["self"][:20]],
            "",
            "### GIL holder, inclusive time",
            "",
            "| % | function |",
            "| ---: | --- |",
            *[f"| {pct:.1f} | `{name}` |" for name, pct in result["gil"]["inclusive"][:30]],
            "",
        ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per py-spy recording")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--name", default=PROFILE_NAME, help="markdown file name in --out")
    parser.add_argument("--keep-workdir", action="store_true", help="keep raw py-spy output and logs")
    args = parser.parse_args(argv)
    from tests.support.mosquitto import MosquittoBroker

    py_spy = find_py_spy()
    models = args.models.resolve()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    broker = MosquittoBroker(work / "mosquitto", persistence=False)
    broker.start()
    assert broker.pid is not None
    results = []
    try:
        for scenario in SCENARIOS:
            if args.scenario and scenario.name not in args.scenario:
                continue
            print(f"profiling {scenario.name} ...", flush=True)
            results.append(profile_scenario(scenario, broker.port, broker.pid, models, work, out, args.duration,
                                            py_spy))
    finally:
        broker.stop()
    from benchmarks.run import git_commit

    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit() or "?",
            "cpus": __import__("os").cpu_count()}
    path = out / args.name
    path.write_text(render(results, meta))
    print(path.read_text())
    if args.keep_workdir:
        print(f"raw profiles and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
