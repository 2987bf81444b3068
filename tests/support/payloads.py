"""Requests as tenants send them, paced senders, and counting the answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from tests.support.probe import MqttProbe


def windows_from_sample(count: int, length: int = 6, seed: int = 0) -> np.ndarray:
    """Raw windows in the range of the BTS load series (6..25): a drifting level plus noise."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(8, 22, size=(count, 1))
    steps = np.cumsum(rng.normal(0, 0.8, size=(count, length)), axis=1)
    return np.clip(level + steps, 6, 25).astype(np.float32).reshape(count, length, 1)


def oip_request(request_id: str, windows: np.ndarray, **parameters: Any) -> bytes:
    """An Open Inference Protocol request, id first, windows as JSON numbers, ``sent_at`` added."""
    return orjson.dumps(
        {
            "id": request_id,
            "inputs": [
                {"name": "window", "shape": list(windows.shape), "datatype": "FP32", "data": windows.ravel().tolist()}
            ],
            "parameters": {"sent_at": time.time(), **parameters},
        }
    )


def paced(count: int, rate: float) -> Iterator[int]:
    """Yield 0..count-1, sleeping so that item n is yielded at start + n / rate (bounded)."""
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield n


class PacedLoad:
    """Publish single-window requests at a fixed rate from a thread, ids `<prefix>-<n>`; bounded."""

    def __init__(self, probe: MqttProbe, topic: str, rate: float, duration_s: float, prefix: str) -> None:
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
        for n in paced(self.total, self.rate):
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
