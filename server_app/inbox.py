"""The worker's inbound queue: fair between tenants, bounded in bytes, shed on a latency budget.

The broker hands a worker every request it may (MQTT 5 Receive Maximum, default 65535), so
no backlog waits at the broker where the worker cannot see it (and where Mosquitto drops
silently past its queue limits). This queue then decides, per message:

- **Fairness.** One FIFO per tenant; batches take round-robin, one message per tenant per
  turn, so one tenant's backlog never sits in front of another tenant's requests.
- **Memory.** At most `max_bytes` of payload and `max_messages` messages are queued; beyond,
  the newest message of the tenant holding the most bytes is shed (often the one arriving).
- **Latency budget.** The expected wait of a new message (bytes queued x service time per
  byte, measured on full batches) above the budget sheds the heaviest tenant's newest message at once; a
  message that nevertheless waited longer than the budget is shed when taken (Triton's
  queue policy). A backlog the worker clears within the budget is served, not shed.

Shed messages are returned to the caller, which answers them `overloaded`. Serving thread only.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from contract import topics
from server_app.mqtt import InboundMessage

KEY_CACHE_SIZE = 1024  # topics whose fairness key is remembered (cleared when full: topics are client-chosen)
KEY_CACHE_TOPIC_MAX = 256  # characters: longer topics are parsed every time (bounded memory)
RECENT_BATCHES = 16  # the service time per byte is measured over these
MIN_BATCHES = 3  # batches measured before the expected wait counts
OUTLIER_FACTOR = 4.0  # batches slower per byte than this x the median are left out (cold starts, GC, imports)


def tenant_key(topic: str) -> str:
    """The fairness key of a message: its tenant, from the topic (tutorial queues: the topic)."""
    return topics.tenant_of_topic(topic) or topic


@dataclass(slots=True)
class _TenantQueue:
    messages: deque[InboundMessage]
    size: int = 0


class FairInbox:
    def __init__(
        self,
        *,
        max_messages: int,
        max_bytes: int,
        latency_budget_s: float,
        key: Callable[[str], str] = tenant_key,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.latency_budget_s = latency_budget_s
        self._key = key
        self._keys: dict[str, str] = {}  # topic -> key: one dict lookup per message, not a parse
        self._queues: OrderedDict[str, _TenantQueue] = OrderedDict()  # round-robin order
        self._count = 0
        self._bytes = 0
        # Service time per payload byte over the recent batches: a ratio of sums (so that many
        # small batches do not dwarf the large ones), leaving out the outliers.
        self._recent: deque[tuple[float, int]] = deque(maxlen=RECENT_BATCHES)
        self._seconds_per_byte = 0.0

    def configure(self, *, max_messages: int, max_bytes: int, latency_budget_s: float) -> None:
        """Reloaded limits apply to the next arrivals; nothing queued is shed for them."""
        self.max_messages, self.max_bytes, self.latency_budget_s = max_messages, max_bytes, latency_budget_s

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def expected_wait_s(self) -> float:
        return self._bytes * self._seconds_per_byte  # 0 until measured: then only the bounds apply

    def offer(self, message: InboundMessage) -> list[InboundMessage]:
        """Queue a message; return what must be shed to stay within bounds (maybe itself)."""
        topic = message.topic
        key = self._keys.get(topic)
        if key is None:
            key = self._key(topic)
            if len(topic) <= KEY_CACHE_TOPIC_MAX:
                if len(self._keys) >= KEY_CACHE_SIZE:
                    self._keys.clear()
                self._keys[topic] = key
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _TenantQueue(deque())
        size = len(message.payload)
        queue.messages.append(message)
        queue.size += size
        self._count += 1
        self._bytes += size
        shed: list[InboundMessage] = []
        while self._count > 1 and self._over_limits():
            shed.append(self._shed_heaviest())
        return shed

    def _over_limits(self) -> bool:
        return (
            self._count > self.max_messages
            or self._bytes > self.max_bytes
            or self._bytes * self._seconds_per_byte > self.latency_budget_s  # expected_wait_s, inlined
        )

    def _shed_heaviest(self) -> InboundMessage:
        key = max(self._queues, key=lambda k: self._queues[k].size)
        queue = self._queues[key]
        message = queue.messages.pop()
        self._forget(key, queue, message)
        return message

    def _forget(self, key: str, queue: _TenantQueue, message: InboundMessage) -> None:
        queue.size -= len(message.payload)
        self._count -= 1
        self._bytes -= len(message.payload)
        if not queue.messages:
            del self._queues[key]

    def take(self, max_messages: int, max_bytes: int) -> list[InboundMessage]:
        """Up to `max_messages` / `max_bytes` (at least one message), round-robin over tenants."""
        if len(self._queues) == 1:
            return self._take_only_tenant(max_messages, max_bytes)
        batch: list[InboundMessage] = []
        taken_bytes = 0
        while self._queues and len(batch) < max_messages:
            key, queue = next(iter(self._queues.items()))
            message = queue.messages[0]
            if batch and taken_bytes + len(message.payload) > max_bytes:
                break
            queue.messages.popleft()
            self._forget(key, queue, message)
            if key in self._queues:
                self._queues.move_to_end(key)  # this tenant's next message waits for the others
            batch.append(message)
            taken_bytes += len(message.payload)
        return batch

    def _take_only_tenant(self, max_messages: int, max_bytes: int) -> list[InboundMessage]:
        """`take` when one tenant has messages queued: round-robin is FIFO, so its queue's head
        in one sweep (the common case of a single busy tenant, per message on the serving path)."""
        key, queue = next(iter(self._queues.items()))
        messages = queue.messages
        batch: list[InboundMessage] = []
        taken_bytes = 0
        while messages and len(batch) < max_messages:
            size = len(messages[0].payload)
            if batch and taken_bytes + size > max_bytes:
                break
            batch.append(messages.popleft())
            taken_bytes += size
        queue.size -= taken_bytes
        self._count -= len(batch)
        self._bytes -= taken_bytes
        if not messages:
            del self._queues[key]
        return batch

    def expired(self, batch: list[InboundMessage], now: float) -> tuple[list[InboundMessage], list[InboundMessage]]:
        """Split a taken batch into (to serve, waited longer than the budget)."""
        deadline = now - self.latency_budget_s
        late = [m for m in batch if m.received_at < deadline]
        if not late:
            return batch, []
        return [m for m in batch if m.received_at >= deadline], late

    def served(self, payload_bytes: int, seconds: float, *, full: bool = True) -> None:
        """Measured service time of a batch: the basis of the expected wait. Only `full` batches
        (as many messages or bytes as a batch may take) count: a backlog is served in full
        batches, and a batch of one message pays the fixed cost of a batch for few bytes (its
        time per byte overstates a backlog's by up to 10x)."""
        if payload_bytes <= 0 or not full:
            return
        self._recent.append((seconds, payload_bytes))
        if len(self._recent) < MIN_BATCHES:
            return
        per_byte = sorted(sec / size for sec, size in self._recent)
        limit = OUTLIER_FACTOR * per_byte[len(per_byte) // 2]
        kept = [(sec, size) for sec, size in self._recent if sec / size <= limit]
        self._seconds_per_byte = sum(sec for sec, _ in kept) / sum(size for _, size in kept)
