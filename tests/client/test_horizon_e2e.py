"""End to end with a multi-step model: a real worker (`python -m server_app`) serving an
imported TFLite forecaster with a horizon of 3 steps, and the tenant client against it.

The model is the bring-your-own ANN of tests/support/byo_models.py (built with TensorFlow
once per run), imported with ``--forecast-output 0:3``: the worker answers ``[n, 3]``."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from client_app.cli import run
from client_app.client import TenantClient
from client_app.config import TenantClientConfig
from client_app.data import load_windows
from client_app.modes import RunOptions, RunResult
from ml_training.cli import main as ml_training_main
from server_app.runtime import load_model_version
from tests.client.conftest import STATION

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HORIZON = 3


@pytest.fixture(scope="module")
def horizon_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from tests.support.byo_models import build_models

    models = build_models(tmp_path_factory.getbasetemp() / "byo-models")
    repository = tmp_path_factory.mktemp("horizon-models")
    code = ml_training_main([
        "import", str(models["ann_any_length"]), "--name", "steps", "--repository", str(repository),
        "--normalization", "tutorial", "--offset", "15", "--scale", "10", "--window", "6",
        "--forecast-output", f"0:{HORIZON}",
    ])
    assert code == 0
    return repository


@pytest.fixture
def worker(mosquitto: Any, horizon_repository: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    config = {
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "shared_group": None, "qos": 1},
        "models": {"steps": {"repository": str(horizon_repository / "steps")}},
        "tenants": {"acme": {"models": ["steps"]}},
        "worker": {"id": "client-horizon-worker"},
        "health": {"port": 0},
    }
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "server_app", "--config", str(path)], cwd=REPO,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text()[-3000:]


def test_client_scores_a_served_horizon_per_step(
    worker: subprocess.Popen[bytes], mosquitto: Any, horizon_repository: Path,
    make_config: Callable[..., TenantClientConfig], sample_csv: Path,
) -> None:
    config = make_config(mosquitto.host, mosquitto.port, model="steps", request_timeout_s=60)
    windows = load_windows(sample_csv, station=STATION, parameter=122, window=6, resample_s=None)
    reference = load_model_version(horizon_repository / "steps" / "1").predict(
        windows.x[:4].astype(np.float32)[..., np.newaxis]
    )
    assert reference.shape == (4, HORIZON)
    # the first request waits for the worker: MQTT 5 "no matching subscribers" is published again
    with TenantClient(config) as client:
        answer = client.request(windows.x[:4])
    assert answer.ok, answer
    assert answer.horizon == HORIZON and answer.steps is not None
    np.testing.assert_allclose(np.array(answer.steps), reference, atol=1e-5, rtol=0)
    assert answer.forecasts == tuple(row[0] for row in answer.steps)

    out, err = io.StringIO(), io.StringIO()
    result = run(config.model_copy(update={"request_timeout_s": 10.0}),
                 RunOptions(mode="stream", count=10, batch=4, rate=None), out=out, err=err)
    assert isinstance(result, RunResult), err.getvalue()
    summary = result.summary
    assert (summary.sent, summary.answered, summary.errors, summary.forecasts) == (10, 10, 0, 40)
    assert summary.horizon == HORIZON and summary.forecasts_by_step == (40, 40, 40)
    served = load_model_version(horizon_repository / "steps" / "1").predict(
        windows.x[:40].astype(np.float32)[..., np.newaxis]
    )
    for h in range(HORIZON):
        expected = float(np.mean(np.abs(served[:, h] - windows.y[h : 40 + h])))
        assert summary.mae_by_step[h] == pytest.approx(expected, abs=1e-4)
    assert summary.mae == pytest.approx(summary.mae_by_step[0])
    assert len(out.getvalue().splitlines()) == 40
