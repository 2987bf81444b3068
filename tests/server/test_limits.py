"""Token buckets and redelivery de-duplication, with an injected clock."""

from __future__ import annotations

from server_app.limits import Deduplicator, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert all(limiter.allow("a", rate=10, burst=None, cost=1) for _ in range(10))
    assert not limiter.allow("a", rate=10, burst=None, cost=1)
    assert limiter.allow("b", rate=10, burst=None, cost=1)  # buckets are per tenant
    clock.now = 0.5
    assert sum(limiter.allow("a", rate=10, burst=None, cost=1) for _ in range(10)) == 5
    assert limiter.allow("a", rate=None, burst=None, cost=10**9)  # no limit configured


def test_cost_counts_windows_and_burst_caps() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert not limiter.allow("a", rate=100, burst=50, cost=64)
    assert limiter.allow("a", rate=100, burst=50, cost=50)
    clock.now = 100.0
    assert not limiter.allow("a", rate=100, burst=50, cost=51)


def test_dedup_window_and_bound() -> None:
    clock = Clock()
    dedup = Deduplicator(window_s=10, max_entries=3, clock=clock)
    assert dedup.first_time("a", "1")
    assert not dedup.first_time("a", "1")
    assert dedup.first_time("b", "1")  # keyed by tenant too
    clock.now = 11
    assert dedup.first_time("a", "1")  # expired
    for i in range(10):
        dedup.first_time("a", f"x{i}")
    assert len(dedup) <= 3
    assert Deduplicator(0, 10).first_time("a", "1") and Deduplicator(0, 10).first_time("a", "1")
