"""The worker answers every inbound message exactly once; the only silent case is a broker
redelivery (DUP) of a request this process already answered. Unit level: the worker's
serving code on a recording transport (no broker), so each case is exact."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from server_app.config import parse_config
from server_app.mqtt import InboundMessage
from server_app.worker import Worker
from tests.support.configs import copy_model_repository
from tests.support.payloads import oip_request, windows_from_sample

WINDOW = windows_from_sample(1, seed=2)
TOPIC = "tenants/acme/models/lstm/requests"
_mids = itertools.count(1)


class RecordingTransport:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.acknowledged: list[int] = []
        self.cleared: list[str] = []

    def publish(self, topic: str, payload: bytes, *, ack: InboundMessage | None = None, **_: Any) -> None:
        self.published.append((topic, orjson.loads(payload)))

    def acknowledge(self, message: InboundMessage) -> None:
        self.acknowledged.append(message.mid)

    def clear_retained(self, topic: str) -> None:
        self.cleared.append(topic)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    repository = copy_model_repository(tmp_path / "models")
    config = parse_config(
        f"""
broker: {{host: 127.0.0.1, port: 1}}
models:
  lstm: {{repository: {repository / "lstm"}}}
  ann: {{repository: {repository / "ann"}}}
tenants:
  acme: {{models: [lstm, ann], rate_limit_per_s: 0.001, burst: 1}}
health: {{port: null}}
"""
    )
    worker = Worker(config, None, client_id="unit-worker")
    worker._reloader.poll_once()
    worker._current_state()
    worker.transport = worker._answers._transport = RecordingTransport()  # type: ignore[assignment]
    yield worker


def message(payload: bytes, *, topic: str = TOPIC, dup: bool = False, retain: bool = False) -> InboundMessage:
    return InboundMessage(topic, payload, next(_mids), 1, None, None, time.monotonic(), dup=dup, retain=retain)


def answers(worker: Worker) -> list[tuple[str, str | None, str]]:
    transport: RecordingTransport = worker.transport  # type: ignore[assignment]
    return [
        (topic, body.get("id"), body["parameters"]["code"] if "error" in body else "ok")
        for topic, body in transport.published
    ]


RESPONSES = "tenants/acme/models/lstm/responses"


def test_a_redelivery_of_an_answered_request_is_acknowledged_without_a_second_answer(worker: Worker) -> None:
    first, again = message(oip_request("r1", WINDOW)), message(oip_request("r1", WINDOW), dup=True)
    worker.handle_batch([first])
    worker.handle_batch([again])
    assert answers(worker) == [(RESPONSES, "r1", "ok")]
    assert worker.transport.acknowledged == [again.mid]  # type: ignore[attr-defined]


def test_a_redelivery_of_a_request_never_answered_here_is_answered(worker: Worker) -> None:
    worker.handle_batch([message(oip_request("r2", WINDOW), dup=True)])
    assert answers(worker) == [(RESPONSES, "r2", "ok")]


def test_a_redelivered_error_is_not_answered_twice(worker: Worker) -> None:
    worker.handle_batch([message(b'{"id": "bad-1", "inputs": 1e400}')])
    worker.handle_batch([message(b'{"id": "bad-1", "inputs": 1e400}', dup=True)])
    assert answers(worker) == [(RESPONSES, "bad-1", "bad_json")]


def test_the_same_id_without_dup_is_always_answered(worker: Worker) -> None:
    batch = [message(oip_request("same", WINDOW)) for _ in range(3)]
    batch.append(message(oip_request("same", WINDOW), topic="tenants/acme/models/ann/requests"))
    worker.handle_batch(batch[:2])
    worker.handle_batch(batch[2:])
    assert answers(worker) == [
        (RESPONSES, "same", "ok"),
        (RESPONSES, "same", "rate_limited"),
        (RESPONSES, "same", "rate_limited"),
        ("tenants/acme/models/ann/responses", "same", "rate_limited"),
    ]


def test_a_message_larger_than_the_burst_is_told_it_can_never_pass(worker: Worker) -> None:
    worker.handle_batch([message(oip_request("big", windows_from_sample(2, seed=1)))])
    transport: RecordingTransport = worker.transport  # type: ignore[assignment]
    [(_, body)] = transport.published
    assert body["parameters"]["code"] == "too_large"
    assert "burst of 1 windows" in body["error"]


def test_a_retained_request_is_refused_once_per_delivery_and_counted(worker: Worker) -> None:
    worker.handle_batch([message(oip_request("old", WINDOW), retain=True)])
    assert answers(worker) == [(RESPONSES, "old", "retained_request")]
    assert worker.metrics.retained._value.get() == 1
    assert worker.transport.cleared == [TOPIC]  # type: ignore[attr-defined]
    deletion = message(b"", retain=True)  # the broker echoes the clearing: acknowledged, not answered
    worker.handle_batch([deletion])
    assert len(answers(worker)) == 1 and worker.transport.acknowledged == [deletion.mid]  # type: ignore[attr-defined]


def test_a_request_that_waited_past_the_latency_budget_is_answered_overloaded(worker: Worker) -> None:
    stale = InboundMessage(TOPIC, oip_request("stale", WINDOW), next(_mids), 1, None, None, time.monotonic() - 60)
    worker.handle_batch([stale, message(oip_request("fresh", WINDOW))])
    assert sorted(answers(worker)) == [(RESPONSES, "fresh", "ok"), (RESPONSES, "stale", "overloaded")]


def test_answers_leave_in_the_order_requests_came_errors_included(worker: Worker) -> None:
    """Tutorial clients match answers by order (their answers carry no id)."""
    short = windows_from_sample(1, length=5, seed=1)
    batch = [message(oip_request("a", WINDOW)), message(oip_request("b", short)), message(b'{"id": "c", "inputs": 1'),
             message(oip_request("d", WINDOW))]
    worker.handle_batch(batch)
    assert [(request_id, code) for _, request_id, code in answers(worker)] == [
        ("a", "ok"), ("b", "invalid_window"), ("c", "bad_json"), ("d", "rate_limited")  # burst 1
    ]
