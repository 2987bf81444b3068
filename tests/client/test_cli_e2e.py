"""End to end: the real server (`python -m server_app`, shipped models) and the real client CLI.

The server serves a copy of the shipped versions (never the live `models/` folder, where a
user's own training run may have added versions).

Both run as subprocesses against a test Mosquitto; the example tenant configs are used with
only the broker port changed, so they are checked against the shipped models too.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from client_app.config import load_client_config
from tests.support.configs import SHIPPED_MODELS, copy_model_repository
from tests.support.mosquitto import MosquittoBroker
from tests.support.probe import MqttProbe

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "tenants"
WORKER_ID = "client-e2e-worker"


def _metadata(model: str) -> dict[str, Any]:
    path = SHIPPED_MODELS / model / "1" / "metadata.json"
    assert path.is_file(), f"shipped model {path.parent} missing: train it (python -m ml_training ...)"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_example_configs_match_the_shipped_models() -> None:
    for name in ("acme", "beta", "course"):
        config = load_client_config(EXAMPLES / f"{name}.json")
        meta = _metadata(config.model)
        assert config.window == meta["window_length"], name
        assert config.resample_s == meta["data"]["resample_seconds"], name
        assert config.parameter == meta["data"]["parameter_id"], name
        assert config.station in meta["data"]["stations"], name
        if config.normalization is not None:
            assert config.normalization.offset == pytest.approx(meta["normalization"]["offset"]), name
            assert config.normalization.scale == pytest.approx(meta["normalization"]["scale"]), name


def _tenant_file(tmp_path: Path, name: str, port: int) -> Path:
    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    raw["broker"]["port"] = port
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture
def server(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    for model in ("lstm", "ann"):
        _metadata(model)
    models = copy_model_repository(tmp_path / "models")
    config = {
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "shared_group": None, "qos": 1},
        "models": {"lstm": {"repository": str(models / "lstm")}, "ann": {"repository": str(models / "ann")}},
        "tenants": {
            "acme": {"models": ["lstm"]},
            "beta": {"models": ["ann"]},
            "course": {"models": ["lstm"], "format": "tutorial", "in_queue": "inqueue/lstm",
                       "out_queue": "outqueue/lstm"},
        },
        "worker": {"id": WORKER_ID},
        "health": {"port": 0},
    }
    config_path = tmp_path / "server.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log, MqttProbe(mosquitto.host, mosquitto.port, protocol="5") as probe:
        probe.subscribe(f"service/workers/{WORKER_ID}/status")
        process = subprocess.Popen(
            [sys.executable, "-m", "server_app", "--config", str(config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            try:
                probe.wait_for(lambda m: m.json().get("state") == "serving", timeout=60)
            except TimeoutError:
                pytest.fail(f"server did not report serving:\n{log_path.read_text(errors='replace')[-3000:]}")
            yield process
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
            assert code == 0, f"server exit code {code}:\n{log_path.read_text(errors='replace')[-3000:]}"
            assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _client(
    tenant_file: Path, *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "client_app", "--config", str(tenant_file), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("SUMMARY "), f"no SUMMARY line; stderr:\n{result.stderr}"
    summary: dict[str, Any] = json.loads(lines[-1].removeprefix("SUMMARY "))
    return result, summary


def test_stream_against_the_real_server(
    server: subprocess.Popen[bytes], mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    acme = _tenant_file(tmp_path, "acme", mosquitto.port)
    result, summary = _client(acme, "--mode", "stream", "--count", "50", "--rate", "100")
    assert result.returncode == 0, result.stderr
    assert summary["sent"] == summary["answered"] == 50
    assert summary["errors"] == 0 and summary["unanswered"] == 0
    assert summary["mae"] is not None and math.isfinite(summary["mae"])
    assert summary["mae"] < 5  # raw units; the shipped models reach ~0.8 on held-out data
    assert summary["model_versions"] == {"1": 50}
    lines = result.stdout.splitlines()
    assert len(lines) == 50 and lines[0].startswith("acme lstm v1 id=acme-")

    beta = _tenant_file(tmp_path, "beta", mosquitto.port)
    result, summary = _client(beta, "--mode", "bulk", "--count", "200")
    assert result.returncode == 0, result.stderr
    forecasts = json.loads(result.stdout)
    assert len(forecasts) == 200 and all(isinstance(v, float) and 0 < v < 50 for v in forecasts)
    assert summary["answered"] == summary["sent"] == 4 and summary["errors"] == 0

    course = _tenant_file(tmp_path, "course", mosquitto.port)
    result, summary = _client(course, "--mode", "stream", "--count", "20", "--rate", "50")
    assert result.returncode == 0, result.stderr
    assert summary["sent"] == summary["answered"] == 20 and summary["errors"] == 0
    assert summary["mae"] is not None and summary["mae"] < 5


def test_errors_from_the_real_server_are_counted(
    server: subprocess.Popen[bytes], mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    raw = json.loads((EXAMPLES / "beta.json").read_text())
    raw["broker"]["port"] = mosquitto.port
    raw["model"] = "lstm"  # beta may only use ann
    path = tmp_path / "beta-lstm.json"
    path.write_text(json.dumps(raw))
    result, summary = _client(path, "--mode", "no-wait", "--count", "5", "--rate", "0")
    assert result.returncode == 0, result.stderr  # errors are answers
    assert summary["errors_by_code"] == {"model_not_allowed": 5} and summary["unanswered"] == 0
    result, summary = _client(path, "--mode", "wait")
    assert result.returncode == 1 and "error model_not_allowed" in result.stdout


def test_binary_tensors_give_the_json_forecasts(
    server: subprocess.Popen[bytes], mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """`binary: true` in the tenant config: the same bulk forecasts as JSON, every message answered."""
    as_json = _tenant_file(tmp_path, "beta", mosquitto.port)
    raw = json.loads(as_json.read_text())
    as_binary = tmp_path / "beta-binary.json"
    as_binary.write_text(json.dumps({**raw, "binary": True}))
    forecasts = {}
    for name, path in (("json", as_json), ("binary", as_binary)):
        result, summary = _client(path, "--mode", "bulk", "--count", "150", "--batch", "32")
        assert result.returncode == 0, result.stderr
        assert summary["sent"] == summary["answered"] == 5 and summary["errors"] == summary["unanswered"] == 0
        forecasts[name] = json.loads(result.stdout)
    assert len(forecasts["binary"]) == 150
    # float32 both ways: the JSON text is the shortest exact float32, the binary the float32 itself
    np.testing.assert_array_equal(np.array(forecasts["binary"], dtype=np.float32),
                                  np.array(forecasts["json"], dtype=np.float32))
