"""Micro-batching: exact (same forecasts as one window at a time) and bounded by max_delay_ms.

No test here measures time: the collector runs on a fake transport and a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from server_app.batching import collect_batch
from server_app.config import parse_config
from server_app.mqtt import InboundMessage
from server_app.service import InferenceService, Prediction, Request
from server_app.state import StateBuilder
from tests.support.configs import copy_model_repository
from tests.support.payloads import windows_from_sample


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    repository = copy_model_repository(tmp_path_factory.mktemp("models"))
    config = parse_config(
        f"""
models:
  lstm: {{repository: {repository / "lstm"}}}
  ann: {{repository: {repository / "ann"}}}
tenants:
  acme: {{models: [lstm, ann]}}
  beta: {{models: [ann]}}
worker: {{max_batch: 16}}
"""
    )
    return StateBuilder().build(config.policy, None)


def test_batched_forecasts_equal_one_window_at_a_time(state) -> None:  # type: ignore[no-untyped-def]
    service = InferenceService()
    rng = np.random.default_rng(5)
    requests = [
        Request(
            tenant=("acme", "beta")[i % 2],
            model=("lstm", "ann")[i % 3 % 2] if i % 2 == 0 else "ann",
            id=f"r{i}",
            windows=windows_from_sample(int(rng.integers(1, 40)), seed=i),  # > max_batch too: chunked
            normalized=bool(i % 5 == 0),
        )
        for i in range(30)
    ]
    batched = service.predict(state, requests)
    for request, outcome in zip(requests, batched, strict=True):
        assert isinstance(outcome, Prediction)
        one_by_one = [
            service.predict(state, [Request(request.tenant, request.model, "x", window[None], request.normalized)])[0]
            for window in request.windows
        ]
        singles = np.concatenate([o.forecasts for o in one_by_one if isinstance(o, Prediction)])
        assert outcome.forecasts.shape == (request.windows.shape[0], 1)
        np.testing.assert_allclose(outcome.forecasts, singles, rtol=0, atol=1e-5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    """Delivers scheduled messages as the fake clock passes their arrival times."""

    def __init__(self, clock: FakeClock, arrivals: list[float]) -> None:
        self.clock = clock
        self.arrivals = sorted(arrivals)
        self.buffer: list[InboundMessage] = []
        self.polls: list[float] = []

    def poll(self, timeout: float) -> None:
        self.polls.append(timeout)
        # Like a socket wait: return at once if data is there, else at the next arrival or
        # when the timeout runs out.
        if not any(t <= self.clock.now for t in self.arrivals):
            upcoming = [t for t in self.arrivals if t > self.clock.now]
            self.clock.now = min([self.clock.now + timeout, *upcoming[:1]])
        due = [t for t in self.arrivals if t <= self.clock.now]
        self.arrivals = [t for t in self.arrivals if t > self.clock.now]
        self.buffer += [InboundMessage("t", b"", i, 1, None, None, t) for i, t in enumerate(due)]

    def take(self, limit: int) -> list[InboundMessage]:
        taken, self.buffer = self.buffer[:limit], self.buffer[limit:]
        return taken

    @property
    def buffered(self) -> int:
        return len(self.buffer)


def test_max_delay_zero_never_waits() -> None:
    clock = FakeClock()
    source = FakeSource(clock, [100.0, 100.002, 100.004])
    batch = collect_batch(source, max_batch=64, max_delay_s=0.0, clock=clock)
    assert [m.received_at for m in batch] == [100.0]
    assert len(source.polls) == 1  # one look at the socket, no waiting for more


def test_max_delay_bounds_the_wait_for_a_batch_to_fill() -> None:
    clock = FakeClock()
    arrivals = [100.0 + i * 0.0004 for i in range(20)]  # one every 0.4 ms
    source = FakeSource(clock, arrivals)
    batch = collect_batch(source, max_batch=64, max_delay_s=0.002, clock=clock)
    first = batch[0].received_at
    assert clock.now - first <= 0.002 + 1e-9  # never waits past first arrival + max_delay
    assert all(m.received_at <= first + 0.002 for m in batch)
    assert len(batch) == 6  # arrivals at 0, 0.4, ..., 2.0 ms


def test_a_full_batch_stops_waiting() -> None:
    clock = FakeClock()
    source = FakeSource(clock, [100.0 + i * 0.0001 for i in range(10)])
    batch = collect_batch(source, max_batch=4, max_delay_s=1.0, clock=clock)
    assert len(batch) == 4
    assert clock.now < 100.001  # did not sit out the 1 s delay


def test_idle_poll_when_nothing_is_buffered() -> None:
    clock = FakeClock()
    source = FakeSource(clock, [])
    assert collect_batch(source, max_batch=8, max_delay_s=0.001, clock=clock) == []
    assert source.polls == [0.05]
