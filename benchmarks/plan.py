"""What a benchmark run does (QoS levels, payloads, offered rates and concurrencies, step timing,
quiet-machine rules) and the verdicts on an open-loop step against it: sustained, missed on
latency alone, generator kept up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PayloadPlan", "Plan", "generator_kept_up", "missed_on_latency_only", "sustained"]


@dataclass
class PayloadPlan:
    name: str
    windows: int
    rates: list[float]
    concurrencies: list[int]


@dataclass
class Plan:
    qos_levels: list[int]
    payloads: list[PayloadPlan]
    targets: list[str] = field(default_factory=lambda: ["echo", "worker"])
    step_s: float = 2.0
    drain_s: float = 5.0
    settle_s: float = 20.0
    refine_steps: int = 2
    half_rate_step: bool = True
    p99_limit_ms: float = 50.0
    tick_ms: float = 1.0  # open loop: requests due are released on this tick (0: each at its own time)
    retry_latency_misses: bool = True  # a step that fails on p99 alone runs once more (stalls of a shared VM)
    quiet_cores: float = 0.3  # other processes above this many cores: wait before a step, flag it "disturbed"
    quiet_wait_s: float = 10.0  # longest wait for the machine to go quiet before a step
    disturbed_retries: int = 1  # a failed (open) or any (closed) disturbed step is run again, at most this often
    min_throughput_ratio: float = 0.95
    startup_runs: int = 3
    worker_overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, e.g. worker.max_delay_ms

    @staticmethod
    def full() -> Plan:
        return Plan(
            qos_levels=[1, 0],
            payloads=[
                PayloadPlan("single", 1, [1000, 2000, 4000, 6000, 8000, 12000, 16000], [1, 8, 64]),
                PayloadPlan("batched", 64, [250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000], [8, 32]),
            ],
        )

    @staticmethod
    def quick() -> Plan:
        return Plan(
            qos_levels=[1],
            payloads=[
                PayloadPlan("single", 1, [500, 1000, 2000, 4000, 8000], [8]),
                PayloadPlan("batched", 64, [250, 1000, 2000, 4000], [8]),
            ],
            step_s=1.0,
            drain_s=3.0,
            settle_s=10.0,
            refine_steps=0,
            startup_runs=1,
            quiet_wait_s=3.0,
            disturbed_retries=0,
            retry_latency_misses=False,
        )


def sustained(step: dict[str, Any], plan: Plan) -> bool:
    rate = step.get("rate")
    if rate is None:
        return False
    p99 = step["latency_ms"]["p99"]
    return bool(
        step["errors"] == 0
        and step["unanswered"] == 0
        and step["throughput"] >= plan.min_throughput_ratio * rate
        and p99 is not None
        and p99 <= plan.p99_limit_ms
    )


def missed_on_latency_only(step: dict[str, Any], plan: Plan) -> bool:
    rate = step.get("rate")
    return bool(
        rate is not None
        and not step["sustained"]
        and step["errors"] == 0
        and step["unanswered"] == 0
        and step["throughput"] >= plan.min_throughput_ratio * rate
    )


def generator_kept_up(step: dict[str, Any], plan: Plan) -> bool:
    rate = step.get("rate")
    return rate is None or step["send_rate"] >= plan.min_throughput_ratio * rate
