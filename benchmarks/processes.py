"""The benchmark's processes, started and stopped here: the bare echo worker and the load generator
(JSON lines on stdin/stdout), and our worker (`python -m server_app --config ...`, timed from
process start to /readyz 200). Only ever the pids started here are signalled."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

__all__ = [
    "LOCALHOST",
    "MODEL",
    "REPO_ROOT",
    "SHARED_GROUP",
    "TENANT",
    "BenchmarkError",
    "LineProcess",
    "WorkerProcess",
    "free_port",
    "http_status",
    "start_echo",
    "start_loadgen",
    "start_worker",
    "stop_process",
    "worker_config",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
TENANT = "bench"
MODEL = "lstm"
SHARED_GROUP = "inference"


class BenchmarkError(RuntimeError):
    """A process of the benchmark failed or did not answer in time."""


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


@contextlib.contextmanager
def one_worker_session(
    models: Path, qos: int, tag: str, window_length: int, features: int
) -> Iterator[tuple[WorkerProcess, LineProcess]]:
    """A throwaway Mosquitto, one worker and the load generator, stopped in reverse order:
    the set-up of the A/B overhead benchmarks (console, quality)."""
    import tempfile

    from tests.support.mosquitto import MosquittoBroker

    work = Path(tempfile.mkdtemp(prefix=f"bench-{tag}-"))
    with MosquittoBroker(work / "mosquitto", persistence=False) as broker:
        worker = start_worker(broker.port, models, qos, work, tag, overrides={"log_level": "WARNING"})
        try:
            loadgen = start_loadgen(broker.port, qos, work, window_length, features)
            try:
                yield worker, loadgen
            finally:
                loadgen.stop()
        finally:
            worker.stop()
