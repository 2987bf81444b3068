"""Token buckets and redelivery de-duplication, with an injected clock."""

from __future__ import annotations

from server_app.limits import AnsweredRequests, RateLimiter


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


def test_answered_requests_window_and_bound() -> None:
    clock = Clock()
    answered = AnsweredRequests(window_s=10, max_entries=3, clock=clock)
    assert not answered.answered("t/a", "1")
    answered.remember("t/a", "1")
    assert answered.answered("t/a", "1")
    assert not answered.answered("t/b", "1")  # keyed by request topic (tenant and model) too
    clock.now = 10
    assert answered.answered("t/a", "1")  # remembered for at least the window
    clock.now = 20
    assert not answered.answered("t/a", "1")  # and less than twice the window
    for i in range(10):
        answered.remember("t/a", f"x{i}")
    assert len(answered) <= 3
    assert answered.answered("t/a", "x9") and not answered.answered("t/a", "x0")
    answered.remember("t/a", "late")
    clock.now = 100  # idle for long: nothing of before is kept
    answered.remember("t/a", "new")
    assert len(answered) == 1 and not answered.answered("t/a", "late")
    off = AnsweredRequests(0, 10)
    off.remember("t/a", "1")
    assert not off.answered("t/a", "1")


def test_capacity_is_the_largest_message_a_limit_admits() -> None:
    assert RateLimiter.capacity(None, None) == float("inf")
    assert RateLimiter.capacity(100, None) == 100
    assert RateLimiter.capacity(0.5, None) == 1
    assert RateLimiter.capacity(100, 50) == 50
