"""Helpers to run real workers against the test brokers and to talk to them like tenants."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from server_app.config import ServerConfig, parse_config
from server_app.worker import Worker

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS = Path(os.environ.get("TEST_SHIPPED_MODELS", REPO_ROOT / "models"))


def copy_model_repository(target: Path, names: tuple[str, ...] = ("lstm", "ann")) -> Path:
    """A private copy of the shipped models (tests add versions to it freely)."""
    for name in names:
        source = SHIPPED_MODELS / name / "1"
        assert (source / "model.tflite").is_file(), f"shipped model {source} missing: run `make models`"
        shutil.copytree(source, target / name / "1", ignore=shutil.ignore_patterns("saved_model", "*.keras", "*.png"))
    return target


def add_version(repository: Path, name: str, version: int, source_version: int = 1) -> Path:
    """Publish a copy of an existing version as a new one, atomically (temp folder + rename)."""
    temp = repository / name / f".tmp-{uuid.uuid4().hex}"
    shutil.copytree(repository / name / str(source_version), temp)
    final = repository / name / str(version)
    temp.rename(final)
    return final


def server_config_dict(
    host: str,
    port: int,
    repository: Path,
    *,
    shared_group: str | None = None,
    protocol: str = "auto",
    tenants: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker": {"host": host, "port": port, "shared_group": shared_group, "protocol": protocol, "qos": 1},
        "models": models
        or {"lstm": {"repository": str(repository / "lstm")}, "ann": {"repository": str(repository / "ann")}},
        "tenants": tenants or {"acme": {"models": ["lstm", "ann"]}, "beta": {"models": ["ann"]}},
        "health": {"port": None},
        "reload": {"poll_interval_s": 0.2},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write atomically, as an operator's tooling (or a ConfigMap update) would."""
    temp = path.with_suffix(".tmp")
    temp.write_text(yaml.safe_dump(config))
    temp.replace(path)
    return path


@contextmanager
def running_worker(
    config: ServerConfig | dict[str, Any], config_path: Path | None = None, *, client_id: str | None = None
) -> Iterator[Worker]:
    if isinstance(config, dict):
        config = parse_config(yaml.safe_dump(config))
    worker = Worker(config, config_path, client_id=client_id or f"test-worker-{uuid.uuid4().hex[:6]}")
    worker.start()
    try:
        assert worker.wait_ready(15), f"worker not ready: {worker.ready()[1]}"
        yield worker
    finally:
        worker.stop()


def windows_from_sample(count: int, length: int = 6, seed: int = 0) -> np.ndarray:
    """Raw windows in the range of the BTS load series (6..25): a drifting level plus noise."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(8, 22, size=(count, 1))
    steps = np.cumsum(rng.normal(0, 0.8, size=(count, length)), axis=1)
    return np.clip(level + steps, 6, 25).astype(np.float32).reshape(count, length, 1)


def oip_request(request_id: str, windows: np.ndarray, **parameters: Any) -> bytes:
    return orjson.dumps(
        {
            "id": request_id,
            "inputs": [
                {"name": "window", "shape": list(windows.shape), "datatype": "FP32", "data": windows.ravel().tolist()}
            ],
            "parameters": {"sent_at": time.time(), **parameters},
        }
    )


class AnswerCounter:
    """Counts answers by id from probe messages: exactly-once checks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[str, list[dict[str, Any]]] = {}

    def add(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.by_id.setdefault(str(body.get("id")), []).append(body)


class PacedLoad:
    """Publish single-window requests at a fixed rate from a thread, ids `<prefix>-<n>`; bounded."""

    def __init__(self, probe: Any, topic: str, rate: float, duration_s: float, prefix: str) -> None:
        self.probe = probe
        self.topic = topic
        self.rate = rate
        self.total = int(rate * duration_s)
        self.prefix = prefix
        self.sent: list[str] = []
        self.send_times: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="paced-load", daemon=True)
        self._windows = windows_from_sample(64, seed=7)

    def _run(self) -> None:
        start = time.monotonic()
        for n in range(self.total):
            delay = start + n / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            request_id = f"{self.prefix}-{n:06d}"
            self.send_times[request_id] = time.monotonic()
            self.probe.publish(self.topic, oip_request(request_id, self._windows[n % 64 : n % 64 + 1]), wait=False)
            self.sent.append(request_id)

    def start(self) -> PacedLoad:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "load generator did not finish"


def start_server_process(
    config_path: Path, log_path: Path, *extra_args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m server_app --config ...` as a user would run it; output to a log file."""
    return subprocess.Popen(
        [sys.executable, "-m", "server_app", "--config", str(config_path), *extra_args],
        cwd=REPO_ROOT,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM and wait (kill if it overstays); returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    return int(process.returncode)


def wait_worker_status(probe: Any, worker_id: str, state: str = "serving", timeout: float = 30.0) -> dict[str, Any]:
    """Wait for a worker's retained status (the probe must subscribe to service/workers/+/status)."""
    found = probe.wait_for(
        lambda m: m.topic == f"service/workers/{worker_id}/status" and m.json().get("state") == state,
        timeout=timeout,
    )
    body: dict[str, Any] = found[-1].json()
    return body


def count_answers(messages: list[Any]) -> tuple[dict[str, int], dict[str, int], list[dict[str, Any]]]:
    """(answers per id, answers per worker, error bodies) from response messages."""
    per_id: dict[str, int] = {}
    per_worker: dict[str, int] = {}
    errors: list[dict[str, Any]] = []
    for message in messages:
        body = message.json()
        per_id[body["id"]] = per_id.get(body["id"], 0) + 1
        if "error" in body:
            errors.append(body)
        else:
            worker = body["parameters"]["worker"]
            per_worker[worker] = per_worker.get(worker, 0) + 1
    return per_id, per_worker, errors
