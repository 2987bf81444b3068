"""The loop from serving to retraining, end to end on a real Mosquitto (issue 14).

A station's series streams through a worker, each request naming its series and time. Then
the level shifts by +20. Before the shift the shipped LSTM beats persistence and there is no
alarm; after it the alarm fires within a few dozen resolved forecasts. A version trained on
the new regime (by `python -m ml_training`, in this test) runs as a shadow and scores better
on the live stream; a config change promotes it, the answers switch version and the alarm
clears. Every request is answered exactly once. The quality is read as a tenant reads it: the
retained message on `tenants/<t>/models/<m>/quality`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from client_app.data import load_windows
from tests.support.configs import REPO_ROOT, copy_model_repository, server_config_dict, write_config
from tests.support.mosquitto import MosquittoBroker
from tests.support.probe import MqttProbe
from tests.support.workers import running_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIFT = 20.0
WINDOW = 6
REQUESTS = "tenants/acme/models/lstm/requests"
QUALITY = "tenants/acme/models/lstm/quality"
IN_FLIGHT = 20
# Measured here: the alarm fired 10-25 resolved forecasts after the shift (ADWIN on the error,
# or the rolling skill passing 1, whichever comes first). The bound leaves room without
# letting a slow detector pass.
DETECTION_BOUND = 40


def _readings() -> tuple[np.ndarray, str]:
    windows = load_windows(REPO_ROOT / "data" / "bts_sample.csv", station=None, parameter=122, window=WINDOW,
                           resample_s=None)
    readings = np.concatenate([windows.x[0], windows.y])  # consecutive readings of one station
    return readings, str(windows.station)


def _train_new_regime(target: Path) -> subprocess.CompletedProcess[str]:
    """An LSTM trained on the shifted readings of every station: the new regime."""
    data = pd.read_csv(REPO_ROOT / "data" / "bts_sample.csv")
    data["value"] = data["value"] + SHIFT
    target.mkdir(parents=True, exist_ok=True)
    csv = target / "shifted.csv"
    data.to_csv(csv, index=False)
    return subprocess.run(
        [sys.executable, "-m", "ml_training", "--data", str(csv), "--model", "lstm", "--repository",
         str(target / "models"), "--epochs", "4", "--patience", "2", "--seed", "3", "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )


class Stream:
    """Sends windows of one series in order, at most IN_FLIGHT unanswered, counting answers by id."""

    def __init__(self, probe: MqttProbe, readings: np.ndarray, series: str) -> None:
        self.probe, self.readings, self.series = probe, readings, series
        self.next = 0
        self.answers: dict[str, list[dict[str, Any]]] = {}

    def send(self, count: int) -> list[dict[str, Any]]:
        """The next `count` windows; returns their answers in order."""
        ids = []
        for _ in range(count):
            end = self.next + WINDOW
            window = self.readings[self.next : end]
            request_id = f"q-{self.next:05d}"
            body = {
                "id": request_id,
                "inputs": [{"name": "w", "shape": [1, WINDOW, 1], "datatype": "FP64", "data": window.tolist()}],
                "parameters": {"series": self.series, "time": end - 1, "step_s": 1},
            }
            self.probe.publish(REQUESTS, orjson.dumps(body), wait=len(ids) % IN_FLIGHT == IN_FLIGHT - 1)
            ids.append(request_id)
            self.next += 1
            if len(ids) % IN_FLIGHT == 0:
                self._collect(ids[-IN_FLIGHT:])
        if len(ids) % IN_FLIGHT:
            self._collect(ids[-(len(ids) % IN_FLIGHT) :])
        return [self.answers[i][0] for i in ids]

    def _collect(self, ids: list[str]) -> None:
        wanted = set(ids)  # each id is collected once: duplicates show as two answers
        found = self.probe.wait_for(
            lambda m: m.topic.endswith("/responses") and m.json().get("id") in wanted, count=len(ids), timeout=60
        )
        for message in found:
            body = message.json()
            if body["id"] in wanted:
                self.answers.setdefault(body["id"], []).append(body)


def _quality(probe: MqttProbe, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    found = probe.wait_for(lambda m: m.topic == QUALITY and condition(m.json()), timeout=30)
    assert found, what
    return dict(found[-1].json())


def _version(body: dict[str, Any], version: int, role: str) -> dict[str, Any]:
    return next(v for v in body["versions"] if v["version"] == version and v["role"] == role)


def _wait_status(probe: MqttProbe, worker_id: str, condition: Callable[[dict[str, Any]], bool]) -> None:
    probe.wait_for(
        lambda m: m.topic == f"service/workers/{worker_id}/status" and condition(m.json()), timeout=60
    )


def test_alarm_retrain_shadow_promote_clear(mosquitto: MosquittoBroker, tmp_path: Path,
                                            record_property: Callable[[str, object], None]) -> None:
    pytest.importorskip("tensorflow", reason="training the new regime's model needs the [train] extra")
    trained: dict[str, subprocess.CompletedProcess[str]] = {}
    training = tmp_path / "training"
    trainer = threading.Thread(target=lambda: trained.setdefault("run", _train_new_regime(training)), daemon=True)
    trainer.start()  # trains while the first phases stream

    readings, series = _readings()
    shift_at = 300 + WINDOW  # readings from here on are shifted: windows straddle the shift as they would
    readings = readings[: shift_at + 700].copy()
    readings[shift_at:] += SHIFT
    repository = copy_model_repository(tmp_path / "models", ("lstm",))
    config = server_config_dict(
        mosquitto.host, mosquitto.port, repository, shared_group="inference", protocol="5",
        models={"lstm": {"repository": str(repository / "lstm"), "version": 1}},
        tenants={"acme": {"models": ["lstm"]}},
        quality={"window": 100, "min_resolved": 30},
        worker={"id": "quality-worker"},
    )
    config_path = write_config(tmp_path / "server.yaml", config)
    with running_worker(config, config_path, worker_id="quality-worker"), \
            MqttProbe(mosquitto.host, mosquitto.port, protocol="5") as probe:
        probe.subscribe(["tenants/acme/#", "service/workers/+/status"])
        stream = Stream(probe, readings, series)

        # 1. The old regime: the model beats persistence, no alarm.
        stream.send(300)
        before = _quality(probe, lambda b: _version(b, 1, "live")["resolved"] >= 100, "no quality message")
        assert not before["alarm"], before
        assert _version(before, 1, "live")["skill"] < 1, before
        resolved_at_shift = _version(before, 1, "live")["resolved_total"]

        # 2. The level shifts: the alarm fires.
        stream.send(200)
        alarm = _quality(probe, lambda b: b["alarm"], "no alarm after the shift")
        detected_after = _version(alarm, 1, "live")["resolved_total"] - resolved_at_shift
        record_property("alarm_after_resolved_forecasts", detected_after)
        assert detected_after <= DETECTION_BOUND, alarm
        assert alarm["reasons"], alarm  # "drift" (the detector) and/or "skill" (worse than persistence)

        # 3. A version trained on the new regime, as a shadow: it scores better on the live stream.
        trainer.join(600)
        run = trained["run"]
        assert run.returncode == 0, run.stderr[-2000:]
        staging = repository / "lstm" / ".incoming-2"
        shutil.copytree(training / "models" / "lstm" / "1", staging)
        staging.rename(repository / "lstm" / "2")
        config["tenants"]["acme"]["shadow"] = {"lstm": 2}
        write_config(config_path, config)
        _wait_status(probe, "quality-worker", lambda s: s.get("shadows", {}).get("acme/lstm") == 2)
        answers = stream.send(200)
        assert {a["model_version"] for a in answers} == {"1"}  # a shadow never answers
        scored = _quality(probe, lambda b: any(v["role"] == "shadow" and v["resolved"] >= 100 for v in b["versions"]),
                          "the shadow was not scored")
        shadow, live = _version(scored, 2, "shadow"), _version(scored, 1, "live")
        record_property("skill_live_v1", live["skill"])
        record_property("skill_shadow_v2", shadow["skill"])
        assert live["skill"] > 1, scored  # the old model, on the new regime only: worse than persistence
        assert shadow["skill"] < live["skill"] and shadow["skill"] < 1, scored

        # 4. Promotion is a config change: answers switch to version 2 and the alarm clears.
        config["tenants"]["acme"] = {"models": ["lstm"], "versions": {"lstm": 2}}
        write_config(config_path, config)
        _wait_status(probe, "quality-worker", lambda s: s.get("routes", {}).get("acme/lstm") == 2)
        answers = stream.send(200)
        assert {a["model_version"] for a in answers} == {"2"}
        cleared = _quality(probe, lambda b: not b["alarm"] and any(
            v["version"] == 2 and v["role"] == "live" and v["resolved"] >= 30 for v in b["versions"]
        ), "the alarm did not clear after the promotion")
        record_property("skill_live_v2", _version(cleared, 2, "live")["skill"])

    per_id = Counter({request_id: len(found) for request_id, found in stream.answers.items()})
    assert len(per_id) == stream.next == 900 and set(per_id.values()) == {1}, "every request answered once"
    errors = [found[0] for found in stream.answers.values() if "error" in found[0]]
    assert not errors, errors[:3]
