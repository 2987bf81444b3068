"""The suite's one way to run the server: in this process (:func:`running_worker`) or as
``python -m server_app`` (:class:`ServerProcess`, :func:`run_server`); and reading what a
running server says (status messages, Prometheus metrics, memory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server_app.config import ServerConfig, parse_config
from server_app.worker import Worker
from tests.support.configs import REPO_ROOT
from tests.support.ports import LOCALHOST, free_port
from tests.support.probe import MqttProbe

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


@contextmanager
def running_worker(
    config: ServerConfig | dict[str, Any],
    config_path: Path | None = None,
    *,
    client_id: str | None = None,
    worker_id: str | None = None,
    ready_within: float | None = 15.0,
) -> Iterator[Worker]:
    """A :class:`Worker` in this process, stopped at exit.

    The client id is a random ``test-worker-…`` unless given; with ``worker_id`` (a dict
    config) the worker gets that public id and derives its client id as production does.
    It must be ready within ``ready_within`` seconds (None: do not wait).
    """
    if worker_id is not None:
        assert isinstance(config, dict), "worker_id needs a dict config"
        config = {**config, "worker": {**config.get("worker", {}), "id": worker_id}}
    elif client_id is None:
        client_id = f"test-worker-{uuid.uuid4().hex[:6]}"
    if isinstance(config, dict):
        config = parse_config(yaml.safe_dump(config))
    worker = Worker(config, config_path, client_id=client_id)
    worker.start()
    try:
        if ready_within is not None:
            assert worker.wait_ready(ready_within), f"worker not ready: {worker.ready()[1]}"
        yield worker
    finally:
        worker.stop()


def _server_command(config_path: Path, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "server_app", "--config", str(config_path), *args]


def run_server(config_path: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m server_app`` to its end (start-up errors); output captured as text."""
    return subprocess.run(
        _server_command(config_path, args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


class ServerProcess:
    """``python -m server_app --config FILE [ARGS]`` as a user runs it (a worker, or a
    supervisor with ``--workers N``): its own session, output appended to ``log_path``.

    :meth:`worker` writes a config with a fixed ``worker.id`` (a restart resumes the same
    persistent MQTT session) and the health endpoint on a free port: readiness, metrics.
    ``with`` starts it (and waits until ready when the health port is known) and stops it.
    """

    def __init__(self, config_path: Path, log_path: Path, *args: str, health_port: int | None = None,
                 env: dict[str, str] | None = None, start_timeout: float = 60.0) -> None:  # fmt: skip
        self.config_path = config_path
        self.log_path = log_path
        self.args = args
        self.health_port = health_port
        self.env = env or {}
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @classmethod
    def worker(cls, config: dict[str, Any], workdir: Path, *, worker_id: str, **kwargs: Any) -> ServerProcess:
        """One worker with ``worker.id`` fixed, health on a free port, log level WARNING by default."""
        workdir.mkdir(parents=True, exist_ok=True)
        health_port = free_port()
        config = {**config, "worker": {**config.get("worker", {}), "id": worker_id}}
        config["health"] = {"host": LOCALHOST, "port": health_port}
        config.setdefault("log_level", "WARNING")
        config_path = workdir / f"{worker_id}.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return cls(config_path, workdir / f"{worker_id}.log", health_port=health_port, **kwargs)

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def start(self) -> ServerProcess:
        assert not self.is_running(), "server already running"
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            _server_command(self.config_path, self.args),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        self.starts += 1
        return self

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        assert self.health_port, "this server has no known health port"
        url = f"http://{LOCALHOST}:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def wait_ready(self, timeout: float | None = None) -> ServerProcess:
        """Poll /readyz until 200; AssertionError (with the log tail) if it exits or times out."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.is_running():
                raise AssertionError(f"server {self.config_path.name} exited during start\n{self.log_tail()}")
            try:
                status, body = self._get("/readyz", timeout=1.0)
                if status == 200:
                    return self
                last = body.decode(errors="replace").strip()
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise AssertionError(f"server {self.config_path.name} not ready in time: {last}\n{self.log_tail()}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_signal(self, signum: int) -> None:
        assert self.process is not None, "server not started"
        self.process.send_signal(signum)

    def metrics(self) -> Samples:
        status, body = self._get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return prometheus_samples(body.decode())

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def children(self) -> list[psutil.Process]:
        """A supervisor's worker processes (not multiprocessing's resource tracker)."""
        return [
            child
            for child in psutil.Process(self.pid).children()
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline())
        ]

    def kill(self) -> None:
        """SIGKILL, like an OOM kill or a node failure: no drain, no DISCONNECT."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL if it overstays; the exit code (None if never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._close_log()
        return process.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {self.log_path} (last {lines} lines)\n" + "\n".join(text[-lines:])

    def __enter__(self) -> ServerProcess:
        self.start()
        return self.wait_ready() if self.health_port else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RssSampler:
    """Samples a server process's RSS every ``interval`` seconds while in a ``with`` block."""

    def __init__(self, server: ServerProcess, interval: float = 0.05) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.server.rss())
            except Exception:  # the process may be gone at the very end
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_worker_status(
    probe: MqttProbe,
    worker_id: str,
    state: str = "serving",
    timeout: float = 30.0,
    *,
    where: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Wait for a worker's status in ``state`` (or one for which ``where(status)`` holds);
    the probe must subscribe to service/workers/+/status. The latest such status."""
    wanted = where or (lambda status: status.get("state") == state)
    found = probe.wait_for(
        lambda m: m.topic == f"service/workers/{worker_id}/status" and wanted(m.json()), timeout=timeout
    )
    body: dict[str, Any] = found[-1].json()
    return body


def prometheus_samples(text: str) -> Samples:
    """/metrics text as ``{(name, sorted labels): value}``."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def sum_samples(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        got = dict(sample_labels)
        if sample_name == name and all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total
