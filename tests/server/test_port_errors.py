"""A port that is already taken: one line naming the port and the setting, exit 1, no traceback.

Runs the real `python -m server_app` (embedded broker, copies of the shipped models) with a
port held by a listening socket of the test.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.configs import copy_model_repository
from tests.support.workers import run_server

TIMEOUT_S = 120  # generous: model loading on a busy machine; the error comes right after


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _run_server(tmp_path: Path, broker_port: int, health_port: int | None) -> subprocess.CompletedProcess[str]:
    repository = copy_model_repository(tmp_path / "models")
    config: dict[str, Any] = {
        "broker": {"host": "embedded", "port": broker_port},
        "models": {"lstm": {"repository": str(repository / "lstm")}},
        "tenants": {"acme": {"models": ["lstm"]}},
        "health": {"port": health_port},
    }
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_server(path, timeout=TIMEOUT_S)


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_health_port_taken(tmp_path: Path, taken_port: int) -> None:
    result = _run_server(tmp_path, broker_port=0, health_port=taken_port)
    assert result.returncode == 1, result.stderr
    line = _error_line(result.stderr)
    assert f"health.port {taken_port}" in line and "in use" in line, line


def test_embedded_broker_port_taken(tmp_path: Path, taken_port: int) -> None:
    result = _run_server(tmp_path, broker_port=taken_port, health_port=None)
    assert result.returncode == 1, result.stderr
    line = _error_line(result.stderr)
    assert f"broker.port {taken_port}" in line and "in use" in line, line
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # nothing from amqtt before it
