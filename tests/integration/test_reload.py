"""Hot reload: new versions and config changes while serving, no restart, no lost request."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import REPO_ROOT, add_version, server_config_dict, write_config
from tests.support.messages import ReceivedMessage
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import PacedLoad, oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess, running_worker, wait_worker_status

pytestmark = pytest.mark.integration


def _config(mosquitto: MosquittoBroker, repository: Path, **kwargs: Any) -> dict[str, Any]:
    return server_config_dict(mosquitto.connect_host, mosquitto.port, repository, shared_group="inference", **kwargs)


def _status(message: ReceivedMessage) -> dict[str, Any]:
    body: dict[str, Any] = message.json()
    return body


def _default_version(message: ReceivedMessage, model: str) -> int | None:
    models = _status(message).get("models", {})
    return models.get(model, {}).get("default")


def test_swap_twice_under_sustained_load(mosquitto: MosquittoBroker, repository: Path, tmp_path: Path) -> None:
    """>= 500 req/s for 12 s, QoS 1: a new version appears, then config pins the old one back."""
    config_path = write_config(tmp_path / "server.yaml", _config(mosquitto, repository))
    config = json.loads(json.dumps(_config(mosquitto, repository)))
    with (
        running_worker(config, config_path, client_id="reload-worker"),
        MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect() as observer,
        MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect() as sender,
    ):
        observer.subscribe(["tenants/acme/models/lstm/responses", "service/workers/reload-worker/status"])
        load = PacedLoad(sender, "tenants/acme/models/lstm/requests", rate=600, duration_s=12, prefix="load").start()
        time.sleep(3)
        added_at = time.monotonic()
        add_version(repository, "lstm", 2)
        time.sleep(4)
        config["models"]["lstm"]["version"] = 1
        pinned_at = time.monotonic()
        write_config(config_path, config)
        load.join(timeout=30)
        observer.wait_for(lambda m: m.topic.endswith("/responses"), count=len(load.sent), timeout=30)
        messages = observer.messages

    responses = [m for m in messages if m.topic.endswith("/responses")]
    statuses = [m for m in messages if m.topic.endswith("/status")]
    counts: dict[str, int] = {}
    for message in responses:
        body = message.json()
        assert "error" not in body, body
        counts[body["id"]] = counts.get(body["id"], 0) + 1
    assert counts == {request_id: 1 for request_id in load.sent}, "every request answered exactly once"
    assert len(load.sent) >= 500 * 10

    # Switch 1: version 2 appears -> served within 2 s; after the status says 2, never 1 again (until the pin).
    v2_status = next(m for m in statuses if _default_version(m, "lstm") == 2)
    v1_status = next(m for m in statuses if m.received_at > v2_status.received_at and _default_version(m, "lstm") == 1)
    first_v2 = next(m for m in responses if m.json()["model_version"] == "2")
    assert first_v2.received_at - added_at < 2.0
    assert v1_status.received_at - pinned_at < 2.0
    order = {id(m): i for i, m in enumerate(messages)}
    between = [m for m in responses if order[id(v2_status)] < order[id(m)] < order[id(v1_status)]]
    after = [m for m in responses if order[id(m)] > order[id(v1_status)]]
    assert between and {m.json()["model_version"] for m in between} == {"2"}
    assert after and {m.json()["model_version"] for m in after} == {"1"}
    before = [m for m in responses if order[id(m)] < order[id(v2_status)]]
    assert before and {m.json()["model_version"] for m in before} == {"1"}


def test_corrupt_version_keeps_old_one_serving(
    mosquitto: MosquittoBroker, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(mosquitto, repository)
    with running_worker(config, client_id="corrupt-worker") as worker, MqttProbe(
        mosquitto.connect_host, mosquitto.port, protocol="5"
    ).connect() as probe:
        probe.subscribe(["tenants/acme/models/lstm/responses", "service/workers/corrupt-worker/status"])
        caplog.set_level(logging.ERROR, logger="server_app")
        broken = add_version(repository, "lstm", 2)
        (broken / "model.tflite").write_bytes(b"this is not a flatbuffer" * 100)
        mismatched = add_version(repository, "ann", 2)
        metadata = json.loads((mismatched / "metadata.json").read_text())
        metadata["window_length"] = 7
        (mismatched / "metadata.json").write_text(json.dumps(metadata))
        half_written = repository / "lstm" / ".tmp-in-progress"
        half_written.mkdir()
        status = probe.wait_for(
            lambda m: m.topic.endswith("/status") and "lstm/2" in m.json().get("failures", {})
            and "ann/2" in m.json().get("failures", {}),
            timeout=10,
        )[-1].json()
        assert "disagrees with metadata" in status["failures"]["ann/2"]
        assert status["models"]["lstm"]["default"] == 1 and status["models"]["ann"]["default"] == 1
        probe.publish("tenants/acme/models/lstm/requests", oip_request("after-corrupt", windows_from_sample(1)))
        answer = probe.wait_for(lambda m: m.topic.endswith("/responses"), timeout=10)[0].json()
        assert answer["id"] == "after-corrupt" and answer["model_version"] == "1"
        assert worker.ready()[0]
    assert any("lstm version 2 failed to load" in r.getMessage() for r in caplog.records)


def test_invalid_config_is_rejected_and_valid_one_applied(
    mosquitto: MosquittoBroker, repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(mosquitto, repository)
    config_path = write_config(tmp_path / "server.yaml", config)
    caplog.set_level(logging.ERROR, logger="server_app")
    with running_worker(config, config_path, client_id="cfg-worker") as worker, MqttProbe(
        mosquitto.connect_host, mosquitto.port, protocol="5"
    ).connect() as probe:
        probe.subscribe(["tenants/+/models/+/responses", "service/workers/cfg-worker/status"])
        config_path.write_text("tenants: {acme: {models: [nonexistent]}}\nmodels: {}\n")
        status = probe.wait_for(lambda m: m.topic.endswith("/status") and "config_error" in m.json(), timeout=10)
        assert "server.yaml" in status[-1].json()["config_error"]
        probe.publish("tenants/acme/models/lstm/requests", oip_request("still-served", windows_from_sample(1)))
        assert probe.wait_for(lambda m: m.topic.endswith("/responses"), timeout=10)[0].json()["id"] == "still-served"

        # A valid change: a new tenant with a per-tenant pin, batching settings changed.
        add_version(repository, "lstm", 2)
        config["tenants"]["gamma"] = {"models": ["lstm"], "versions": {"lstm": 1}}
        config["worker"] = {"max_batch": 16, "max_delay_ms": 0}
        write_config(config_path, config)
        probe.wait_for(
            lambda m: m.topic.endswith("/status") and m.json().get("routes", {}).get("gamma/lstm") == 1
            and m.json().get("routes", {}).get("acme/lstm") == 2 and "config_error" not in m.json(),
            timeout=10,
        )
        probe.clear()
        probe.publish("tenants/gamma/models/lstm/requests", oip_request("g1", windows_from_sample(1)))
        probe.publish("tenants/acme/models/lstm/requests", oip_request("a1", windows_from_sample(1)))
        answers = {m.json()["id"]: m.json()["model_version"] for m in probe.wait_for(2, timeout=10)}
        assert answers == {"g1": "1", "a1": "2"}
        assert worker.ready()[0]
    assert any("config reload rejected" in r.getMessage() for r in caplog.records)


def _serves_lstm_2(status: dict[str, Any]) -> bool:
    return bool(status.get("models", {}).get("lstm", {}).get("default") == 2)


def test_sighup_reloads_a_subprocess_server(mosquitto: MosquittoBroker, repository: Path, tmp_path: Path) -> None:
    config = _config(mosquitto, repository, worker={"id": "hup-worker"}, reload={"enabled": False})
    config_path = write_config(tmp_path / "server.yaml", config)
    with ServerProcess(config_path, tmp_path / "server.log") as server:
        with MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect() as probe:
            probe.subscribe("service/workers/hup-worker/status")
            wait_worker_status(probe, "hup-worker", timeout=30)
            add_version(repository, "lstm", 2)
            time.sleep(1.5)  # polling is off: nothing may change before the signal
            assert not [m for m in probe.messages if m.json().get("models", {}).get("lstm", {}).get("default") == 2]
            server.send_signal(signal.SIGHUP)
            wait_worker_status(probe, "hup-worker", timeout=10, where=_serves_lstm_2)
        assert server.stop(timeout=20) == 0
    print((tmp_path / "server.log").read_text()[-2000:])


@pytest.mark.slow
def test_trainer_writes_a_version_the_running_server_serves(
    mosquitto: MosquittoBroker, repository: Path, tmp_path: Path
) -> None:
    """`python -m ml_training` into the repository of a running server: served without restart."""
    config = _config(mosquitto, repository, worker={"id": "train-worker"})
    config_path = write_config(tmp_path / "server.yaml", config)
    with ServerProcess(config_path, tmp_path / "server.log") as server:
        with MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect() as probe:
            probe.subscribe(["service/workers/train-worker/status", "tenants/acme/models/lstm/responses"])
            wait_worker_status(probe, "train-worker", timeout=30)
            trained = subprocess.run(
                [sys.executable, "-m", "ml_training", "--data", str(REPO_ROOT / "data" / "bts_sample.csv"),
                 "--model", "lstm", "--repository", str(repository), "--epochs", "1", "--seed", "3", "--quiet"],
                cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            assert trained.returncode == 0, trained.stderr[-3000:]
            assert (repository / "lstm" / "2" / "model.tflite").is_file()
            wait_worker_status(probe, "train-worker", timeout=15, where=_serves_lstm_2)
            probe.publish("tenants/acme/models/lstm/requests", oip_request("fresh", windows_from_sample(2)))
            answer = probe.wait_for(lambda m: m.topic.endswith("/responses"), timeout=10)[0].json()
            assert answer["id"] == "fresh" and answer["model_version"] == "2"
        assert server.stop(timeout=20) == 0
