"""Per-tenant token buckets and the memory of answered requests: bounded, clock injected for tests."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    rate: float
    burst: float
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per tenant, counted in windows (forecasts), refilled at `rate` per second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @staticmethod
    def capacity(rate: float | None, burst: int | None) -> float:
        """The most windows one message may carry under this limit (inf: no limit)."""
        if rate is None:
            return float("inf")
        return float(burst) if burst is not None else max(rate, 1.0)

    def allow(self, tenant: str, rate: float | None, burst: int | None, cost: int) -> bool:
        if rate is None:
            return True
        capacity = self.capacity(rate, burst)
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None or bucket.rate != rate or bucket.burst != capacity:
            bucket = self._buckets[tenant] = _Bucket(rate, capacity, capacity, now)
        bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.updated) * bucket.rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def forget_except(self, tenants: set[str]) -> None:
        """Drop buckets of tenants removed by a config reload (keeps memory bounded)."""
        for tenant in list(self._buckets):
            if tenant not in tenants:
                del self._buckets[tenant]


class AnsweredRequests:
    """(request topic, id) of requests this process answered in the last `window_s` seconds,
    at most `max_entries` of them.

    Used for one case only: the broker redelivering (MQTT DUP flag) a QoS 1 request whose
    acknowledgement it did not see, although this process answered it. Any request that is
    not such a redelivery is answered, whatever its id.
    """

    def __init__(self, window_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._clock = clock
        # Keys are hashes of (topic, id): a third of the memory of the tuples; a 64-bit
        # collision inside the window would drop one redelivered answer, odds ~ n^2 / 2^65.
        self._answered: OrderedDict[int, float] = OrderedDict()

    def configure(self, window_s: float, max_entries: int) -> None:
        """Apply reloaded settings; entries beyond the new bounds go at the next `remember`."""
        self._window_s = window_s
        self._max_entries = max_entries

    def remember(self, topic: str, request_id: str) -> None:
        if self._window_s <= 0:
            return
        now = self._clock()
        answered = self._answered
        while answered:
            oldest_at = next(iter(answered.values()))
            if now - oldest_at <= self._window_s and len(answered) < self._max_entries:
                break
            answered.popitem(last=False)
        key = hash((topic, request_id))
        if key in answered:  # answered again (rare): it moves to the end, as the newest
            del answered[key]
        answered[key] = now

    def answered(self, topic: str, request_id: str) -> bool:
        at = self._answered.get(hash((topic, request_id)))
        return at is not None and self._clock() - at <= self._window_s

    def __len__(self) -> int:
        return len(self._answered)
