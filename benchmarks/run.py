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
- single-window messages and batched messages (64 windows each).

Also measured: the worker's time from process start to /readyz answering 200, its RSS with
two models loaded (idle after start and the peak under load), and per step the CPU used by
the system under test, the broker, the generator and everything else on the machine (these
machines are shared: the ratio to the echo measured in the same run is the figure to trust).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO_ROOT / "models"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
LOCALHOST = "127.0.0.1"
TENANT = "bench"
MODEL = "lstm"
SHARED_GROUP = "inference"


class BenchmarkError(RuntimeError):
    """A process of the benchmark failed or did not answer in time."""


# ----------------------------------------------------------------------------------- plan


@dataclass
class PayloadPlan:
    name: str
    windows: int
    rates: list[float]
    concurrencies: list[int]


@dataclass
class Plan:
    qos_levels: list[int]
    payloads: list[PayloadPlan]
    targets: list[str] = field(default_factory=lambda: ["echo", "worker"])
    step_s: float = 2.0
    drain_s: float = 5.0
    settle_s: float = 20.0
    refine_steps: int = 2
    half_rate_step: bool = True
    p99_limit_ms: float = 50.0
    tick_ms: float = 1.0  # open loop: requests due are released on this tick (0: each at its own time)
    retry_latency_misses: bool = True  # a step that fails on p99 alone runs once more (stalls of a shared VM)
    quiet_cores: float = 0.3  # other processes above this many cores: wait before a step, flag it "disturbed"
    quiet_wait_s: float = 10.0  # longest wait for the machine to go quiet before a step
    disturbed_retries: int = 1  # a failed (open) or any (closed) disturbed step is run again, at most this often
    min_throughput_ratio: float = 0.95
    startup_runs: int = 3
    worker_overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, e.g. worker.max_delay_ms

    @staticmethod
    def full() -> Plan:
        return Plan(
            qos_levels=[1, 0],
            payloads=[
                PayloadPlan("single", 1, [1000, 2000, 4000, 6000, 8000, 12000, 16000], [1, 8, 64]),
                PayloadPlan("batched", 64, [250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000], [8, 32]),
            ],
        )

    @staticmethod
    def quick() -> Plan:
        return Plan(
            qos_levels=[1],
            payloads=[
                PayloadPlan("single", 1, [500, 1000, 2000, 4000, 8000], [8]),
                PayloadPlan("batched", 64, [250, 1000, 2000, 4000], [8]),
            ],
            step_s=1.0,
            drain_s=3.0,
            settle_s=10.0,
            refine_steps=0,
            startup_runs=1,
            quiet_wait_s=3.0,
            disturbed_retries=0,
            retry_latency_misses=False,
        )


# ------------------------------------------------------------------------------ processes


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LineProcess:
    """A child process that talks JSON lines: commands on stdin, events on stdout."""

    def __init__(self, args: list[str], name: str, log_path: Path) -> None:
        self.name = name
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
            env=_env(),
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in stdout:
                self._lines.put(line)
        self._lines.put(None)

    def event(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchmarkError(f"{self.name}: no answer within {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise BenchmarkError(f"{self.name} exited (code {self.process.poll()}); see its log")
            if line.strip():
                event: dict[str, Any] = json.loads(line)
                if event.get("event") == "failed":
                    raise BenchmarkError(f"{self.name}: {event.get('error')}")
                return event

    def command(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(command) + "\n")
            stdin.flush()
        except OSError as exc:
            raise BenchmarkError(f"{self.name}: cannot send a command: {exc}") from exc
        return self.event(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout, close_stdin=True)
        self._log.close()


def stop_process(process: subprocess.Popen[Any], timeout: float, *, close_stdin: bool = False) -> int | None:
    """Close stdin / SIGTERM, wait, SIGKILL as a last resort; only ever this one pid."""
    if close_stdin and process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(min(timeout, 3.0))
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)
    return process.returncode


def start_echo(port: int, qos: int, workdir: Path) -> LineProcess:
    echo = LineProcess(
        [sys.executable, "-m", "benchmarks.echo", "--host", LOCALHOST, "--port", str(port), "--qos", str(qos),
         "--group", SHARED_GROUP, "--client-id", f"bench-echo-q{qos}-{os.getpid()}"],
        "echo", workdir / f"echo-q{qos}.log",
    )
    echo.event(20.0)
    return echo


def start_loadgen(port: int, qos: int, workdir: Path, window_length: int, features: int) -> LineProcess:
    loadgen = LineProcess(
        [sys.executable, "-m", "benchmarks.loadgen", "--host", LOCALHOST, "--port", str(port), "--qos", str(qos),
         "--tenant", TENANT, "--model", MODEL, "--window-length", str(window_length), "--features", str(features)],
        "loadgen", workdir / f"loadgen-q{qos}.log",
    )
    loadgen.event(20.0)
    return loadgen


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def worker_config(
    broker_port: int, health_port: int, models: Path, qos: int, worker_id: str,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Shipped defaults everywhere except where the benchmark must say where things are
    (and the `overrides`, dotted keys such as `worker.max_delay_ms`)."""
    config: dict[str, Any] = {
        "broker": {"host": LOCALHOST, "port": broker_port, "qos": qos, "shared_group": SHARED_GROUP},
        "models": {"lstm": {"repository": str(models / "lstm")}, "ann": {"repository": str(models / "ann")}},
        "tenants": {TENANT: {"models": ["lstm", "ann"]}},
        "worker": {"id": worker_id},
        "health": {"host": LOCALHOST, "port": health_port},
        "log_level": "INFO",
    }
    for dotted, value in (overrides or {}).items():
        *parents, key = dotted.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return config


def parse_override(text: str) -> tuple[str, Any]:
    """`worker.max_delay_ms=0` -> ("worker.max_delay_ms", 0) (the value is YAML)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    health_port: int
    worker_id: str
    time_to_ready_s: float
    rss_ready_mb: float
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> int | None:
        code = stop_process(self.process, timeout)
        self.log.close()
        return code


def start_worker(
    broker_port: int, models: Path, qos: int, workdir: Path, tag: str, timeout: float = 60.0,
    overrides: dict[str, Any] | None = None,
) -> WorkerProcess:
    """`python -m server_app --config FILE`; time from Popen to /readyz == 200."""
    import yaml

    health_port = free_port()
    worker_id = f"bench-worker-{tag}-{os.getpid()}"
    config_path = workdir / f"worker-{tag}.yaml"
    config_path.write_text(yaml.safe_dump(worker_config(broker_port, health_port, models, qos, worker_id, overrides)))
    log_path = workdir / f"worker-{tag}.log"
    log = log_path.open("ab")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "server_app", "--config", str(config_path)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=_env(),
    )
    deadline = started + timeout
    while True:
        if process.poll() is not None:
            log.close()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise BenchmarkError(f"worker exited with code {process.returncode} before ready:\n{tail}")
        if http_status(health_port, "/readyz", timeout=0.5) == 200:
            ready = time.perf_counter() - started
            break
        if time.perf_counter() > deadline:
            stop_process(process, 10)
            log.close()
            raise BenchmarkError(f"worker not ready within {timeout:.0f} s; see {log_path}")
        time.sleep(0.005)
    rss = psutil.Process(process.pid).memory_info().rss / 2**20
    return WorkerProcess(process, health_port, worker_id, ready, rss, log_path, log)


# ------------------------------------------------------------------------------ CPU usage


class CpuMeter:
    """CPU seconds of named processes and of everything else on the machine, per interval."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _sample(self) -> tuple[float, dict[str, float], float]:
        own: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                times = proc.cpu_times()
                own[name] = times.user + times.system
            except psutil.Error:
                own[name] = 0.0
        total = psutil.cpu_times()
        busy = total.user + total.system + total.nice + getattr(total, "irq", 0.0) + getattr(total, "softirq", 0.0)
        return time.perf_counter(), own, busy

    def others_now(self, interval: float = 0.5) -> float:
        """Cores used by processes other than ours over the next `interval` seconds."""
        usage: dict[str, Any] = {}
        with self.measure(usage):
            time.sleep(interval)
        return float(usage["cpu_cores"]["others"])

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        t0, own0, busy0 = self._sample()
        yield
        t1, own1, busy1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        used = {name: (own1[name] - own0[name]) / wall for name in own0}
        others = max(0.0, (busy1 - busy0) / wall - sum(used.values()))
        into["cpu_cores"] = {**{k: round(v, 3) for k, v in used.items()}, "others": round(others, 3)}


# ------------------------------------------------------------------------------- stepping


def sustained(step: dict[str, Any], plan: Plan) -> bool:
    rate = step.get("rate")
    if rate is None:
        return False
    p99 = step["latency_ms"]["p99"]
    return bool(
        step["errors"] == 0
        and step["unanswered"] == 0
        and step["throughput"] >= plan.min_throughput_ratio * rate
        and p99 is not None
        and p99 <= plan.p99_limit_ms
    )


def missed_on_latency_only(step: dict[str, Any], plan: Plan) -> bool:
    rate = step.get("rate")
    return bool(
        rate is not None
        and not step["sustained"]
        and step["errors"] == 0
        and step["unanswered"] == 0
        and step["throughput"] >= plan.min_throughput_ratio * rate
    )


def generator_kept_up(step: dict[str, Any], plan: Plan) -> bool:
    rate = step.get("rate")
    return rate is None or step["send_rate"] >= plan.min_throughput_ratio * rate


class Session:
    """Runs steps through one load generator against one target, with CPU accounting."""

    def __init__(self, loadgen: LineProcess, meter: CpuMeter, plan: Plan, rss_pid: int) -> None:
        self.loadgen, self.meter, self.plan = loadgen, meter, plan
        self._rss_proc = psutil.Process(rss_pid)
        self.rss_peak_mb = 0.0

    def step(self, phase: str, payload: PayloadPlan, **offered: float) -> dict[str, Any]:
        command = {
            "cmd": "step",
            "mode": "open" if "rate" in offered else "closed",
            "windows": payload.windows,
            "duration": self.plan.step_s,
            "drain": self.plan.drain_s,
            "tick_ms": self.plan.tick_ms,
            **offered,
        }
        waited, others_before = self.wait_quiet()
        usage: dict[str, Any] = {}
        with self.meter.measure(usage):
            result = self.loadgen.command(command, timeout=self.plan.step_s + self.plan.drain_s + 60)
        result.update(usage)
        result["phase"] = phase
        result["waited_for_quiet_s"] = round(waited, 1)
        result["others_before"] = round(others_before, 2)
        result["disturbed"] = usage["cpu_cores"]["others"] > self.plan.quiet_cores
        if result["mode"] == "open":
            result["sustained"] = sustained(result, self.plan)
            result["generator_kept_up"] = generator_kept_up(result, self.plan)
        with contextlib.suppress(psutil.Error):
            rss = self._rss_proc.memory_info().rss / 2**20
            result["target_rss_mb"] = round(rss, 1)
            self.rss_peak_mb = max(self.rss_peak_mb, rss)
        if result["unanswered"] or (result["mode"] == "open" and not result["sustained"]):
            settled = self.loadgen.command({"cmd": "settle", "timeout": self.plan.settle_s}, self.plan.settle_s + 30)
            result["late_answers"] = settled["late_answers"]
        _progress(result)
        return result

    def wait_quiet(self) -> tuple[float, float]:
        """Wait (bounded) until other processes use less than `quiet_cores`; (waited s, their last load)."""
        started = time.perf_counter()
        others = self.meter.others_now(0.3)
        while others > self.plan.quiet_cores and time.perf_counter() - started < self.plan.quiet_wait_s:
            others = self.meter.others_now(0.5)
        return time.perf_counter() - started, others

    def open_step(self, phase: str, payload: PayloadPlan, rate: float, steps: list[dict[str, Any]]) -> bool:
        """One open-loop step; True if sustained. A failed step runs again when it was disturbed by other
        processes (at most `disturbed_retries` times) or missed on latency alone (once); the last run counts."""
        step = self.step(phase, payload, rate=rate)
        steps.append(step)
        latency_retried = False
        disturbed_retries = 0
        while not step["sustained"]:
            if step["disturbed"] and disturbed_retries < self.plan.disturbed_retries:
                disturbed_retries += 1
            elif self.plan.retry_latency_misses and not latency_retried and missed_on_latency_only(step, self.plan):
                latency_retried = True
            else:
                break
            step["superseded"] = True
            attempt = step.get("attempt", 1) + 1
            step = self.step(phase, payload, rate=rate)
            step["attempt"] = attempt
            steps.append(step)
        return bool(step["sustained"])

    def closed_step(self, payload: PayloadPlan, concurrency: int, steps: list[dict[str, Any]]) -> None:
        step = self.step("closed", payload, concurrency=concurrency)
        steps.append(step)
        for _ in range(self.plan.disturbed_retries):
            if not step["disturbed"]:
                break
            step["superseded"] = True
            attempt = step.get("attempt", 1) + 1
            step = self.step("closed", payload, concurrency=concurrency)
            step["attempt"] = attempt
            steps.append(step)

    def sweep(self, payload: PayloadPlan) -> dict[str, Any]:
        steps: list[dict[str, Any]] = []
        best: float = 0.0
        failed: float | None = None
        generator_limited = False
        for rate in payload.rates:
            ok = self.open_step("sweep", payload, rate, steps)
            if not steps[-1]["generator_kept_up"]:
                generator_limited = True
            if ok:
                best = rate
            else:
                failed = rate
                break
        if failed is not None and best > 0:
            low, high = best, failed
            for _ in range(self.plan.refine_steps):
                middle = round((low + high) / 2 / 50) * 50
                if middle <= low or middle >= high:
                    break
                if self.open_step("refine", payload, middle, steps):
                    low = best = middle
                else:
                    high = middle
        half: dict[str, Any] | None = None
        if self.plan.half_rate_step and best > 0:
            self.open_step("half", payload, round(best / 2), steps)
            half = steps[-1]
        for concurrency in payload.concurrencies:
            self.closed_step(payload, concurrency, steps)
        peak = max((s["throughput"] for s in steps if not s.get("superseded")), default=0.0)
        return {
            "name": payload.name,
            "windows": payload.windows,
            "steps": steps,
            "max_sustainable_rate": best,
            "saturated": failed is not None,
            "generator_limited": generator_limited,
            "peak_throughput": peak,
            "peak_forecasts_per_s": peak * payload.windows,
            "max_sustainable_forecasts_per_s": best * payload.windows,
            "half_rate": half,
        }


def _progress(step: dict[str, Any]) -> None:
    offered = f"rate {step['rate']:>7.0f}/s" if step["mode"] == "open" else f"conc {step['concurrency']:>5d}  "
    lat = step["latency_ms"]
    p50 = f"{lat['p50']:.2f}" if lat["p50"] is not None else "-"
    p99 = f"{lat['p99']:.2f}" if lat["p99"] is not None else "-"
    flag = "" if step["mode"] == "closed" else (" ok" if step["sustained"] else " NOT SUSTAINED")
    print(
        f"    {step['phase']:<6} {offered} w={step['windows']:<2} sent {step['sent']:>6} ans {step['answered']:>6} "
        f"err {step['errors']} lost {step['unanswered']} thr {step['throughput']:>8.0f}/s p50 {p50} p99 {p99} ms"
        f" cpu {step.get('cpu_cores')}{flag}",
        flush=True,
    )


# ---------------------------------------------------------------------------------- run


def model_shape(models: Path) -> tuple[int, int]:
    metadata = json.loads((models / MODEL / "1" / "metadata.json").read_text())
    return int(metadata["window_length"]), int(metadata["features"])


def _git_commit() -> str | None:
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
        "git_commit": _git_commit(),
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
    from tests.brokers import MosquittoBroker

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
        for qos in plan.qos_levels:
            for target in plan.targets:
                print(f"{target}, QoS {qos}:", flush=True)
                blocks.append(_run_block(target, qos, plan, broker.port, broker_pid, models, work,
                                         window_length, features))
    finally:
        broker.stop()
    report["blocks"] = blocks
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
        block["payloads"] = [session.sweep(payload) for payload in plan.payloads]
        block["rss_peak_mb"] = round(max(session.rss_peak_mb, block["rss_ready_mb"]), 1)
    finally:
        if loadgen is not None:
            loadgen.stop()  # closing its stdin ends its command loop; it disconnects cleanly
        if echo is not None:
            echo.stop()
        if worker is not None:
            block["exit_code"] = worker.stop()
    return block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~30 s: QoS 1 only, 1 s steps, fewer rates")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON, report.md and PNG go")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model repository with lstm/1 and ann/1")
    parser.add_argument("--qos", type=int, action="append", choices=(0, 1), help="only these QoS levels")
    parser.add_argument("--step-s", type=float, help="seconds per step")
    parser.add_argument("--targets", help="comma-separated subset of echo,worker (default both)")
    parser.add_argument("--payloads", help="comma-separated subset of single,batched (default both)")
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
