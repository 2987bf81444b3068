"""Micro-batches: what the serving loop takes from the inbox on each turn."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from server_app.config import WorkerConfig
from server_app.inbox import FairInbox
from server_app.mqtt import InboundMessage, MqttTransport

IDLE_POLL_S = 0.05  # how long the serving loop waits on the socket when it has nothing to do


class BatchSource(Protocol):
    """What collect_batch needs of a transport (a fake in tests)."""

    def poll(self, timeout: float) -> None: ...

    def take(self, limit: int) -> list[InboundMessage]: ...

    @property
    def buffered(self) -> int: ...


def collect_batch(
    source: BatchSource, max_batch: int, max_delay_s: float, clock: Callable[[], float] = time.monotonic
) -> list[InboundMessage]:
    """One micro-batch: what has arrived (up to max_batch); with max_delay_s > 0, keep reading
    until the batch is full or max_delay_s has passed since its first message arrived."""
    source.poll(0.0 if source.buffered else IDLE_POLL_S)
    batch = source.take(max_batch)
    if not batch or max_delay_s <= 0:
        return batch
    deadline = batch[0].received_at + max_delay_s
    while len(batch) < max_batch:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        source.poll(remaining)
        batch += source.take(max_batch - len(batch))
    return batch


class InboxSource:
    """What collect_batch reads: the transport's socket, and the fair inbox it fills."""

    def __init__(self, transport: MqttTransport, inbox: FairInbox, max_batch_bytes: int) -> None:
        self.transport = transport
        self.inbox = inbox
        self.max_batch_bytes = max_batch_bytes

    def poll(self, timeout: float) -> None:
        self.transport.poll(timeout)

    def take(self, limit: int) -> list[InboundMessage]:
        return self.inbox.take(limit, self.max_batch_bytes)

    @property
    def buffered(self) -> int:
        return len(self.inbox)


def inbox_limits(limits: WorkerConfig) -> dict[str, Any]:
    return {
        "max_messages": limits.queue_size,
        "max_bytes": limits.queue_bytes,
        "latency_budget_s": limits.latency_budget_ms / 1000.0,
    }
