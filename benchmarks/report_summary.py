"""The benchmark's summary: ours vs echo per QoS and payload, the worker's resources, and the
targets (floors of issue #7, aims of DESIGN.md) with pass/fail."""

from __future__ import annotations

from typing import Any

__all__ = ["find_payload", "summarize"]

# The floors of issue #7 (2 cores, Mosquitto, QoS 1) and the aims of DESIGN.md "Measuring".
SINGLE_RATIO_FLOOR = 0.70
SINGLE_RATIO_AIM = 0.90
BATCHED_FORECASTS_FLOOR = 100_000
BATCHED_RATIO_AIM = 0.80
P99_HALF_RATE_FLOOR_MS = 10.0
P99_AT_1000_AIM_MS = 2.0
RSS_FLOOR_MB = 150.0
READY_FLOOR_S = 2.0


def find_payload(report: dict[str, Any], target: str, qos: int, name: str) -> dict[str, Any] | None:
    for block in report.get("blocks", []):
        if block["target"] == target and block["qos"] == qos:
            for payload in block.get("payloads", []):
                if payload["name"] == name:
                    result: dict[str, Any] = payload
                    return result
    return None


def _step_at(payload: dict[str, Any] | None, rate: float) -> dict[str, Any] | None:
    if payload is None:
        return None
    for step in payload["steps"]:
        if (
            step["mode"] == "open"
            and step.get("rate") == rate
            and step["phase"] in ("sweep", "refine")
            and not step.get("superseded")
        ):
            result: dict[str, Any] = step
            return result
    return None


def _ratio(ours: float | None, reference: float | None) -> float | None:
    if ours is None or not reference:
        return None
    return ours / reference


def _p99(step: dict[str, Any] | None) -> float | None:
    if step is None:
        return None
    value = step["latency_ms"]["p99"]
    return float(value) if value is not None else None


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Ours vs echo per QoS and payload, resources, and the targets with pass/fail."""
    rows: list[dict[str, Any]] = []
    qos_levels = sorted({b["qos"] for b in report.get("blocks", [])}, reverse=True)
    names: list[str] = []
    for block in report.get("blocks", []):
        for payload in block.get("payloads", []):
            if payload["name"] not in names:
                names.append(payload["name"])
    for qos in qos_levels:
        for name in names:
            echo = find_payload(report, "echo", qos, name)
            ours = find_payload(report, "worker", qos, name)
            if echo is None and ours is None:
                continue
            windows = (ours or echo or {}).get("windows", 1)
            row: dict[str, Any] = {"qos": qos, "payload": name, "windows": windows}
            for label, payload in (("echo", echo), ("worker", ours)):
                if payload is None:
                    continue
                row[f"{label}_max_rate"] = payload["max_sustainable_rate"]
                row[f"{label}_saturated"] = payload["saturated"]
                row[f"{label}_generator_limited"] = payload["generator_limited"]
                row[f"{label}_peak_throughput"] = round(payload["peak_throughput"], 1)
                row[f"{label}_max_forecasts_per_s"] = payload["max_sustainable_forecasts_per_s"]
                row[f"{label}_peak_forecasts_per_s"] = round(payload["peak_forecasts_per_s"], 1)
                half = payload.get("half_rate")
                row[f"{label}_half_rate"] = half["rate"] if half else None
                row[f"{label}_p99_at_half_ms"] = _p99(half)
                row[f"{label}_p99_at_1000_ms"] = _p99(_step_at(payload, 1000))
            row["ratio_max_rate"] = _ratio(row.get("worker_max_rate"), row.get("echo_max_rate"))
            row["ratio_peak"] = _ratio(row.get("worker_peak_throughput"), row.get("echo_peak_throughput"))
            rows.append(row)
    worker_blocks = [b for b in report.get("blocks", []) if b["target"] == "worker"]
    resources: dict[str, Any] = {}
    if worker_blocks:
        resources["rss_ready_mb"] = max(b["rss_ready_mb"] for b in worker_blocks)
        resources["rss_peak_mb"] = max(b.get("rss_peak_mb", 0.0) for b in worker_blocks)
    startup = report.get("startup", {})
    if startup.get("all_time_to_ready_s"):
        resources["time_to_ready_median_s"] = startup["time_to_ready_median_s"]
        resources["time_to_ready_max_s"] = startup["time_to_ready_max_s"]
    counted = [
        step
        for block in report.get("blocks", [])
        for payload in block.get("payloads", [])
        for step in payload["steps"]
        if not step.get("superseded")
    ]
    resources["steps_counted"] = len(counted)
    resources["steps_disturbed"] = sum(1 for s in counted if s.get("disturbed"))
    idle = [r["rss_idle_mb"] for r in startup.get("runs", []) if "rss_idle_mb" in r]
    if idle:
        resources["rss_idle_mb"] = max(idle)
    return {"rows": rows, "resources": resources, "targets": _targets(rows, resources)}


def _row(rows: list[dict[str, Any]], qos: int, payload: str) -> dict[str, Any]:
    for row in rows:
        if row["qos"] == qos and row["payload"] == payload:
            return row
    return {}


def _check(name: str, kind: str, measured: float | None, limit: float, higher_is_better: bool, note: str = "") -> dict[
    str, Any
]:
    passed: bool | None = None
    if measured is not None:
        passed = measured >= limit if higher_is_better else measured <= limit
    return {
        "name": name, "kind": kind, "measured": measured, "limit": limit,
        "comparison": ">=" if higher_is_better else "<=", "passed": passed, "note": note,
    }


def _targets(rows: list[dict[str, Any]], resources: dict[str, Any]) -> list[dict[str, Any]]:
    single, batched = _row(rows, 1, "single"), _row(rows, 1, "batched")
    echo_note = "" if single.get("echo_saturated", True) else "echo not saturated: ratio is an upper bound"
    checks = [
        _check("QoS 1 single-window max sustainable rate / echo's", "floor", single.get("ratio_max_rate"),
               SINGLE_RATIO_FLOOR, True, echo_note),
        _check("QoS 1 batched (64) forecasts/s at the max sustainable rate", "floor",
               batched.get("worker_max_forecasts_per_s"), BATCHED_FORECASTS_FLOOR, True,
               "" if batched.get("worker_saturated", True) else "not saturated: a lower bound"),
        _check("QoS 1 single-window p99 (ms) at half the max rate", "floor", single.get("worker_p99_at_half_ms"),
               P99_HALF_RATE_FLOOR_MS, False),
        _check("QoS 1 batched p99 (ms) at half the max rate", "floor", batched.get("worker_p99_at_half_ms"),
               P99_HALF_RATE_FLOOR_MS, False),
        _check("worker RSS (MB) with two models, peak under load", "floor", resources.get("rss_peak_mb"),
               RSS_FLOOR_MB, False),
        _check("worker process start to /readyz (s), slowest run", "floor", resources.get("time_to_ready_max_s"),
               READY_FLOOR_S, False),
        _check("QoS 1 single-window max sustainable rate / echo's", "aim", single.get("ratio_max_rate"),
               SINGLE_RATIO_AIM, True, echo_note),
        _check("QoS 1 single-window p99 (ms) at 1000 req/s", "aim", single.get("worker_p99_at_1000_ms"),
               P99_AT_1000_AIM_MS, False),
        _check("QoS 1 batched forecasts/s / echo's (max sustainable)", "aim", batched.get("ratio_max_rate"),
               BATCHED_RATIO_AIM, True),
    ]
    return checks
