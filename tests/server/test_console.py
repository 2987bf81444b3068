"""The live console's collector and JSON (server_app/console.py), without a broker.

Clocks are injected: rates and percentiles are exact, whatever the machine's speed.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from contract.errors import InvalidWindow, Overloaded
from provisioning.embedded_broker import EmbeddedBroker
from server_app.config import parse_config
from server_app.console import (
    RATE_SLOTS,
    RATE_WINDOW_S,
    ConsoleStats,
    console_document,
    console_routes,
    worker_view,
)
from server_app.health import HealthServer
from server_app.service import Prediction
from server_app.worker import Worker
from tests.support.configs import copy_model_repository, server_config_dict
from tests.support.workers import running_worker


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def prediction(value: float, version: int = 1, windows: int = 1) -> Prediction:
    return Prediction("lstm", version, np.full((windows, 1), value, dtype=np.float32), 0.001)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats(clock: Clock) -> ConsoleStats:
    return ConsoleStats(latency_samples=100, forecast_points=5, clock=clock, wall_clock=lambda: clock.now + 1e9)


def test_counts_errors_by_code_version_and_forecasts(stats: ConsoleStats, clock: Clock) -> None:
    for n in range(7):
        stats.record("acme", "lstm", prediction(10.0 + n, version=3), clock.now - 0.002)
    stats.record("acme", "lstm", InvalidWindow("short"), clock.now)
    stats.record("acme", "lstm", Overloaded("busy"), clock.now)
    stats.record("acme", "lstm", Overloaded("busy"), clock.now)
    stats.record("<unknown>", "<unknown>", InvalidWindow("?"), clock.now)
    entry = stats.snapshot({"acme"})["tenants"]["acme"]["lstm"]
    assert entry["answers"] == 10 and entry["ok"] == 7 and entry["error_count"] == 3
    assert entry["errors"] == {"invalid_window": 1, "overloaded": 2}
    assert entry["version"] == 3
    assert [value for _, value, _ in entry["forecasts"]] == [12.0, 13.0, 14.0, 15.0, 16.0]  # the last 5 (bounded)
    assert {served_by for _, _, served_by in entry["forecasts"]} == {3}
    assert entry["skill"] is None and entry["shadow"] is None and entry["canary"] is None
    assert stats.snapshot({"acme"})["tenants"]["<unknown>"]["<unknown>"]["errors"] == {"invalid_window": 1}


def test_percentiles_are_nearest_rank_of_recent_answers(stats: ConsoleStats, clock: Clock) -> None:
    for ms in range(1, 201):  # 200 answers, 1..200 ms; only the last 100 (101..200) are kept
        stats.record("acme", "lstm", prediction(1.0), clock.now - ms / 1000.0)
    entry = stats.snapshot()["tenants"]["acme"]["lstm"]
    assert entry["latency_samples"] == 100
    assert entry["p50_ms"] == pytest.approx(150.0)
    assert entry["p99_ms"] == pytest.approx(199.0)
    assert entry["answers"] == 200  # counts are totals, not bounded samples


def test_rate_is_the_mean_of_the_last_complete_seconds(stats: ConsoleStats, clock: Clock) -> None:
    clock.now = 2000.0
    for second in range(RATE_WINDOW_S + 3):
        for _ in range(second + 1):  # 1, 2, 3, ... answers in successive seconds
            stats.record("acme", "lstm", prediction(1.0), clock.now)
        clock.now += 1.0
    entry = stats.snapshot()["tenants"]["acme"]["lstm"]
    counts = list(range(1, RATE_WINDOW_S + 4))[-RATE_WINDOW_S:]
    assert entry["rate_per_s"] == pytest.approx(sum(counts) / RATE_WINDOW_S)
    assert [count for _, count in entry["rate_history"][-RATE_WINDOW_S:]] == counts
    clock.now += RATE_SLOTS * 2  # long quiet: old slots are not mistaken for recent ones
    assert stats.snapshot()["tenants"]["acme"]["lstm"]["rate_per_s"] == 0.0


def test_memory_is_bounded_and_unconfigured_tenants_leave(stats: ConsoleStats, clock: Clock) -> None:
    for n in range(5000):
        clock.now += 0.37
        stats.record("acme", "lstm", prediction(float(n)), clock.now)
        stats.record("beta", "ann", InvalidWindow("x"), clock.now)
    snapshot = stats.snapshot({"acme", "beta"})["tenants"]
    assert len(snapshot["acme"]["lstm"]["forecasts"]) == 5
    assert snapshot["acme"]["lstm"]["latency_samples"] == 100
    assert set(stats.snapshot({"acme"})["tenants"]) == {"acme"}  # beta removed from the config by a reload
    assert set(stats.snapshot()["tenants"]) == {"acme"}


def test_actuals_and_reloads(stats: ConsoleStats, clock: Clock) -> None:
    stats.record_actual("acme", "lstm", 1.0, 2.0)  # no series yet: ignored
    stats.record("acme", "lstm", prediction(1.0), clock.now)
    stats.record_actual("acme", "lstm", 5.0, 7.5)
    stats.reload_result("applied")
    stats.reload_result("config_rejected")
    snapshot = stats.snapshot()
    assert snapshot["tenants"]["acme"]["lstm"]["actuals"] == [[5.0, 7.5]]
    assert snapshot["reload"] == {"count": 2, "last_at": clock.now + 1e9, "last_result": "config_rejected"}


@pytest.fixture
def loaded_worker(tmp_path: Path) -> Iterator[Worker]:
    """A worker with its models loaded and its serving state swapped in, never connected."""
    repository = copy_model_repository(tmp_path / "models")
    config = server_config_dict("127.0.0.1", 1, repository)
    worker = Worker(parse_config(yaml.safe_dump(config)), client_id="console-unit")
    worker._reloader.poll_once()
    worker._current_state()
    yield worker


def test_worker_view_lists_every_configured_route(loaded_worker: Worker) -> None:
    loaded_worker.console.record("acme", "lstm", prediction(4.5), 0.0)
    view = worker_view(loaded_worker)
    assert view["worker"] == "console-unit"
    assert view["broker"]["connected"] is False and view["ready"] is False
    assert view["models"]["lstm"]["default"] == 1 and view["queue_depth"] == 0
    assert view["reload"]["config_error"] is None
    assert {t: sorted(models) for t, models in view["tenants"].items()} == {"acme": ["ann", "lstm"], "beta": ["ann"]}
    assert view["tenants"]["acme"]["lstm"]["answers"] == 1
    assert view["tenants"]["beta"]["ann"] == {**view["tenants"]["beta"]["ann"], "answers": 0, "version": 1}
    document = console_document([view], "single worker")
    assert orjson.loads(orjson.dumps(document))["workers"][0]["worker"] == "console-unit"


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_health_server_serves_the_page_json_and_library(loaded_worker: Worker) -> None:
    server = HealthServer(
        "127.0.0.1", 0, lambda: (True, "ok"), lambda: (True, "ok"), lambda: b"", routes=console_routes(loaded_worker)
    )
    server.start()
    try:
        status, headers, page = _get(server.port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert b"console/uPlot.iife.min.js" in page and b"http" not in page.replace(b"http-equiv", b"")
        status, headers, body = _get(server.port, "/console.json")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "no-store"
        document: dict[str, Any] = orjson.loads(body)
        assert document["schema"] == 1 and document["workers"][0]["worker"] == "console-unit"
        status, _, library = _get(server.port, "/console/uPlot.iife.min.js")
        assert status == 200 and b"uPlot" in library
        assert _get(server.port, "/console/uPlot.LICENSE")[2].startswith(b"The MIT License")
        assert _get(server.port, "/console/../config.py")[0] == 404
    finally:
        server.stop()


@pytest.mark.parametrize("console", [True, False])
def test_health_console_switch(tmp_path: Path, amqtt_broker: EmbeddedBroker, console: bool) -> None:
    config = server_config_dict(
        "127.0.0.1", amqtt_broker.port, copy_model_repository(tmp_path / "models"), protocol="3.1.1"
    )
    config["health"] = {"port": 0, "console": console}
    with running_worker(config) as worker:
        assert worker.health_port is not None
        assert _get(worker.health_port, "/metrics")[0] == 200
        assert _get(worker.health_port, "/")[0] == (200 if console else 404)
        assert _get(worker.health_port, "/console.json")[0] == (200 if console else 404)
