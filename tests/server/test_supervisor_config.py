"""`--workers N`: a worker the supervisor restarts loads the config file as it is now (issue 10, bug 1).

Before: the supervisor handed every worker it (re)started the config it had parsed at start,
while the worker's reloader hashed the file as it was then, so after an edit a restarted
worker served the old tenants until the file changed again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import copy_model_repository, server_config_dict, write_config
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import count_answers, oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess, wait_worker_status

pytestmark = pytest.mark.integration

REQUESTS = 60


def _status(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = message.json()
    return body


def test_restarted_worker_serves_the_config_file_as_edited(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    repository = copy_model_repository(tmp_path / "models", ("lstm",))
    config = server_config_dict(
        mosquitto.connect_host, mosquitto.port, repository, shared_group="inference",
        models={"lstm": {"repository": str(repository / "lstm")}},
        tenants={"acme": {"models": ["lstm"]}},
        worker={"id": "pool", "shutdown_grace_s": 5},
    )  # fmt: skip
    config_path = write_config(tmp_path / "server.yaml", config)
    with ServerProcess(config_path, tmp_path / "server.log", "--workers", "2") as server:
        with (
            MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect() as observer,
            MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect() as sender,
        ):
            observer.subscribe(["service/workers/+/status", "tenants/gamma/models/lstm/responses"])
            for index in range(2):
                wait_worker_status(observer, f"pool-{index}", timeout=60)

            # The operator adds a tenant; then one worker dies and is restarted.
            config["tenants"]["gamma"] = {"models": ["lstm"]}
            write_config(config_path, config)
            workers = server.children()
            assert len(workers) == 2, workers
            killed_at = time.time()
            workers[0].kill()
            offline = observer.wait_for(
                lambda m: m.topic.endswith("/status") and _status(m).get("state") == "offline", timeout=60
            )
            restarted = _status(offline[0])["worker"]
            serving = observer.wait_for(
                lambda m: m.topic == f"service/workers/{restarted}/status"
                and _status(m).get("state") == "serving"
                and _status(m).get("updated_at", 0) > killed_at,
                timeout=120,
            )
            assert "gamma/lstm" in _status(serving[-1])["routes"], _status(serving[-1])
            # The survivor reloads the edit on its own; both must serve the new tenant.
            survivor = next(f"pool-{i}" for i in range(2) if f"pool-{i}" != restarted)
            observer.wait_for(
                lambda m: m.topic == f"service/workers/{survivor}/status"
                and "gamma/lstm" in _status(m).get("routes", {}),
                timeout=60,
            )

            windows = windows_from_sample(REQUESTS)
            sent = [f"gamma-{n:03d}" for n in range(REQUESTS)]
            for n, request_id in enumerate(sent):
                sender.publish("tenants/gamma/models/lstm/requests", oip_request(request_id, windows[n : n + 1]))
            answers = observer.wait_for(
                lambda m: m.topic.endswith("/responses"), count=REQUESTS, timeout=60
            )
            per_id, per_worker, errors = count_answers(answers)
            assert not errors, errors[:3]
            assert per_id == dict.fromkeys(sent, 1)
            # Mosquitto deals a shared subscription's messages round-robin: both answered some.
            assert set(per_worker) == {"pool-0", "pool-1"}, per_worker
        assert server.stop() == 0
