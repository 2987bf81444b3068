"""End to end on real brokers: two tenants, two models, answers only on the tenant's own topic,
forecasts equal to a direct LiteRT invoke; tutorial clients; bad input answered, others unharmed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from server_app.runtime import load_model_version
from tests.support.brokers import BrokerHandle
from tests.support.configs import server_config_dict
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration


def _config(broker: BrokerHandle, repository: Path, **kwargs: Any) -> dict[str, Any]:
    return server_config_dict(
        broker.host,
        broker.port,
        repository,
        shared_group="inference" if broker.supports_shared_subscriptions else None,
        protocol=broker.protocol,
        **kwargs,
    )


def test_two_tenants_two_models_answers_are_isolated_and_exact(broker: BrokerHandle, repository: Path) -> None:
    direct = {name: load_model_version(repository / name / "1") for name in ("lstm", "ann")}
    plan = [("acme", "lstm"), ("acme", "ann"), ("beta", "ann")]
    per_route = 40
    with running_worker(_config(broker, repository)), broker.probe() as observer, broker.probe() as sender:
        observer.subscribe("tenants/#")
        expected: dict[str, tuple[str, str, np.ndarray]] = {}
        for route_index, (tenant, model) in enumerate(plan):
            for i in range(per_route):
                windows = windows_from_sample(1 + i % 5, seed=route_index * 1000 + i)
                request_id = f"{tenant}-{model}-{i:04d}"
                expected[request_id] = (tenant, model, windows)
                topic = f"tenants/{tenant}/models/{model}/requests"
                sender.publish(topic, oip_request(request_id, windows), wait=False)
        responses = observer.wait_for(lambda m: m.topic.endswith("/responses"), count=len(expected), timeout=30)
        seen: dict[str, int] = {}
        for message in responses:
            body = message.json()
            request_id = body["id"]
            seen[request_id] = seen.get(request_id, 0) + 1
            tenant, model, windows = expected[request_id]
            assert "error" not in body, body
            assert message.topic == f"tenants/{tenant}/models/{model}/responses"
            assert body["model_name"] == model and body["model_version"] == "1"
            assert body["parameters"]["tenant"] == tenant
            got = np.array(body["outputs"][0]["data"], dtype=np.float32)
            want = direct[model].predict(windows)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert seen == {request_id: 1 for request_id in expected}
        assert not [m for m in observer.messages if m.topic.endswith("/errors")]


def test_tutorial_client_gets_flat_json_on_its_own_queues(broker: BrokerHandle, repository: Path) -> None:
    tenants = {
        "acme": {"models": ["lstm"]},
        "course": {"models": ["lstm"], "format": "tutorial", "in_queue": "inqueue/lstm", "out_queue": "outqueue/lstm"},
    }
    lstm = load_model_version(repository / "lstm" / "1")
    normalized = [[-0.3, -0.2, -0.1, 0.0, 0.1, 0.2], [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]]  # oldest first
    with running_worker(_config(broker, repository, tenants=tenants)), broker.probe() as client:
        client.subscribe("outqueue/lstm")
        for sent, window in enumerate(normalized, start=1):
            flat = {f"norm_{i + 1}": value for i, value in enumerate(reversed(window))}  # norm_1 newest
            client.publish("inqueue/lstm", orjson.dumps(flat))
            client.wait_for(sent, timeout=10)
        answers = [m.json() for m in client.messages]
    assert [list(a) for a in answers] == [["LSTM"], ["LSTM"]]
    want = lstm.predict_normalized(np.array(normalized, dtype=np.float32).reshape(2, 6, 1))[:, 0]
    np.testing.assert_allclose([a["LSTM"] for a in answers], want, atol=1e-6)


BAD_INPUTS: list[tuple[str, bytes, str, str]] = [
    # (topic suffix, payload, expected code, where the error goes)
    ("models/lstm/requests", b"not json at all", "bad_json", "responses"),
    ("models/lstm/requests", b"\xff\xfe\xfd", "bad_json", "responses"),
    ("models/lstm/requests", oip_request("short", np.ones((1, 5, 1), np.float32)), "invalid_window", "responses"),
    ("models/lstm/requests",
     b'{"id":"str","inputs":[{"name":"w","datatype":"FP32","shape":[1,6,1],"data":["a",1,1,1,1,1]}]}',
     "invalid_window", "responses"),
    ("models/lstm/requests",
     b'{"id":"nan","inputs":[{"name":"w","datatype":"FP32","shape":[1,6,1],"data":[1e39,1,1,1,1,1]}]}',
     "invalid_window", "responses"),
    ("models/gru/requests", oip_request("unknown", np.ones((1, 6, 1), np.float32)), "unknown_model", "responses"),
    ("models/ann/requests", oip_request("notallowed", np.ones((1, 6, 1), np.float32)), "model_not_allowed",
     "responses"),
    ("models/Not-A-Name!/requests", b"{}", "invalid_request", "errors"),
]


def test_bad_input_gets_structured_errors_and_others_are_served(broker: BrokerHandle, repository: Path) -> None:
    tenants = {"acme": {"models": ["lstm", "ann"]}, "mallory": {"models": ["lstm"]}}
    good = windows_from_sample(3)
    with running_worker(_config(broker, repository, tenants=tenants)) as worker, broker.probe() as observer:
        observer.subscribe(
            ["tenants/mallory/models/+/responses", "tenants/mallory/errors", "tenants/acme/models/lstm/responses"]
        )
        with broker.probe() as sender:
            for i, (suffix, payload, _, _) in enumerate(BAD_INPUTS):
                sender.publish(f"tenants/mallory/{suffix}", payload)
                sender.publish("tenants/acme/models/lstm/requests", oip_request(f"good-{i}", good))
            sender.publish("tenants/nobody/models/lstm/requests", oip_request("ghost", good))
        errors = observer.wait_for(lambda m: m.topic.startswith("tenants/mallory/"), count=len(BAD_INPUTS))
        goods = observer.wait_for(lambda m: m.topic.startswith("tenants/acme/"), count=len(BAD_INPUTS))
        assert worker.alive()[0] and worker.ready()[0]
    got = sorted((m.json()["parameters"]["code"], m.topic.rsplit("/", 1)[-1]) for m in errors)
    assert got == sorted((code, where) for _, _, code, where in BAD_INPUTS)
    for message in errors:
        assert message.json()["error"]
    assert sorted(m.json()["id"] for m in goods) == sorted(f"good-{i}" for i in range(len(BAD_INPUTS)))
    assert all("error" not in m.json() for m in goods)


def test_an_unexpected_failure_still_answers_every_request(
    mosquitto: Any, repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the data plane must cost the batch an `internal` error, never silence or the worker."""
    config = server_config_dict(mosquitto.connect_host, mosquitto.port, repository, shared_group="inference")
    with running_worker(config) as worker, MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5") as probe:
        probe.connect()
        probe.subscribe("tenants/acme/models/lstm/responses")
        original = worker._service.predict

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected")

        monkeypatch.setattr(worker._service, "predict", broken)
        for i in range(5):
            probe.publish("tenants/acme/models/lstm/requests", oip_request(f"boom-{i}", windows_from_sample(1)))
        answers = [m.json() for m in probe.wait_for(5, timeout=10)]
        assert sorted(a["id"] for a in answers) == [f"boom-{i}" for i in range(5)]
        assert {a["parameters"]["code"] for a in answers} == {"internal"}
        monkeypatch.setattr(worker._service, "predict", original)
        probe.clear()
        probe.publish("tenants/acme/models/lstm/requests", oip_request("after", windows_from_sample(1)))
        assert "error" not in probe.wait_for(1, timeout=10)[0].json()
