"""What a benchmark run does (QoS levels, payloads, the models addressed and the payload
encodings, offered rates and concurrencies, step timing, quiet-machine rules) and the verdicts
on an open-loop step against it: sustained, missed on latency alone, generator kept up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENCODINGS", "PayloadPlan", "Plan", "Variant", "generator_kept_up", "missed_on_latency_only", "sustained"]

ENCODINGS = ("json", "binary")  # binary: the Open Inference Protocol's binary tensor extension (contract.oip_binary)


@dataclass
class PayloadPlan:
    name: str
    windows: int
    rates: list[float]
    concurrencies: list[int]
    models: list[str] | None = None  # models the worker is swept with for this payload (None: all of Plan.models)
    encodings: list[str] | None = None  # encodings of this payload (None: all of Plan.encodings)


@dataclass(frozen=True)
class Variant:
    """One sweep of a block: a payload, addressed to a model, in an encoding."""

    payload: PayloadPlan
    model: str
    encoding: str


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
    models: list[str] = field(default_factory=lambda: ["lstm"])  # models the requests address (worker loads lstm, ann)
    encodings: list[str] = field(default_factory=lambda: ["json"])  # payload encodings (ENCODINGS)
    variant_qos: list[int] | None = None  # QoS levels that run every model and encoding (None: all); others the first
    fixed_rates: list[float] = field(default_factory=list)  # open-loop rates every sweep runs (full, quick: 1,000/s)
    model_cost: bool = True  # measure each model's compute per message (model_cost.py) before and after the blocks
    model_cost_rounds: int = 5

    def variants(self, target: str, qos: int) -> list[Variant]:
        """The sweeps of one block, payload by payload. The echo answers every model alike, so it is
        swept once per payload and encoding (addressed to the first model); the worker per model."""
        every = self.variant_qos is None or qos in self.variant_qos
        found = []
        for payload in self.payloads:
            models = [m for m in self.models if payload.models is None or m in payload.models] or self.models[:1]
            encodings = [e for e in self.encodings if payload.encodings is None or e in payload.encodings]
            encodings = encodings or self.encodings[:1]
            if target == "echo" or not every:
                models = models[:1]
            if not every:
                encodings = encodings[:1]
            found += [Variant(payload, model, encoding) for model in models for encoding in encodings]
        return found

    @staticmethod
    def full() -> Plan:
        return Plan(
            qos_levels=[1, 0],
            payloads=[
                PayloadPlan("single", 1, [1000, 2000, 4000, 6000, 8000, 12000, 16000], [1, 8, 64]),
                PayloadPlan("batched", 64, [250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000], [8, 32]),
            ],
            models=["lstm", "ann"],
            encodings=["json", "binary"],
            variant_qos=[1],
            fixed_rates=[1000.0],
        )

    @staticmethod
    def quick() -> Plan:
        return Plan(
            qos_levels=[1],
            payloads=[
                PayloadPlan("single", 1, [1000, 2000, 4000, 8000], [8], models=["lstm"], encodings=["json"]),
                PayloadPlan("batched", 64, [1000, 2000, 4000, 8000], [8]),
            ],
            models=["lstm", "ann"],
            encodings=["json", "binary"],
            fixed_rates=[1000.0],
            model_cost_rounds=3,
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
