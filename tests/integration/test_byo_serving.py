"""Imported models on a real broker: a fixed-batch model (LSTM with a WHILE loop, batch 1) next
to a batching model in the same worker, both under load, every request answered once and
exactly; a newest-first model behind a tutorial-format tenant answers what the file answers
on `[norm_1 .. norm_6]`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from ml_training.cli import main as ml_training_main
from server_app.runtime import load_model_version
from tests.support.brokers import BrokerHandle
from tests.support.byo_models import build_models, direct_invoke
from tests.support.configs import copy_model_repository, server_config_dict
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

NORM = ["--normalization", "tutorial", "--offset", "15", "--scale", "10"]


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp() / "byo-models")


@pytest.fixture
def repository(tmp_path: Path, byo: dict[str, Path]) -> Path:
    repo = copy_model_repository(tmp_path / "models", ("lstm",))
    for model, name, extra in (
        ("lstm_batch1", "fixed", NORM),
        ("newest_first", "tut", [*NORM, "--input-order", "newest_first"]),
    ):
        assert ml_training_main(["import", str(byo[model]), "--name", name, "--repository", str(repo), *extra]) == 0
    return repo


def test_fixed_batch_model_beside_a_batching_model_under_load(mosquitto: MosquittoBroker, repository: Path) -> None:
    broker = BrokerHandle.of(mosquitto)
    models = {name: {"repository": str(repository / name)} for name in ("lstm", "fixed")}
    config = server_config_dict(
        broker.host, broker.port, repository, shared_group="inference", protocol=broker.protocol,
        models=models, tenants={"acme": {"models": ["lstm", "fixed"]}},
    )
    direct = {name: load_model_version(repository / name / "1") for name in models}
    assert direct["fixed"].batch_sizes == [1] and direct["lstm"].batch_sizes[-1] == 64
    per_model = 150
    expected: dict[str, tuple[str, np.ndarray]] = {}
    with running_worker(config), broker.probe() as observer, broker.probe() as sender:
        observer.subscribe("tenants/acme/#")
        for i in range(per_model):
            for name in models:  # interleaved: the worker's batches mix both models
                windows = windows_from_sample(1 + i % 4, seed=i)
                request_id = f"{name}-{i:04d}"
                expected[request_id] = (name, windows)
                sender.publish(f"tenants/acme/models/{name}/requests", oip_request(request_id, windows), wait=False)
        answers = observer.wait_for(lambda m: m.topic.endswith("/responses"), count=len(expected), timeout=60)
        seen: dict[str, int] = {}
        for message in answers:
            body = message.json()
            assert "error" not in body, body
            seen[body["id"]] = seen.get(body["id"], 0) + 1
            name, windows = expected[body["id"]]
            assert body["model_name"] == name and body["outputs"][0]["shape"] == [len(windows), 1]
            got = np.array(body["outputs"][0]["data"], dtype=np.float32)
            np.testing.assert_allclose(got, direct[name].predict(windows), atol=1e-5, rtol=0)
        assert seen == {request_id: 1 for request_id in expected}
        time.sleep(0.5)  # a duplicate would arrive after the last first answer
        assert len([m for m in observer.messages if m.topic.endswith("/responses")]) == len(expected)
        assert not [m for m in observer.messages if m.topic.endswith("/errors")]
    # The fixed model's answers are the file's own, one window per invoke at batch 1.
    sample = expected["fixed-0003"][1]
    norm = direct["fixed"].normalization
    want = norm.denormalize(direct_invoke(repository / "fixed" / "1" / "model.tflite", norm.normalize(sample)))
    np.testing.assert_allclose(direct["fixed"].predict(sample), want[:, 0], atol=1e-5, rtol=0)


def test_tutorial_tenant_on_a_newest_first_model(mosquitto: MosquittoBroker, repository: Path) -> None:
    broker = BrokerHandle.of(mosquitto)
    config = server_config_dict(
        broker.host, broker.port, repository, shared_group="inference", protocol=broker.protocol,
        models={"tut": {"repository": str(repository / "tut")}},
        tenants={"course": {"models": ["tut"], "format": "tutorial", "in_queue": "inqueue/tut",
                            "out_queue": "outqueue/tut"}},
    )
    rng = np.random.default_rng(4)
    flat_requests = [{f"norm_{i}": float(v) for i, v in enumerate(rng.uniform(-1, 1, 6), start=1)} for _ in range(5)]
    with running_worker(config), broker.probe() as client:
        client.subscribe("outqueue/tut")
        for sent, flat in enumerate(flat_requests, start=1):
            client.publish("inqueue/tut", orjson.dumps(flat))
            client.wait_for(sent, timeout=10)
        answers = [m.json()["TUT"] for m in client.messages]
    # The model was built on [norm_1 .. norm_6] (newest first): that is what it must be fed.
    as_trained = np.array([[flat[f"norm_{i}"] for i in range(1, 7)] for flat in flat_requests], dtype=np.float32)
    want = direct_invoke(repository / "tut" / "1" / "model.tflite", as_trained.reshape(5, 6, 1))[:, 0]
    np.testing.assert_allclose(answers, want, atol=1e-6, rtol=0)
    reversed_order = direct_invoke(repository / "tut" / "1" / "model.tflite", as_trained[:, ::-1].reshape(5, 6, 1))
    assert np.abs(reversed_order[:, 0] - want).max() > 0.05  # the order really matters for this model
