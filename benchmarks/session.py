"""A session: the steps of a benchmark block run through one load generator against one target
(echo or worker), with CPU accounting, waits for a quiet machine, retries of disturbed steps, and
the sweep of one payload to one model in one encoding (rates stepped up, the gap bisected, half
rate, the plan's fixed rates not run yet, closed loop)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from benchmarks.cpu_meter import CpuMeter
from benchmarks.plan import PayloadPlan, Plan, Variant, generator_kept_up, missed_on_latency_only, sustained
from benchmarks.processes import LineProcess

__all__ = ["Session"]


def wait_quiet(meter: CpuMeter, plan: Plan) -> tuple[float, float]:
    """Wait (at most `plan.quiet_wait_s`) until processes `meter` does not name use less than
    `plan.quiet_cores`; (waited s, their last load)."""
    started = time.perf_counter()
    others = meter.others_now(0.3)
    while others > plan.quiet_cores and time.perf_counter() - started < plan.quiet_wait_s:
        others = meter.others_now(0.5)
    return time.perf_counter() - started, others


class Session:
    """Runs steps through one load generator against one target, with CPU accounting."""

    def __init__(self, loadgen: LineProcess, meter: CpuMeter, plan: Plan, rss_pid: int) -> None:
        self.loadgen, self.meter, self.plan = loadgen, meter, plan
        self._rss_proc = psutil.Process(rss_pid)
        self.rss_peak_mb = 0.0

    def step(self, phase: str, variant: Variant, **offered: float) -> dict[str, Any]:
        command = {
            "cmd": "step",
            "mode": "open" if "rate" in offered else "closed",
            "windows": variant.payload.windows,
            "model": variant.model,
            "encoding": variant.encoding,
            "duration": self.plan.step_s,
            "drain": self.plan.drain_s,
            "tick_ms": self.plan.tick_ms,
            **offered,
        }
        waited, others_before = self.wait_quiet()
        usage: dict[str, Any] = {}
        with self.meter.measure(usage):
            result = self.loadgen.command(command, timeout=self.plan.step_s + self.plan.drain_s + 60)
        result.update(usage)
        result["phase"] = phase
        result["waited_for_quiet_s"] = round(waited, 1)
        result["others_before"] = round(others_before, 2)
        result["disturbed"] = usage["cpu_cores"]["others"] > self.plan.quiet_cores
        if result["mode"] == "open":
            result["sustained"] = sustained(result, self.plan)
            result["generator_kept_up"] = generator_kept_up(result, self.plan)
        with contextlib.suppress(psutil.Error):
            rss = self._rss_proc.memory_info().rss / 2**20
            result["target_rss_mb"] = round(rss, 1)
            self.rss_peak_mb = max(self.rss_peak_mb, rss)
        if result["unanswered"] or (result["mode"] == "open" and not result["sustained"]):
            settled = self.loadgen.command({"cmd": "settle", "timeout": self.plan.settle_s}, self.plan.settle_s + 30)
            result["late_answers"] = settled["late_answers"]
        _progress(result)
        return result

    def wait_quiet(self) -> tuple[float, float]:
        """Wait (bounded) until other processes use less than `quiet_cores`; (waited s, their last load)."""
        return wait_quiet(self.meter, self.plan)

    def open_step(self, phase: str, variant: Variant, rate: float, steps: list[dict[str, Any]]) -> bool:
        """One open-loop step; True if sustained. A failed step runs again when it was disturbed by other
        processes (at most `disturbed_retries` times) or missed on latency alone (once); the last run counts."""
        step = self.step(phase, variant, rate=rate)
        steps.append(step)
        latency_retried = False
        disturbed_retries = 0
        while not step["sustained"]:
            if step["disturbed"] and disturbed_retries < self.plan.disturbed_retries:
                disturbed_retries += 1
            elif self.plan.retry_latency_misses and not latency_retried and missed_on_latency_only(step, self.plan):
                latency_retried = True
            else:
                break
            step["superseded"] = True
            attempt = step.get("attempt", 1) + 1
            step = self.step(phase, variant, rate=rate)
            step["attempt"] = attempt
            steps.append(step)
        return bool(step["sustained"])

    def closed_step(self, variant: Variant, concurrency: int, steps: list[dict[str, Any]]) -> None:
        step = self.step("closed", variant, concurrency=concurrency)
        steps.append(step)
        for _ in range(self.plan.disturbed_retries):
            if not step["disturbed"]:
                break
            step["superseded"] = True
            attempt = step.get("attempt", 1) + 1
            step = self.step("closed", variant, concurrency=concurrency)
            step["attempt"] = attempt
            steps.append(step)

    def sweep(self, variant: Variant | PayloadPlan) -> dict[str, Any]:
        if isinstance(variant, PayloadPlan):  # as before: the first model, JSON
            variant = Variant(variant, self.plan.models[0], self.plan.encodings[0])
        payload = variant.payload
        steps: list[dict[str, Any]] = []
        best: float = 0.0
        failed: float | None = None
        generator_limited = False
        for rate in payload.rates:
            ok = self.open_step("sweep", variant, rate, steps)
            if not steps[-1]["generator_kept_up"]:
                generator_limited = True
            if ok:
                best = rate
            else:
                failed = rate
                break
        if failed is not None and best > 0:
            low, high = best, failed
            for _ in range(self.plan.refine_steps):
                middle = round((low + high) / 2 / 50) * 50
                if middle <= low or middle >= high:
                    break
                if self.open_step("refine", variant, middle, steps):
                    low = best = middle
                else:
                    high = middle
        half: dict[str, Any] | None = None
        if self.plan.half_rate_step and best > 0:
            self.open_step("half", variant, round(best / 2), steps)
            half = steps[-1]
        for rate in self.plan.fixed_rates:  # e.g. p99 at 1,000/s, also where the sweep stopped below it
            if not any(s["mode"] == "open" and s["rate"] == rate and not s.get("superseded") for s in steps):
                self.open_step("fixed", variant, rate, steps)
        for concurrency in payload.concurrencies:
            self.closed_step(variant, concurrency, steps)
        peak = max((s["throughput"] for s in steps if not s.get("superseded")), default=0.0)
        return {
            "name": payload.name,
            "windows": payload.windows,
            "model": variant.model,
            "encoding": variant.encoding,
            "steps": steps,
            "max_sustainable_rate": best,
            "saturated": failed is not None,
            "generator_limited": generator_limited,
            "peak_throughput": peak,
            "peak_forecasts_per_s": peak * payload.windows,
            "max_sustainable_forecasts_per_s": best * payload.windows,
            "half_rate": half,
        }


def _progress(step: dict[str, Any]) -> None:
    offered = f"rate {step['rate']:>7.0f}/s" if step["mode"] == "open" else f"conc {step['concurrency']:>5d}  "
    lat = step["latency_ms"]
    p50 = f"{lat['p50']:.2f}" if lat["p50"] is not None else "-"
    p99 = f"{lat['p99']:.2f}" if lat["p99"] is not None else "-"
    flag = "" if step["mode"] == "closed" else (" ok" if step["sustained"] else " NOT SUSTAINED")
    print(
        f"    {step['phase']:<6} {offered} w={step['windows']:<2} {step.get('model')}/{step.get('encoding')} "
        f"sent {step['sent']:>6} ans {step['answered']:>6} "
        f"err {step['errors']} lost {step['unanswered']} thr {step['throughput']:>8.0f}/s p50 {p50} p99 {p99} ms"
        f" cpu {step.get('cpu_cores')}{flag}",
        flush=True,
    )
