"""Every request gets exactly one answer, counted by id, on real brokers: retries with the same
id, clients that number from 1 again, one id for two models, requests without an id; the
MQTT 5 binding (correlation data, trace context, content type, timings); answers the broker
refuses; the tutorial format's leniency."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.brokers import BrokerHandle
from tests.support.configs import server_config_dict
from tests.support.messages import ReceivedMessage
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import prometheus_samples, running_worker, sum_samples

pytestmark = pytest.mark.integration

WINDOW = windows_from_sample(1, seed=3)
SHORT_WINDOW = windows_from_sample(1, length=5, seed=3)
LSTM = "tenants/acme/models/lstm/requests"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _config(broker: BrokerHandle | MosquittoBroker, repository: Path, **kwargs: Any) -> dict[str, Any]:
    is_mosquitto = isinstance(broker, MosquittoBroker) or broker.supports_shared_subscriptions
    return server_config_dict(
        broker.host,
        broker.port,
        repository,
        shared_group="inference" if is_mosquitto else None,
        protocol="5" if is_mosquitto else "3.1.1",
        **kwargs,
    )


def _code(message: ReceivedMessage) -> str:
    body = message.json()
    return str(body["parameters"]["code"]) if "error" in body else "ok"


def _send_and_wait(probe: MqttProbe, observer: MqttProbe, topic: str, payload: bytes, answers: int) -> ReceivedMessage:
    """Publish one request, wait until the observer holds `answers` answers, return the last."""
    probe.publish(topic, payload)
    return observer.wait_for(lambda m: not m.topic.endswith("/requests"), count=answers, timeout=20)[-1]


def test_retries_with_the_same_id_are_each_answered(broker: BrokerHandle, repository: Path) -> None:
    tenants = {"acme": {"models": ["lstm", "ann"], "rate_limit_per_s": 0.01, "burst": 2}}
    with running_worker(_config(broker, repository, tenants=tenants)), broker.probe() as observer, \
            broker.probe() as tenant:
        observer.subscribe("tenants/acme/#")
        codes = []
        # After invalid_window and unknown_model a client fixes the request and retries the same id.
        codes.append(_code(_send_and_wait(tenant, observer, LSTM, oip_request("same", SHORT_WINDOW), 1)))
        codes.append(_code(_send_and_wait(tenant, observer, "tenants/acme/models/nope/requests",
                                          oip_request("same", WINDOW), 2)))
        # The burst admits two windows; the rest of the retries are rate limited, each answered.
        for n in range(3, 7):
            codes.append(_code(_send_and_wait(tenant, observer, LSTM, oip_request("same", WINDOW), n)))
        assert codes == ["invalid_window", "unknown_model", "ok", "ok", "rate_limited", "rate_limited"]
        answers = [m for m in observer.messages if not m.topic.endswith("/requests")]
        assert Counter(m.json()["id"] for m in answers) == {"same": 6}


def test_a_restarted_client_numbering_from_one_again_is_answered(broker: BrokerHandle, repository: Path) -> None:
    with running_worker(_config(broker, repository)), broker.probe() as observer:
        observer.subscribe("tenants/acme/models/+/responses")
        for _run in range(2):
            with broker.probe() as tenant:
                for n in range(1, 21):  # the last one waits for PUBACK: all are at the broker
                    tenant.publish(LSTM, oip_request(f"req-{n}", WINDOW), wait=n == 20)
        answers = observer.wait_for(40, timeout=30)
        assert Counter(m.json()["id"] for m in answers) == {f"req-{n}": 2 for n in range(1, 21)}
        assert {_code(m) for m in answers} == {"ok"}


def test_one_id_sent_to_two_models_gets_an_answer_from_each(broker: BrokerHandle, repository: Path) -> None:
    with running_worker(_config(broker, repository)), broker.probe() as observer, broker.probe() as tenant:
        observer.subscribe("tenants/acme/models/+/responses")
        tenant.publish(LSTM, oip_request("shared-id", WINDOW))
        tenant.publish("tenants/acme/models/ann/requests", oip_request("shared-id", WINDOW))
        answers = observer.wait_for(2, timeout=20)
        assert sorted((m.topic, m.json()["model_name"], _code(m)) for m in answers) == [
            ("tenants/acme/models/ann/responses", "ann", "ok"),
            ("tenants/acme/models/lstm/responses", "lstm", "ok"),
        ]
        observer.assert_no_messages(0.3, topic="tenants/acme/errors")


def test_tutorial_tenant_may_send_a_whole_csv_row_with_numeric_strings(broker: BrokerHandle, repository: Path) -> None:
    tenants = {"course": {"models": ["lstm"], "format": "tutorial", "in_queue": "inqueue/lstm",
                          "out_queue": "outqueue/lstm"}}
    row = {"station_id": 1161114002, "norm_value": "0.05", **{f"norm_{i}": f"{0.1 * i:.3f}" for i in range(1, 7)}}
    with running_worker(_config(broker, repository, tenants=tenants)), broker.probe() as course:
        course.subscribe("outqueue/lstm")
        course.publish("inqueue/lstm", orjson.dumps(row))
        course.publish("inqueue/lstm", orjson.dumps({**row, "norm_2": "nan"}))
        first, second = course.wait_for(2, timeout=20)
        assert list(first.json()) == ["LSTM"] and isinstance(first.json()["LSTM"], float)
        assert second.json() == {"error": "norm_2 must be finite", "parameters": {"code": "invalid_window"}}


# --------------------------------------------------------------------------- MQTT 5 binding


def test_mqtt5_binding_correlation_trace_content_type_and_timings(mosquitto: MosquittoBroker, repository: Path) -> None:
    handle = BrokerHandle.of(mosquitto)
    with running_worker(_config(mosquitto, repository)), handle.probe(protocol="5") as tenant:
        tenant.subscribe("tenants/acme/#")
        trace = [("traceparent", TRACEPARENT), ("tracestate", "vendor=x"), ("other", "not copied")]
        no_id = orjson.loads(oip_request("dropped", WINDOW))
        del no_id["id"]
        tenant.publish(LSTM, orjson.dumps(no_id), properties=MqttProbe.v5_properties(
            response_topic="tenants/acme/inbox/7", correlation_data=b"corr-1", user_properties=trace))
        tenant.publish(LSTM, oip_request("bad", SHORT_WINDOW), properties=MqttProbe.v5_properties(
            correlation_data=b"corr-2", user_properties=trace))
        answer, error = tenant.wait_for(lambda m: m.topic != LSTM, count=2, timeout=20)
        assert answer.topic == "tenants/acme/inbox/7"
        body = answer.json()
        assert "id" not in body and body["model_name"] == "lstm"
        assert body["parameters"]["queue_ms"] >= 0 and body["parameters"]["compute_ms"] > 0
        assert error.json()["parameters"]["code"] == "invalid_window" and error.json()["id"] == "bad"
        for message, correlation in ((answer, b"corr-1"), (error, b"corr-2")):
            assert message.correlation_data == correlation
            assert message.properties is not None and message.properties.ContentType == "application/json"
            assert message.user_properties == trace[:2]


def test_an_answer_the_broker_refuses_goes_to_the_errors_topic(tmp_path: Path, repository: Path) -> None:
    """An operator's ACL narrower than ours: the worker may not write the tenant's inbox. The
    refusal (PUBACK 0x87) is counted and the tenant is told on its errors topic, once."""
    acl = "\n".join([
        "user worker",
        "topic read tenants/+/models/+/requests",
        "topic read $share/inference/tenants/+/models/+/requests",
        "topic write tenants/+/models/+/responses",
        "topic write tenants/+/errors",
        "topic readwrite service/workers/#",
        "user acme",
        "topic write tenants/acme/models/+/requests",
        "topic read tenants/acme/#",
        "",
    ])
    with MosquittoBroker(tmp_path / "broker", users={"worker": "w-secret", "acme": "a-secret"},
                         acl_text=acl) as server:
        config = _config(server, repository)
        config["broker"].update(username="worker", password="w-secret")
        with running_worker(config) as worker, MqttProbe(server.host, server.port, protocol="5", username="acme",
                                                         password="a-secret") as tenant:
            tenant.subscribe("tenants/acme/#")
            tenant.publish(LSTM, oip_request("refused-1", WINDOW),
                           properties=MqttProbe.v5_properties(response_topic="tenants/acme/inbox/1"))
            tenant.publish(LSTM, oip_request("fine-1", WINDOW))
            got = tenant.wait_for(lambda m: m.topic != LSTM, count=2, timeout=20)
            tenant.assert_no_messages(0.5, topic="tenants/acme/inbox/#")
            by_id = {m.json()["id"]: m for m in got}
            assert set(by_id) == {"refused-1", "fine-1"}
            refused = by_id["refused-1"]
            assert refused.topic == "tenants/acme/errors" and _code(refused) == "answer_refused"
            assert "tenants/acme/inbox/1" in refused.json()["error"]
            assert by_id["fine-1"].topic == "tenants/acme/models/lstm/responses" and _code(by_id["fine-1"]) == "ok"
            samples = prometheus_samples(worker.metrics.render().decode())
            assert sum_samples(samples, "inference_answers_refused_total") == 1


# --------------------------------------------------------------------------- retained requests


def test_a_retained_request_is_never_served_as_fresh_and_is_cleared(mosquitto: MosquittoBroker,
                                                                     repository: Path) -> None:
    handle = BrokerHandle.of(mosquitto)
    with handle.probe(protocol="5") as tenant:
        tenant.publish(LSTM, oip_request("stale-1", WINDOW), retain=True)  # before any worker subscribed
        with running_worker(_config(mosquitto, repository)):
            tenant.subscribe("tenants/acme/models/lstm/responses")
            tenant.publish(LSTM, oip_request("live-retained", WINDOW), retain=True)
            tenant.publish(LSTM, oip_request("fresh-1", WINDOW))
            got = tenant.wait_for(2, timeout=20)
            assert sorted((m.json()["id"], _code(m)) for m in got) == [
                ("fresh-1", "ok"), ("live-retained", "retained_request")
            ]
            # The broker holds no retained request any more: a new subscriber gets only the marker.
            with handle.probe(protocol="5") as late:
                late.subscribe(LSTM)
                tenant.publish(LSTM, b"marker-not-a-request")
                first = late.wait_for(1, timeout=20)[0]
                assert first.payload == b"marker-not-a-request" and not first.retain
            tenant.wait_for(3, timeout=20)  # the marker's bad_json answer
        assert not [m for m in tenant.messages if m.json().get("id") == "stale-1"]


# --------------------------------------------------------------------------- actuals topic


def test_actuals_published_by_the_tenant_score_forecasts_of_separate_windows(mosquitto: MosquittoBroker,
                                                                             repository: Path) -> None:
    """Windows that never overlap (one every 100 readings): the tenant's actuals topic resolves
    their forecasts. Actuals are not requests: no answer, except one error for an invalid one."""
    handle = BrokerHandle.of(mosquitto)
    config = _config(mosquitto, repository, quality={"min_resolved": 5})
    with running_worker(config), handle.probe(protocol="5") as tenant:
        tenant.subscribe(["tenants/acme/models/lstm/responses", "tenants/acme/errors",
                          "tenants/acme/models/lstm/quality"])
        for k in range(10):
            body = orjson.loads(oip_request(f"w-{k}", WINDOW))
            body["parameters"] = {"series": "s1", "time": 100 * k, "step_s": 1}
            tenant.publish(LSTM, orjson.dumps(body))
        tenant.wait_for(lambda m: m.topic.endswith("/responses"), count=10, timeout=20)
        actuals = [{"series": "s1", "time": 100 * k + 1, "value": float(WINDOW[0, -1, 0])} for k in range(10)]
        tenant.publish("tenants/acme/actuals", orjson.dumps(actuals))
        tenant.publish("tenants/acme/actuals", b'{"series": "s1", "value": 3}')  # no time
        quality = tenant.wait_for(lambda m: m.topic.endswith("/quality") and any(
            v["resolved"] == 10 for v in m.json()["versions"]), timeout=20)[-1].json()
        assert quality["versions"][0]["persistence_mae"] == 0.0  # the actual repeats the last reading
        error = tenant.wait_for(lambda m: m.topic == "tenants/acme/errors", timeout=20)[0].json()
        assert error["parameters"]["code"] == "invalid_request" and "time" in error["error"]
        assert len([m for m in tenant.messages if m.topic.endswith("/responses")]) == 10
