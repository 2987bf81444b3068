"""Tenant isolation on real brokers configured from ``python -m server_app.auth`` output.

Mosquitto (``secured`` fixture): password file + ACL file generated from the server config,
``allow_anonymous false``, ``per_listener_settings false``. What Mosquitto 2.0 does with the
ACL, and what these tests therefore accept: a SUBSCRIBE outside the user's rights is granted
(the ``acl_file`` does not check subscriptions) but nothing is ever delivered through it (the
``read`` check is made per message); a PUBLISH outside the user's rights is acknowledged (v5:
reason code 0x87 Not authorized; v3.1.1: a plain PUBACK) and dropped.

The embedded amqtt broker with the generated ``amqtt-auth.json``: a denied SUBSCRIBE gets
SUBACK 0x80, a denied PUBLISH is acknowledged and dropped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from server_app.auth import AMQTT_AUTH_FILE, embedded_broker
from server_app.worker import Worker
from tests.brokers import MqttProbe, MqttProbeError
from tests.reliability.harness import prometheus_samples, sum_samples
from tests.security.conftest import WORKER_USER, Secured
from tests.serving import oip_request, running_worker, windows_from_sample

pytestmark = pytest.mark.integration

WINDOW = windows_from_sample(1, seed=1)


def _answers(worker: Worker, **labels: str) -> float:
    return sum_samples(prometheus_samples(worker.metrics.render().decode()), "inference_answers_total", **labels)


def _puback_reasons(probe: MqttProbe) -> list[int]:
    reasons: list[int] = []
    probe.client.on_publish = lambda client, userdata, mid, rc, props: reasons.append(rc.value)
    return reasons


# --------------------------------------------------------------------------- authentication


def test_only_configured_users_with_their_passwords_connect(secured: Secured) -> None:
    for user in ("acme", "beta", "course", WORKER_USER):
        secured.probe(user).close()
    refused: dict[str, int] = {}
    attempts: dict[str, dict[str, Any]] = {
        "wrong password v5": {"user": "acme", "password": "acme-secret-not"},
        "other tenant's password": {"user": "acme", "password": "beta-secret"},
        "unknown user": {"user": "mallory", "password": "x"},
        "anonymous v5": {"user": None},
        "wrong password v3.1.1": {"user": "beta", "password": "nope", "protocol": "3.1.1"},
        "anonymous v3.1.1": {"user": None, "protocol": "3.1.1"},
        "stale user from nowhere": {"user": "inference-worker2", "password": secured.passwords[WORKER_USER]},
    }
    for name, kwargs in attempts.items():
        with pytest.raises(MqttProbeError) as info:
            secured.probe(**kwargs)
        code = info.value.reason_code
        refused[name] = code.value if code is not None and hasattr(code, "value") else -1
    print(f"\nCONNACK codes of refused connections: {refused}")
    # v5: 0x86 bad user name or password / 0x87 not authorised; v3.1.1: 4 or 5.
    assert all(code in (0x86, 0x87, 4, 5) for code in refused.values()), refused


# --------------------------------------------------------------------------- reading others' answers


def test_tenant_cannot_read_another_tenants_answers(secured: Secured) -> None:
    spy_filters = [
        "tenants/beta/#",
        "tenants/beta/models/ann/responses",
        "tenants/+/models/+/responses",
        "tenants/+/errors",
        "$share/spy/tenants/beta/#",
        "#",
        "outqueue/lstm",
        "service/workers/#",
    ]
    with running_worker(secured.config), secured.probe("acme") as spy, secured.probe("beta") as beta:
        granted = {f: spy.subscribe(f, check=False)[0] for f in spy_filters}
        beta.subscribe("tenants/beta/models/ann/responses")
        for i in range(20):
            beta.publish("tenants/beta/models/ann/requests", oip_request(f"beta-{i}", WINDOW))
        answers = beta.wait_for(20, timeout=15)
        assert sorted(m.json()["id"] for m in answers) == sorted(f"beta-{i}" for i in range(20))
        # The spy's subscriptions are live: its own answer reaches it through them.
        spy.publish("tenants/acme/models/lstm/requests", oip_request("acme-own", WINDOW))
        spy.wait_for(lambda m: m.topic == "tenants/acme/models/lstm/responses", timeout=10)
        time.sleep(0.5)
        leaked = [m.topic for m in spy.messages if not m.topic.startswith("tenants/acme/")]
    print(f"\nSUBACK codes for the spy's filters (Mosquitto 2.0 grants, then filters per message): {granted}")
    assert not leaked, f"tenant acme received other tenants' messages: {leaked[:10]}"


# --------------------------------------------------------------------------- writing into others' topics


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_tenant_cannot_publish_into_another_tenants_topics(secured: Secured, protocol: str) -> None:
    forbidden = [
        "tenants/beta/models/ann/requests",  # requests in beta's name
        "tenants/beta/models/ann/responses",  # forged answers to beta
        "tenants/beta/errors",
        "inqueue/lstm",  # the tutorial tenant's queue
        "outqueue/lstm",
        "tenants/acme/models/lstm/responses",  # forged answers, even to itself
        "service/workers/spoofed/status",
        "$share/inference/tenants/beta/models/ann/requests",
    ]
    with (
        running_worker(secured.config) as worker,
        secured.probe("beta") as beta,
        secured.probe("course") as course,
        secured.probe("acme", protocol=protocol) as attacker,
    ):
        beta.subscribe("tenants/beta/#")
        course.subscribe("outqueue/lstm")
        reasons = _puback_reasons(attacker)
        sent = 0
        for topic in forbidden:
            for _ in range(5):
                attacker.publish(topic, oip_request(f"forged-{sent}", WINDOW))
                sent += 1
        attacker.publish("inqueue/lstm", orjson.dumps({f"norm_{i}": 0.1 for i in range(1, 7)}))
        sent += 1
        # A request of its own, after the forged ones: once it is answered, everything before it
        # that had reached the worker would have been answered too.
        attacker.subscribe("tenants/acme/models/lstm/responses")
        attacker.publish("tenants/acme/models/lstm/requests", oip_request("acme-legit", WINDOW))
        attacker.wait_for(lambda m: m.json().get("id") == "acme-legit", timeout=10)
        time.sleep(0.3)
        beta_saw = [(m.topic, m.payload[:60]) for m in beta.messages]
        course_saw = [m.payload for m in course.messages]
        answered_beta = _answers(worker, tenant="beta")
        answered_course = _answers(worker, tenant="course")
        answered_total = _answers(worker)
        forged_answers = [m for m in attacker.messages if m.json().get("id") != "acme-legit"]
    print(f"\nPUBACK reason codes of {sent + 1} publishes over MQTT {protocol}: {sorted(set(reasons))}")
    assert not beta_saw, f"beta received forged messages: {beta_saw[:5]}"
    assert not course_saw, f"the tutorial tenant received forged messages: {course_saw[:5]}"
    assert answered_beta == 0 and answered_course == 0
    assert answered_total == 1, "only acme's own request reached the worker"
    assert not forged_answers, [m.topic for m in forged_answers]
    denied = reasons[:sent]
    assert set(denied) <= ({0x87} if protocol == "5" else {0}), denied


# --------------------------------------------------------------------------- MQTT v5 response topics


def test_response_topics_inside_own_namespace_only(secured: Secured) -> None:
    """A v5 ResponseTopic in the tenant's own namespace is honoured (the generated ACL lets the
    worker write there); one naming another tenant is ignored: the answer goes to the requester's
    own response topic and the other tenant sees nothing."""
    with running_worker(secured.config), secured.probe("acme") as acme, secured.probe("beta") as beta:
        acme.subscribe("tenants/acme/#")
        beta.subscribe("tenants/beta/#")
        own = MqttProbe.v5_properties(response_topic="tenants/acme/inbox/session-1", correlation_data=b"c-1")
        acme.publish("tenants/acme/models/lstm/requests", oip_request("own-inbox", WINDOW), properties=own)
        foreign = MqttProbe.v5_properties(response_topic="tenants/beta/models/ann/responses", correlation_data=b"c-2")
        acme.publish("tenants/acme/models/lstm/requests", oip_request("foreign", WINDOW), properties=foreign)
        answers = {
            m.json()["id"]: m for m in acme.wait_for(lambda m: not m.topic.endswith("/requests"), count=2, timeout=10)
        }
        time.sleep(0.3)
        beta_saw = [m.topic for m in beta.messages]
    assert answers["own-inbox"].topic == "tenants/acme/inbox/session-1"
    assert answers["own-inbox"].correlation_data == b"c-1"
    assert answers["foreign"].topic == "tenants/acme/models/lstm/responses"
    assert answers["foreign"].correlation_data == b"c-2"
    assert not beta_saw, beta_saw


# --------------------------------------------------------------------------- the worker's own rights


def test_workers_with_service_user_serve_end_to_end_over_shared_subscriptions(secured: Secured) -> None:
    config = secured.config
    with (
        running_worker(config, client_id="secure-worker-a") as worker_a,
        running_worker(config, client_id="secure-worker-b") as worker_b,
        secured.probe("acme") as acme,
        secured.probe("course") as course,
        secured.probe(WORKER_USER) as operator,
    ):
        acme.subscribe("tenants/acme/#")
        course.subscribe("outqueue/lstm")
        ids = []
        for i in range(200):
            model = "lstm" if i % 2 else "ann"
            ids.append(f"acme-{i}")
            acme.publish(f"tenants/acme/models/{model}/requests", oip_request(f"acme-{i}", WINDOW), wait=False)
        course.publish("inqueue/lstm", orjson.dumps({f"norm_{i}": 0.05 * i for i in range(1, 7)}))
        answers = acme.wait_for(lambda m: m.topic.endswith("/responses"), count=200, timeout=30)
        tutorial = course.wait_for(1, timeout=10)
        # The workers' retained status went through too (readwrite service/workers/#).
        operator.subscribe("service/workers/+/status")
        statuses = operator.wait_for(2, timeout=10)
        served = {"a": _answers(worker_a, tenant="acme"), "b": _answers(worker_b, tenant="acme")}
    bodies = [m.json() for m in answers]
    assert sorted(b["id"] for b in bodies) == sorted(ids)
    assert all("error" not in b for b in bodies), [b for b in bodies if "error" in b][:3]
    assert list(tutorial[0].json()) == ["LSTM"]
    assert {m.json()["worker"] for m in statuses} == {"secure-worker-a", "secure-worker-b"}
    print(f"\nanswers per worker over $share: {served}")
    assert served["a"] + served["b"] == 200 and min(served.values()) > 0


# --------------------------------------------------------------------------- embedded amqtt broker


def test_embedded_broker_with_generated_auth_isolates_tenants(secured: Secured) -> None:
    auth_file = secured.out / AMQTT_AUTH_FILE
    with embedded_broker(auth_file, port=0) as broker:
        config = {**secured.config}
        config["broker"] = {
            **secured.config["broker"],
            "host": broker.connect_host,
            "port": broker.port,
            "shared_group": None,
            "protocol": "3.1.1",
        }

        def probe(user: str | None, password: str | None = None) -> MqttProbe:
            if user is not None and password is None:
                password = secured.passwords[user]
            return MqttProbe(broker.connect_host, broker.port, username=user, password=password).connect()

        for kwargs in ({"user": "acme", "password": "wrong"}, {"user": None}, {"user": "mallory", "password": "x"}):
            with pytest.raises(MqttProbeError):
                probe(**kwargs)
        with running_worker(config) as worker, probe("acme") as acme, probe("beta") as beta:
            denied = {f: acme.subscribe(f, check=False)[0] for f in ("tenants/beta/#", "tenants/+/errors", "#")}
            acme.subscribe("tenants/acme/#")
            beta.subscribe("tenants/beta/#")
            acme.publish("tenants/beta/models/ann/requests", oip_request("forged", WINDOW))
            acme.publish("tenants/beta/models/ann/responses", b'{"id": "forged-answer"}')
            acme.publish("tenants/acme/models/lstm/requests", oip_request("acme-legit", WINDOW))
            beta.publish("tenants/beta/models/ann/requests", oip_request("beta-legit", WINDOW))
            acme.wait_for(lambda m: m.topic == "tenants/acme/models/lstm/responses", timeout=10)
            beta.wait_for(lambda m: m.topic == "tenants/beta/models/ann/responses", timeout=10)
            time.sleep(0.3)
            beta_ids = [m.json().get("id") for m in beta.messages if m.topic.endswith("/responses")]
            acme_foreign = [m.topic for m in acme.messages if not m.topic.startswith("tenants/acme/")]
            answered = {"acme": _answers(worker, tenant="acme"), "beta": _answers(worker, tenant="beta")}
    assert set(denied.values()) == {0x80}, denied
    assert beta_ids == ["beta-legit"], beta_ids
    assert not acme_foreign
    assert answered == {"acme": 1, "beta": 1}


def test_generated_files_are_private(secured: Secured) -> None:
    for name in ("mosquitto.passwd", "amqtt.passwd"):
        assert (secured.out / name).stat().st_mode & 0o077 == 0, name
    passwords = Path(secured.out.parent / "passwords.yaml")
    assert passwords.stat().st_mode & 0o077 == 0
    text = (secured.out / "mosquitto.passwd").read_text()
    assert all(secret not in text for secret in secured.passwords.values())
