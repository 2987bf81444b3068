"""A worker SIGKILLed mid-load and restarted with the same client id loses no request.

The worker acknowledges a request only after the broker accepted its answer, and its MQTT
session is persistent: the broker keeps what the dead worker had not acknowledged and
redelivers it to the restarted process. Answers that were published but whose request
acknowledgement was lost in the kill come twice; the client de-duplicates by id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from tests.support.brokers import ServingSetup
from tests.support.payloads import oip_request, paced, windows_from_sample
from tests.support.workers import sum_samples

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 600.0  # requests/s of the paced phases, well under one worker's capacity
PACED_BEFORE = 1000
BURST = 1500  # published as fast as possible just before the kill: a backlog inside the worker
PACED_AFTER = 1000
TOTAL = PACED_BEFORE + BURST + PACED_AFTER
DOWN_S = 0.5


def test_sigkill_mid_load_every_request_answered_once_after_dedup(
    serving: ServingSetup, record_property: Callable[[str, object], None]
) -> None:
    # The whole burst may be buffered: this test is about a kill, not about load shedding.
    worker = serving.worker("kill-test-worker", tenants={"acme": {"models": ["lstm"]}}, queue_size=5000)
    windows = windows_from_sample(64, seed=3)
    payloads = [(f"kill-{n:05d}", oip_request(f"kill-{n:05d}", windows[n % 64 : n % 64 + 1])) for n in range(TOTAL)]
    killed_at: dict[str, float] = {}
    with worker, serving.tenant("acme") as tenant:
        restarted = threading.Event()

        def kill_and_restart() -> None:
            killed_at["answered_before_kill"] = float(len(tenant.answered(tenant.sent_ids)))
            killed_at["pid"] = float(worker.pid)
            worker.kill()
            time.sleep(DOWN_S)
            worker.start()
            restarted.set()

        topic = "tenants/acme/models/lstm/requests"
        for n in paced(PACED_BEFORE, RATE):
            tenant.send(topic, *payloads[n])
        for n in range(PACED_BEFORE, PACED_BEFORE + BURST):
            tenant.send(topic, *payloads[n])
        killer = threading.Thread(target=kill_and_restart, daemon=True)
        killer.start()
        for n in paced(PACED_AFTER, RATE):
            tenant.send(topic, *payloads[PACED_BEFORE + BURST + n])
        killer.join(30)
        assert restarted.is_set(), "worker was not restarted"
        worker.wait_ready()
        assert tenant.wait_acked(30), "the broker did not acknowledge every request"
        missing = tenant.wait_answers(tenant.sent_ids, timeout=60)
        assert not missing, f"{len(missing)} requests never answered, e.g. {sorted(missing)[:5]}\n{worker.log_tail()}"
        tenant.quiet_for(1.0, timeout=10)  # late duplicates, if any, are counted too
        stats = tenant.stats()
        after_restart = worker.metrics()

    answers = tenant.snapshot()
    for request_id, _ in payloads:
        for answer in answers[request_id]:
            assert answer.code == "ok", answer.body
            assert answer.topic == "tenants/acme/models/lstm/responses"
            assert np.isfinite(answer.body["outputs"][0]["data"]).all()
    served_after_restart = sum_samples(after_restart, "inference_answers_total", tenant="acme")
    redelivered = sum_samples(after_restart, "inference_duplicate_requests_total")
    figures = {
        "sent": stats.sent,
        "acked_by_broker": stats.acked,
        "answered_ids": stats.answered_ids,
        "answers": stats.answers,
        "duplicates_seen_by_client": stats.duplicates,
        "answered_before_kill": int(killed_at["answered_before_kill"]),
        "answered_by_restarted_worker": int(served_after_restart),
        "duplicates_dropped_by_restarted_worker": int(redelivered),
    }
    for key, value in figures.items():
        record_property(key, value)
    print(f"\nworker SIGKILL figures: {figures}")
    assert stats.answered_ids == TOTAL
    # The only duplicates possible are answers of requests in flight at the kill: bounded by
    # the worker's receive maximum (worker.max_inflight, default 1000).
    assert stats.duplicates <= 1000
