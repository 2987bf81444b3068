"""Per-tenant token buckets and the memory of answered requests: bounded, clock injected for tests."""

from __future__ import annotations

import time
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
    """(request topic, id) of requests this process answered in the last `window_s` seconds
    (remembered for at least `window_s` and less than twice that), at most `max_entries`.

    Used for one case only: the broker redelivering (MQTT DUP flag) a QoS 1 request whose
    acknowledgement it did not see, although this process answered it. Any request that is
    not such a redelivery is answered, whatever its id.

    Two generations of hashes: the current one, and the previous one, dropped when the current
    one is `window_s` old (or holds half of `max_entries`). A set of ints costs ~60 bytes an
    entry against ~150 for an ordered dict of timestamps, and nothing is scanned per call.
    """

    def __init__(self, window_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._clock = clock
        # Keys are hashes of (topic, id): a fraction of the memory of the tuples; a 64-bit
        # collision inside the window would drop one redelivered answer, odds ~ n^2 / 2^65.
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._current_since = clock()

    def configure(self, window_s: float, max_entries: int) -> None:
        """Apply reloaded settings; they bound the generations from the next `remember` on."""
        self._window_s = window_s
        self._max_entries = max_entries

    def _rotate(self, now: float) -> None:
        if now - self._current_since >= 2 * self._window_s or self._max_entries < 2:
            self._previous = set()  # older than the window (or no room for two generations)
        else:
            self._previous = self._current
        self._current = set()
        self._current_since = now

    def remember(self, topic: str, request_id: str) -> None:
        if self._window_s <= 0:
            return
        now = self._clock()
        if now - self._current_since >= self._window_s or len(self._current) >= max(1, self._max_entries // 2):
            self._rotate(now)
        self._current.add(hash((topic, request_id)))

    def answered(self, topic: str, request_id: str) -> bool:
        if self._window_s <= 0:
            return False
        now = self._clock()
        if now - self._current_since >= self._window_s:
            self._rotate(now)
        key = hash((topic, request_id))
        return key in self._current or key in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
