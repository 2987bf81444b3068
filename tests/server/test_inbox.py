"""The fair inbox: round-robin between tenants, bounded in messages and bytes, shed on the
latency budget. No clocks: arrival times and service times are given."""

from __future__ import annotations

import itertools

from server_app.inbox import FairInbox
from server_app.mqtt import InboundMessage

_mids = itertools.count(1)


def msg(tenant: str, size: int = 100, at: float = 0.0) -> InboundMessage:
    return InboundMessage(f"tenants/{tenant}/models/m/requests", b"x" * size, next(_mids), 1, None, None, at)


def inbox(**limits: float) -> FairInbox:
    defaults: dict[str, float] = {"max_messages": 1000, "max_bytes": 10**9, "latency_budget_s": 10.0}
    defaults.update(limits)
    return FairInbox(
        max_messages=int(defaults["max_messages"]),
        max_bytes=int(defaults["max_bytes"]),
        latency_budget_s=defaults["latency_budget_s"],
    )


def tenants(batch: list[InboundMessage]) -> list[str]:
    return [m.topic.split("/")[1] for m in batch]


def test_a_tenants_backlog_does_not_sit_in_front_of_another_tenant() -> None:
    box = inbox()
    for _ in range(100):
        assert box.offer(msg("flood")) == []
    box.offer(msg("quiet"))
    assert tenants(box.take(2, 10**9)) == ["flood", "quiet"]
    assert len(box) == 99


def test_round_robin_one_message_per_tenant_per_turn() -> None:
    box = inbox()
    for name in ("a", "a", "a", "b", "c", "c"):
        box.offer(msg(name))
    assert tenants(box.take(10, 10**9)) == ["a", "b", "c", "a", "c", "a"]


def test_batches_are_bounded_in_bytes_but_take_at_least_one_message() -> None:
    box = inbox()
    box.offer(msg("a", size=5000))
    box.offer(msg("b", size=10))
    assert tenants(box.take(10, 1000)) == ["a"]  # larger than the budget alone: still served
    assert tenants(box.take(10, 1000)) == ["b"]


def test_over_the_byte_bound_the_heaviest_tenant_is_shed_not_the_newcomer() -> None:
    box = inbox(max_bytes=1000)
    for _ in range(9):
        box.offer(msg("flood", size=100))
    shed = box.offer(msg("quiet", size=200))
    assert tenants(shed) == ["flood"] and box.bytes <= 1000
    shed = box.offer(msg("flood", size=100))
    assert tenants(shed) == ["flood"]  # the flooder's own newest message
    assert sorted(set(tenants(box.take(100, 10**9)))) == ["flood", "quiet"]


def test_over_the_message_bound_the_longest_queue_is_shed() -> None:
    box = inbox(max_messages=3)
    for name in ("a", "a", "a"):
        assert box.offer(msg(name)) == []
    assert tenants(box.offer(msg("b"))) == ["a"]
    assert len(box) == 3


def test_expected_wait_over_the_budget_sheds_at_once() -> None:
    box = inbox(latency_budget_s=1.0)
    for _ in range(3):
        box.served(1000, 0.01)  # measured: 10 us per byte -> 100 messages of 1000 bytes = 1 s
    shed = [s for _ in range(150) for s in box.offer(msg("flood", size=1000))]
    assert len(shed) == 50 and box.expected_wait_s <= 1.0
    assert box.offer(msg("quiet", size=1000)) and tenants(box.take(200, 10**9)).count("quiet") == 1


def test_a_backlog_the_worker_clears_within_the_budget_is_kept() -> None:
    box = inbox(latency_budget_s=2.0, max_messages=10_000)
    for _ in range(3):
        box.served(100_000, 0.02)  # 0.2 us per byte: 6,000 requests of 200 bytes = 0.24 s
    assert all(box.offer(msg("t", size=200)) == [] for _ in range(6000))
    assert len(box) == 6000


def test_messages_that_waited_past_the_budget_are_split_off_when_taken() -> None:
    box = inbox(latency_budget_s=1.0)
    box.offer(msg("a", at=10.0))
    box.offer(msg("b", at=11.5))
    serve, late = box.expired(box.take(10, 10**9), now=12.0)
    assert tenants(serve) == ["b"] and tenants(late) == ["a"]


def test_one_stalled_batch_does_not_make_the_inbox_shed() -> None:
    """A cold first invoke, an import or a GC pause is one slow batch, not the service time."""
    box = inbox(latency_budget_s=1.0)
    box.served(170, 1.5)  # 9 ms per byte: three such requests would "wait" 4.5 s
    assert all(box.offer(msg("t", size=170)) == [] for _ in range(3))  # not measured well enough yet
    for _ in range(5):
        box.served(170, 0.0005)
    box.served(170, 2.0)  # a second stall, among fast batches: left out
    assert box.expected_wait_s < 0.01
    assert all(box.offer(msg("t", size=170)) == [] for _ in range(50))


def test_only_full_batches_measure_the_service_time() -> None:
    """A batch of one request pays a batch's fixed cost for a few hundred bytes: measured on such
    batches, a backlog served in full batches would look ten times slower than it is."""
    box = inbox(latency_budget_s=1.0, max_messages=10_000)
    for _ in range(5):
        box.served(300, 0.003, full=False)  # 10 us per byte
    assert box.expected_wait_s == 0.0
    assert all(box.offer(msg("t", size=300)) == [] for _ in range(2000))  # 600 KB: would "wait" 6 s
