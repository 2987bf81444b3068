"""Scale-out on Mosquitto: shared subscriptions spread load, the supervisor restarts workers,
SIGTERM drains without loss, workers added mid-load take a share, health endpoints answer."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import server_config_dict, write_config
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import PacedLoad, count_answers, oip_request, windows_from_sample
from tests.support.ports import free_port
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess, run_server, running_worker, wait_worker_status

pytestmark = pytest.mark.integration


def _config(mosquitto: MosquittoBroker, repository: Path, worker_id: str, **kwargs: Any) -> dict[str, Any]:
    return server_config_dict(
        mosquitto.connect_host, mosquitto.port, repository, shared_group="inference",
        worker={"id": worker_id, "shutdown_grace_s": 10}, **kwargs,
    )


def _probe(mosquitto: MosquittoBroker) -> MqttProbe:
    return MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect()


def test_supervisor_spreads_load_over_three_workers_and_restarts_dead_ones(
    mosquitto: MosquittoBroker, repository: Path, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path / "server.yaml", _config(mosquitto, repository, "pool"))
    with ServerProcess(config_path, tmp_path / "server.log", "--workers", "3") as server:
        with _probe(mosquitto) as observer, _probe(mosquitto) as sender:
            observer.subscribe(["service/workers/+/status", "tenants/acme/models/lstm/responses"])
            for index in range(3):
                wait_worker_status(observer, f"pool-{index}")
            load = PacedLoad(sender, "tenants/acme/models/lstm/requests", rate=1000, duration_s=3, prefix="s").start()
            load.join(timeout=20)
            observer.wait_for(lambda m: m.topic.endswith("/responses"), count=len(load.sent), timeout=30)
            per_id, per_worker, errors = count_answers([m for m in observer.messages if "/responses" in m.topic])
            assert not errors
            assert per_id == {request_id: 1 for request_id in load.sent}
            assert sorted(per_worker) == ["pool-0", "pool-1", "pool-2"]
            fair = len(load.sent) / 3
            assert all(abs(count - fair) <= 0.2 * fair for count in per_worker.values()), per_worker

            # Kill one worker hard: the supervisor starts it again under the same client id.
            children = server.children()
            assert len(children) == 3
            victim = children[0]
            victim.kill()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                alive = {c.pid for c in server.children()}
                if victim.pid not in alive and len(alive) == 3:
                    break
                time.sleep(0.2)
            assert victim.pid not in alive and len(alive) == 3
            observer.clear()
            time.sleep(3)  # the restarted worker loads and subscribes
            after = PacedLoad(sender, "tenants/acme/models/lstm/requests", rate=300, duration_s=2, prefix="t").start()
            after.join(timeout=20)
            answers = observer.wait_for(lambda m: m.topic.endswith("/responses"), count=len(after.sent), timeout=30)
            assert {m.json()["id"] for m in answers} == set(after.sent)
        assert server.stop() == 0
    log = (tmp_path / "server.log").read_text()
    assert "restarting in" in log


def test_sigterm_mid_load_and_scale_up_lose_nothing(
    mosquitto: MosquittoBroker, repository: Path, tmp_path: Path
) -> None:
    """Start with one worker, add two mid-load, then SIGTERM one mid-load: all answered once."""
    processes: dict[str, ServerProcess] = {}

    def start(worker_id: str) -> None:
        path = write_config(tmp_path / f"{worker_id}.yaml", _config(mosquitto, repository, worker_id))
        processes[worker_id] = ServerProcess(path, tmp_path / f"{worker_id}.log").start()

    try:
        with _probe(mosquitto) as observer, _probe(mosquitto) as sender:
            observer.subscribe(["service/workers/+/status", "tenants/acme/models/lstm/responses"])
            start("w-a")
            wait_worker_status(observer, "w-a")
            load = PacedLoad(sender, "tenants/acme/models/lstm/requests", rate=500, duration_s=12, prefix="g").start()
            time.sleep(2)
            start("w-b")
            start("w-c")
            wait_worker_status(observer, "w-b")
            wait_worker_status(observer, "w-c")
            time.sleep(3)
            assert processes["w-b"].stop(timeout=20) == 0  # graceful drain mid-load
            load.join(timeout=30)
            observer.wait_for(lambda m: m.topic.endswith("/responses"), count=len(load.sent), timeout=30)
            time.sleep(0.5)  # a duplicate would arrive now
            per_id, per_worker, errors = count_answers([m for m in observer.messages if "/responses" in m.topic])
        assert not errors
        assert per_id == {request_id: 1 for request_id in load.sent}, "lost or duplicated answers"
        assert set(per_worker) == {"w-a", "w-b", "w-c"}, per_worker
        for worker_id in ("w-a", "w-c"):
            assert processes[worker_id].stop() == 0
    finally:
        for process in processes.values():
            process.kill()


def test_embedded_broker_refuses_several_workers(tmp_path: Path, repository: Path) -> None:
    config = server_config_dict("embedded", free_port(), repository)
    config["broker"] = {"host": "embedded"}
    path = write_config(tmp_path / "server.yaml", config)
    result = run_server(path, "--workers", "2", timeout=60)
    assert result.returncode == 2
    assert "no shared subscriptions" in result.stderr and "Mosquitto" in result.stderr


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_endpoints(mosquitto: MosquittoBroker, repository: Path) -> None:
    config = _config(mosquitto, repository, "health-worker", health={"port": 0, "host": "127.0.0.1"})
    with running_worker(config, client_id="health-worker") as worker, _probe(mosquitto) as probe:
        port = worker.health_port
        assert port
        assert _get(port, "/healthz") == (200, "ok\n")
        assert _get(port, "/readyz") == (200, "ready\n")
        probe.subscribe("tenants/acme/models/lstm/responses")
        probe.publish("tenants/acme/models/lstm/requests", oip_request("h1", windows_from_sample(1)))
        probe.wait_for(1)
        status, metrics = _get(port, "/metrics")
        assert status == 200
        assert 'inference_answers_total{code="ok",model="lstm",tenant="acme"} 1.0' in metrics
        assert _get(port, "/nope")[0] == 404
        mosquitto.stop()
        deadline = time.monotonic() + 10
        while _get(port, "/readyz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(port, "/readyz") == (503, "not connected to the broker\n")
        assert _get(port, "/healthz")[0] == 200  # alive: Kubernetes must not restart it for a broker outage
        mosquitto.start()
        assert worker.wait_ready(15)
