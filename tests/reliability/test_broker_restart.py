"""Mosquitto (persistence on) restarted mid-load: nothing acknowledged to the publisher is lost.

The tenant publishes with QoS 1 (MQTT v5) on a persistent session and counts the requests
the broker acknowledged. Mosquitto is stopped (SIGTERM: it saves its persistence database)
and started again on the same port while requests keep coming; the worker and the tenant
reconnect by themselves. Every acknowledged request must get an answer within a bounded
time; requests paho could not hand to the broker meanwhile are resent by paho after the
reconnect and count once acknowledged.

What Mosquitto 2.0.11 does, found by this test (see
``test_mosquitto_restores_shared_subscription_of_persistent_session``): it restores a
persistent session's queued messages but NOT its ``$share/...`` subscription. Until the
worker reconnects and subscribes again, requests match no subscriber and are dropped; the
publisher gets PUBACK reason code 0x10 "No matching subscribers" (v5; a 3.1.1 publisher gets
a plain PUBACK and cannot tell). A v5 publisher therefore treats 0x10 as "not delivered"
and publishes again, as this test's tenant does; "acknowledged" below means reason code 0.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.brokers import ServingSetup
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import oip_request, paced, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess, sum_samples

pytestmark = [pytest.mark.integration]

RATE = 500.0
PACED_BEFORE = 1000
BURST = 1500  # as fast as possible just before the restart: requests queued in the broker for the worker
PACED_AFTER = 1000  # published while the broker is down and after it is back
TOTAL = PACED_BEFORE + BURST + PACED_AFTER
DOWN_S = 1.0
ANSWER_TIMEOUT_S = 60.0
REPUBLISH_ROUNDS = 20


def _worker_counters(worker: ServerProcess) -> dict[str, float]:
    try:
        samples = worker.metrics()
    except OSError as exc:
        return {f"metrics unavailable: {exc}": 0.0}
    names = ("inference_answers_total", "inference_duplicate_requests_total", "inference_dropped_messages_total")
    return {name: sum_samples(samples, name) for name in names}


@pytest.mark.slow
def test_broker_restart_mid_load_loses_no_acknowledged_request(
    serving: ServingSetup, record_property: Callable[[str, object], None]
) -> None:
    mosquitto = serving.broker
    # The whole burst may be buffered: this test is about a restart, not about load shedding.
    worker = serving.worker("restart-test-worker", tenants={"acme": {"models": ["lstm"]}}, queue_size=5000)
    windows = windows_from_sample(64, seed=5)
    payloads = [(f"rst-{n:05d}", oip_request(f"rst-{n:05d}", windows[n % 64 : n % 64 + 1])) for n in range(TOTAL)]
    tenant = serving.tenant("acme", client_id="acme-restart-test", persistent=True)
    timing: dict[str, float] = {}
    with worker, tenant:
        restarted = threading.Event()

        def restart_broker() -> None:
            timing["acked_before_restart"] = float(len(tenant.acked_ids()))
            started = time.monotonic()
            mosquitto.stop()  # SIGTERM: mosquitto writes its persistence database
            time.sleep(DOWN_S)
            mosquitto.restart()  # same port, same database
            timing["broker_down_s"] = time.monotonic() - started
            restarted.set()

        topic = "tenants/acme/models/lstm/requests"
        for n in paced(PACED_BEFORE, RATE):
            tenant.send(topic, *payloads[n])
        for n in range(PACED_BEFORE, PACED_BEFORE + BURST):
            tenant.send(topic, *payloads[n])
        restarter = threading.Thread(target=restart_broker, daemon=True)
        restarter.start()
        for n in paced(PACED_AFTER, RATE):
            tenant.send(topic, *payloads[PACED_BEFORE + BURST + n])
        restarter.join(60)
        assert restarted.is_set(), "broker restart did not finish"
        tenant.wait_connected(30)
        assert tenant.wait_acked(30), "paho did not get every request acknowledged after the restart"

        # A v5 publisher resends what the broker acknowledged with 0x10 (no subscriber yet).
        unrouted_ids: set[str] = set()
        rounds = 0
        for _ in range(REPUBLISH_ROUNDS):
            unrouted = tenant.unrouted_ids()
            if not unrouted:
                break
            unrouted_ids.update(unrouted)
            rounds += 1
            time.sleep(0.5)
            tenant.republish(unrouted)
            assert tenant.wait_acked(30)
        assert not tenant.unrouted_ids(), "requests still find no subscriber: the worker never resubscribed"

        accepted = tenant.accepted_ids()
        reconnected_at = time.monotonic()
        missing = tenant.wait_answers(accepted, timeout=ANSWER_TIMEOUT_S)
        timing["all_answered_after_s"] = time.monotonic() - reconnected_at
        assert not missing, (
            f"{len(missing)} of {len(accepted)} acknowledged requests never answered, e.g. {sorted(missing)[:5]}; "
            f"worker counters: {_worker_counters(worker)}\n{worker.log_tail()}\n{mosquitto.log_tail()}"
        )
        tenant.quiet_for(1.0, timeout=10)
        stats = tenant.stats()
        assert worker.is_running(), worker.log_tail()

    answers = tenant.snapshot()
    codes = {answer.code for request_id in accepted for answer in answers[request_id]}
    figures = {
        "sent": stats.sent,
        "accepted_by_broker": len(accepted),
        "acked_before_restart": int(timing["acked_before_restart"]),
        "acked_0x10_no_subscriber_then_republished": len(unrouted_ids),
        "republish_rounds": rounds,
        "answered_ids": stats.answered_ids,
        "answers": stats.answers,
        "duplicates_seen_by_client": stats.duplicates,
        "broker_down_s": round(timing["broker_down_s"], 2),
        "all_answered_within_s": round(timing["all_answered_after_s"], 2),
        "tenant_connects": tenant.connects,
    }
    for key, value in figures.items():
        record_property(key, value)
    print(f"\nbroker restart figures: {figures}")
    assert len(accepted) == TOTAL
    assert codes == {"ok"}, codes
    assert tenant.connects >= 2, "the tenant never saw the broker go away: the restart did not happen mid-load"


@pytest.mark.xfail(
    reason="Mosquitto 2.0.11 restores a persistent session's queued messages but not its $share subscription: "
    "until the worker reconnects, requests find no subscriber (PUBACK 0x10) and are dropped",
    strict=False,
)
def test_mosquitto_restores_shared_subscription_of_persistent_session(tmp_path: Path) -> None:
    """The broker behaviour behind the 0x10 republishing above, in isolation."""
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        kwargs = {"client_id": "shared-sub-worker", "clean_session": False, "session_expiry_s": 3600, "protocol": "5"}
        worker = MqttProbe(broker.host, broker.port, **kwargs).connect()  # type: ignore[arg-type]
        worker.subscribe("$share/inference/tenants/+/models/+/requests")
        worker.close()
        broker.restart()
        with MqttProbe(broker.host, broker.port, protocol="5") as tenant:
            tenant.publish("tenants/acme/models/lstm/requests", b'{"id": "while-worker-away"}')
            reasons = tenant.puback_reasons
        worker = MqttProbe(broker.host, broker.port, **kwargs).connect()  # type: ignore[arg-type]
        try:
            assert worker.session_present
            got = worker.wait_for(1, timeout=3)
        except TimeoutError:
            got = []
        finally:
            worker.close()
        assert reasons == [0] and [m.payload for m in got] == [b'{"id": "while-worker-away"}'], (
            f"PUBACK reason codes {reasons}, delivered after reconnect: {[m.payload for m in got]}"
        )
    finally:
        broker.stop()
        shutil.rmtree(tmp_path / "mosquitto", ignore_errors=True)
