"""Per-tenant token buckets and redelivery de-duplication: bounded, clock injected for tests."""

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

    def allow(self, tenant: str, rate: float | None, burst: int | None, cost: int) -> bool:
        if rate is None:
            return True
        capacity = float(burst) if burst is not None else max(rate, 1.0)
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


class Deduplicator:
    """Remembers (tenant, request id) pairs for `window_s`, at most `max_entries` of them.

    With QoS 1 the broker redelivers a request whose acknowledgement it did not see; this
    keeps such a retransmission from being answered twice by the same worker.
    """

    def __init__(self, window_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._clock = clock
        # Keys are hashes of (tenant, id): a third of the memory of the tuples; a 64-bit
        # collision inside the window would drop one answer, odds ~ n^2 / 2^65.
        self._seen: OrderedDict[int, float] = OrderedDict()

    def first_time(self, tenant: str, request_id: str) -> bool:
        """True the first time a key is seen within the window; records it."""
        if self._window_s <= 0 or not request_id:
            return True
        now = self._clock()
        seen = self._seen
        while seen:
            oldest_at = next(iter(seen.values()))
            if now - oldest_at <= self._window_s and len(seen) < self._max_entries:
                break
            seen.popitem(last=False)
        key = hash((tenant, request_id))
        if key in seen:
            return False
        seen[key] = now
        return True

    def __len__(self) -> int:
        return len(self._seen)
