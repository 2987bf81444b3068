"""Tenant isolation on real brokers configured from ``python -m provisioning.broker_auth`` output.

Mosquitto (``secured`` fixture): the dynamic-security plugin with the users and roles
generated from the server config, loaded by the mosquitto.conf lines the generator writes
(``allow_anonymous false``, no password_file/acl_file). What Mosquitto 2.0.11 does with it,
and what these tests therefore demand: a SUBSCRIBE outside the user's rights is refused (v5:
SUBACK 0x87 Not authorized; v3.1.1: 0x80), ``$share/<group>/`` filters included; a PUBLISH
outside them is acknowledged (v5: 0x87; v3.1.1: a plain PUBACK) and dropped; a message is
delivered only if the receiver may receive its topic. Worker client ids are secret (derived
from the worker password, :mod:`server_app.client_ids`): a tenant using a worker's public
name as client id takes nothing over.

The embedded amqtt broker with the generated ``amqtt-auth.json``: a denied SUBSCRIBE gets
SUBACK 0x80, a denied PUBLISH is acknowledged and dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from provisioning.broker_auth import AMQTT_AUTH_FILE, DYNSEC_FILE
from provisioning.embedded_broker import embedded_broker
from server_app.client_ids import worker_client_id
from server_app.config import parse_config
from server_app.worker import Worker
from tests.support.brokers import WORKER_USER, Secured
from tests.support.messages import MqttProbeError
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import prometheus_samples, running_worker, sum_samples

pytestmark = pytest.mark.integration

WINDOW = windows_from_sample(1, seed=1)


def _answers(worker: Worker, **labels: str) -> float:
    return sum_samples(prometheus_samples(worker.metrics.render().decode()), "inference_answers_total", **labels)


# Every form of the workers' request subscription a tenant might try: the configured group,
# other groups, the plain filter, and narrower or wider filters that cover other tenants.
WORKER_FILTERS = [
    "$share/inference/tenants/+/models/+/requests",
    "$share/other/tenants/+/models/+/requests",
    "$share/inference/tenants/beta/models/+/requests",
    "$share/inference/#",
    "tenants/+/models/+/requests",
    "tenants/beta/models/ann/requests",
    "tenants/+/models/ann/requests",
    "+/+/models/+/requests",
    "#",
]
N_REQUESTS = 1000
IN_FLIGHT = 100  # unanswered requests at most: far below the worker's queue, whatever the machine's speed


def _counted_requests(
    tenant: MqttProbe, topic: str, prefix: str, *, between: Callable[[int], None] = lambda i: None
) -> dict[str, int]:
    """Send N_REQUESTS on ``topic`` with at most IN_FLIGHT unanswered; answers per id.

    Waits for progress, not for a time: it stops early only when nothing more arrives for
    10 s (requests lost), and returns what came, so a failure shows how many were lost.
    ``between(i)`` runs before request i (e.g. an attacker's move).
    """

    def answered() -> int:
        return sum(1 for m in tenant.messages if m.topic.endswith("/responses"))

    def wait_until(count: int) -> bool:
        try:
            tenant.wait_for(lambda m: m.topic.endswith("/responses"), count=count, timeout=10)
        except TimeoutError:
            return False
        return True

    for i in range(N_REQUESTS):
        between(i)
        if i - answered() >= IN_FLIGHT and not wait_until(i - IN_FLIGHT + 1):
            break
        tenant.publish(topic, oip_request(f"{prefix}-{i}", WINDOW), wait=False)
    wait_until(N_REQUESTS)
    per_id: dict[str, int] = {}
    for message in tenant.messages:
        if message.topic.endswith("/responses"):
            body = message.json()
            assert "error" not in body, body
            per_id[body["id"]] = per_id.get(body["id"], 0) + 1
    print(f"\n{prefix}: {len(per_id)} of {N_REQUESTS} requests answered")
    return per_id


def _all_answered_once(per_id: dict[str, int], prefix: str) -> None:
    wanted = {f"{prefix}-{i}" for i in range(N_REQUESTS)}
    missing = sorted(wanted - set(per_id), key=lambda r: int(r.rsplit("-", 1)[1]))
    assert not missing, f"{len(missing)} of {N_REQUESTS} requests never answered, e.g. {missing[:5]}"
    assert per_id == dict.fromkeys(wanted, 1), {k: v for k, v in per_id.items() if v != 1}


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
        "$SYS/#",
    ]
    with running_worker(secured.config), secured.probe("acme") as spy, secured.probe("beta") as beta:
        refused = {f: spy.subscribe(f, check=False)[0] for f in spy_filters}
        spy.subscribe(["tenants/acme/#", "$share/mine/tenants/acme/models/+/responses"])  # its own: granted
        beta.subscribe("tenants/beta/models/ann/responses")
        for i in range(20):
            beta.publish("tenants/beta/models/ann/requests", oip_request(f"beta-{i}", WINDOW))
        answers = beta.wait_for(20, timeout=15)
        assert sorted(m.json()["id"] for m in answers) == sorted(f"beta-{i}" for i in range(20))
        spy.publish("tenants/acme/models/lstm/requests", oip_request("acme-own", WINDOW))
        spy.wait_for(lambda m: m.topic == "tenants/acme/models/lstm/responses", timeout=10)
        time.sleep(0.5)
        leaked = [m.topic for m in spy.messages if not m.topic.startswith("tenants/acme/")]
    print(f"\nSUBACK codes for the spy's filters: {refused}")
    assert all(code == 0x87 for code in refused.values()), refused
    assert not leaked, f"tenant acme received other tenants' messages: {leaked[:10]}"


# --------------------------------------------------------------------------- the workers' subscription


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_tenant_cannot_join_the_workers_subscription(secured: Secured, protocol: str) -> None:
    """Issue 11 (critical): with the acl_file, a tenant's SUBSCRIBE to the workers' shared filter
    was granted; the broker then dealt it other tenants' requests and its read rule dropped them.
    Now every form is refused at SUBSCRIBE, and the victim's 1,000 requests are all answered."""
    with (
        running_worker(secured.config),
        secured.probe("acme", protocol=protocol) as attacker,
        secured.probe("beta") as beta,
    ):
        codes = {f: attacker.subscribe(f, check=False)[0] for f in WORKER_FILTERS}
        beta.subscribe("tenants/beta/models/ann/responses")
        per_id = _counted_requests(beta, "tenants/beta/models/ann/requests", "beta")
        stolen = [m.topic for m in attacker.messages]
    print(f"\nSUBACK codes (MQTT {protocol}) for the workers' filters: {codes}")
    assert codes == dict.fromkeys(WORKER_FILTERS, 0x87 if protocol == "5" else 0x80)
    assert not stolen, stolen[:5]
    _all_answered_once(per_id, "beta")


# --------------------------------------------------------------------------- the workers' client ids


def test_tenant_using_a_workers_public_id_takes_nothing_over(secured: Secured) -> None:
    """Issue 11 (high): worker client ids were the public worker id (host name, inference-N); a
    tenant connecting with one kicked the worker and inherited its session. The broker cannot
    reserve an id for a user (module doc of server_app.client_ids), so the worker connects with
    an id derived from its password: a tenant using the public id gets a fresh session of its
    own, the worker stays connected, and none of the other tenant's 1,000 requests is lost."""
    public_id = "inference-0"
    with running_worker(secured.config, worker_id=public_id) as worker, secured.probe("beta") as beta:
        secret_id = worker_client_id(parse_config(yaml.safe_dump(secured.config)).broker, public_id)
        client_id = worker.transport.client_id
        beta.subscribe("tenants/beta/models/ann/responses")
        sessions: list[bool | None] = []

        def take_over(i: int) -> None:
            if i % 50 == 0:  # 20 attempts over the run; session_expiry 0: a session found is never its own
                for client_id in (public_id, f"{public_id}-0"):
                    attacker = secured.probe("acme", client_id=client_id, clean_session=False, session_expiry_s=0)
                    sessions.append(attacker.session_present)
                    attacker.close()

        per_id = _counted_requests(beta, "tenants/beta/models/ann/requests", "beta", between=take_over)
        kicked = secured.broker.log_path.read_text(errors="replace").count("already connected, closing old connection")
        answers_in_public_name = {m.json()["parameters"].get("worker") for m in beta.messages}
    print(f"\nattacker sessions present: {sum(map(bool, sessions))} of {len(sessions)}; workers kicked: {kicked}")
    assert sessions and not any(sessions), "the attacker never found a session to inherit"
    assert kicked == 0, f"the broker closed {kicked} connection(s) for a duplicate client id"
    _all_answered_once(per_id, "beta")
    assert answers_in_public_name == {public_id}, "answers name the public id, never the client id"
    assert client_id == secret_id != public_id, "server_app/worker.py must connect with worker_client_id(...)"


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
        sent = 0
        for topic in forbidden:
            for _ in range(5):
                attacker.publish(topic, oip_request(f"forged-{sent}", WINDOW))
                sent += 1
        attacker.publish("inqueue/lstm", orjson.dumps({f"norm_{i}": 0.1 for i in range(1, 7)}))
        sent += 1
        reasons = attacker.puback_reasons
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

        def probe(user: str | None, password: str | None = None, **kwargs: Any) -> MqttProbe:
            if user is not None and password is None:
                password = secured.passwords[user]
            return MqttProbe(broker.connect_host, broker.port, username=user, password=password, **kwargs).connect()

        for kwargs in ({"user": "acme", "password": "wrong"}, {"user": None}, {"user": "mallory", "password": "x"}):
            with pytest.raises(MqttProbeError):
                probe(**kwargs)
        with running_worker(config, worker_id="laptop") as worker, probe("acme") as acme, probe("beta") as beta:
            filters = ("tenants/beta/#", "tenants/+/errors", "#", *WORKER_FILTERS)
            denied = {f: acme.subscribe(f, check=False)[0] for f in filters}
            # The worker's public id as client id: amqtt too hands a session to whoever names it.
            takeover = probe("acme", client_id="laptop", clean_session=False)
            took_session = takeover.session_present
            takeover.close()
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
    assert took_session is False, "the tenant found the worker's session under its public id"
    assert beta_ids == ["beta-legit"], beta_ids
    assert not acme_foreign
    assert answered == {"acme": 1, "beta": 1}


def test_generated_files_are_private(secured: Secured) -> None:
    for name in (DYNSEC_FILE, "amqtt.passwd"):
        assert (secured.out / name).stat().st_mode & 0o077 == 0, name
    passwords = Path(secured.out.parent / "passwords.yaml")
    assert passwords.stat().st_mode & 0o077 == 0
    text = (secured.out / DYNSEC_FILE).read_text()
    assert all(secret not in text for secret in secured.passwords.values())


# --------------------------------------------------------------------------- retained requests


def test_retained_requests_what_the_broker_does_and_does_not_enforce(secured: Secured) -> None:
    """Pins the Mosquitto 2.0.11 facts the worker's handling of retained requests relies on.

    The broker cannot refuse a tenant's retained request: neither the dynamic-security plugin
    nor the acl_file of 2.0 has a per-user retain right, and `retain_available false` is
    broker-wide (the workers' status and will are retained). It stores the message, and hands
    it to every NEW `$share` subscriber (against MQTT 5, which exempts shared subscriptions),
    unless that subscriber asks for retain handling 2. The worker user may clear it."""
    from paho.mqtt.subscribeoptions import SubscribeOptions

    shared = "$share/inference/tenants/+/models/+/requests"
    with secured.probe("acme") as acme:
        acme.publish("tenants/acme/models/lstm/requests", oip_request("retained-1", WINDOW), retain=True)
        reasons = acme.puback_reasons
        with secured.probe(WORKER_USER) as plain, secured.probe(WORKER_USER) as careful:
            plain.subscribe(shared)
            _, mid = careful.client.subscribe(shared, options=SubscribeOptions(qos=1, retainHandling=2))
            assert mid is not None
            careful._wait_ack(careful._subacks, mid, 10, "SUBACK")
            replayed = plain.wait_for(1, timeout=10)
            careful.assert_no_messages(within=0.5)
            plain.publish("tenants/acme/models/lstm/requests", b"", retain=True)  # the worker user clears it
        with secured.probe(WORKER_USER) as later:
            later.subscribe(shared)
            later.assert_no_messages(within=0.5)
    # 0x10 "no matching subscribers" (no worker runs here) is a success too: stored all the same.
    assert len(reasons) == 1 and reasons[0] < 0x80, f"accepted, no per-user retain right: {reasons}"
    assert replayed[0].retain and replayed[0].json()["id"] == "retained-1"
