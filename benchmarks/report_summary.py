"""The benchmark's summary: ours vs echo per QoS, payload, model and encoding (and against the bound
of echo + model compute), the worker's resources, and the targets (floors of issue #7, aims of
DESIGN.md, the targets of issue 17) with pass/fail."""

from __future__ import annotations

from typing import Any

__all__ = ["echo_model_bound", "find_payload", "payload_encoding", "payload_model", "summarize"]

# The floors of issue #7 (2 cores, Mosquitto, QoS 1) and the aims of DESIGN.md "Measuring".
SINGLE_RATIO_FLOOR = 0.70
SINGLE_RATIO_AIM = 0.90
BATCHED_FORECASTS_FLOOR = 100_000
BATCHED_RATIO_AIM = 0.80
P99_HALF_RATE_FLOOR_MS = 10.0
P99_AT_1000_AIM_MS = 2.0
RSS_FLOOR_MB = 150.0
READY_FLOOR_S = 2.0
# Issue 17: batched messages against the bound of echo + model; single-window against the echo;
# p99 at a fixed 1,000/s against the echo's p99 at the same rate.
BOUND_RATIO_TARGET = 0.90
SINGLE_ECHO_RATIO_TARGET = 0.90
P99_RATIO_AT_1000_TARGET = 1.25
FIXED_RATE = 1000
DEFAULT_MODEL = "lstm"
DEFAULT_ENCODING = "json"


def payload_model(payload: dict[str, Any]) -> str:
    return str(payload.get("model", DEFAULT_MODEL))  # reports before issue 17: lstm only


def payload_encoding(payload: dict[str, Any]) -> str:
    return str(payload.get("encoding", DEFAULT_ENCODING))


def find_payload(
    report: dict[str, Any], target: str, qos: int, name: str, model: str | None = None, encoding: str = DEFAULT_ENCODING
) -> dict[str, Any] | None:
    """The sweep of `target` at `qos` for payload `name` in `encoding`, addressed to `model`
    (None: any model; the echo answers every model alike)."""
    for block in report.get("blocks", []):
        if block["target"] == target and block["qos"] == qos:
            for payload in block.get("payloads", []):
                if (
                    payload["name"] == name
                    and payload_encoding(payload) == encoding
                    and (model is None or payload_model(payload) == model)
                ):
                    result: dict[str, Any] = payload
                    return result
    return None


def echo_model_bound(echo_rate: float | None, model_cost_us: float | None) -> float | None:
    """Messages/s a worker could reach if it added nothing to the echo but the model's compute:
    `1 / (1 / echo's max rate + model cost per message)`. None when either is unknown (or the echo's 0)."""
    if not echo_rate or model_cost_us is None:
        return None
    return 1.0 / (1.0 / echo_rate + model_cost_us / 1e6)


def _model_cost_us(report: dict[str, Any], model: str, windows: int) -> float | None:
    cost = report.get("model_cost", {}).get("p50_us", {}).get(model, {}).get(str(windows))
    return float(cost) if cost is not None else None


def _step_at(payload: dict[str, Any] | None, rate: float) -> dict[str, Any] | None:
    if payload is None:
        return None
    for step in payload["steps"]:
        if (
            step["mode"] == "open"
            and step.get("rate") == rate
            and step["phase"] in ("sweep", "refine", "fixed", "half")
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


def _variants(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(payload name, model, encoding) of the worker's sweeps (or the echo's when no worker ran), in run order."""
    found: list[tuple[str, str, str]] = []
    blocks = report.get("blocks", [])
    worker_ran = any(b["target"] == "worker" for b in blocks)
    for block in blocks:
        if worker_ran and block["target"] != "worker":
            continue
        for payload in block.get("payloads", []):
            key = (payload["name"], payload_model(payload), payload_encoding(payload))
            if key not in found:
                found.append(key)
    order = {name: index for index, name in enumerate(dict.fromkeys(k[0] for k in found))}
    return sorted(found, key=lambda k: order[k[0]])


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Ours vs echo (and vs echo + model) per QoS, payload, model and encoding; resources; targets."""
    rows: list[dict[str, Any]] = []
    qos_levels = sorted({b["qos"] for b in report.get("blocks", [])}, reverse=True)
    worker_ran = any(b["target"] == "worker" for b in report.get("blocks", []))
    for qos in qos_levels:
        for name, model, encoding in _variants(report):
            echo = find_payload(report, "echo", qos, name, None, encoding)
            ours = find_payload(report, "worker", qos, name, model, encoding)
            if (echo is None and ours is None) or (ours is None and worker_ran):
                continue
            windows = (ours or echo or {}).get("windows", 1)
            row: dict[str, Any] = {"qos": qos, "payload": name, "windows": windows, "model": model,
                                   "encoding": encoding}
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
                row[f"{label}_p99_at_1000_ms"] = _p99(_step_at(payload, FIXED_RATE))
            row["ratio_max_rate"] = _ratio(row.get("worker_max_rate"), row.get("echo_max_rate"))
            row["ratio_peak"] = _ratio(row.get("worker_peak_throughput"), row.get("echo_peak_throughput"))
            row["ratio_p99_at_1000"] = _ratio(row.get("worker_p99_at_1000_ms"), row.get("echo_p99_at_1000_ms"))
            row["model_cost_us"] = _model_cost_us(report, model, windows)
            echo_rate = row.get("echo_max_rate")
            row["echo_cost_us"] = 1e6 / echo_rate if echo_rate else None
            row["bound_rate"] = echo_model_bound(echo_rate, row["model_cost_us"])
            row["ratio_bound"] = _ratio(row.get("worker_max_rate"), row["bound_rate"])
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


def _row(
    rows: list[dict[str, Any]], qos: int, payload: str, model: str = DEFAULT_MODEL, encoding: str = DEFAULT_ENCODING
) -> dict[str, Any]:
    for row in rows:
        if row["qos"] == qos and row["payload"] == payload and row["model"] == model and row["encoding"] == encoding:
            return row
    return {}


def _check(
    name: str, kind: str, measured: float | None, limit: float, higher_is_better: bool, note: str = "",
    unit: str = "",
) -> dict[str, Any]:
    """`unit`: "ratio" (shown as %), "times" (shown as 1.10x) or "" (the number as it is)."""
    passed: bool | None = None
    if measured is not None:
        passed = measured >= limit if higher_is_better else measured <= limit
    return {
        "name": name, "kind": kind, "measured": measured, "limit": limit,
        "comparison": ">=" if higher_is_better else "<=", "passed": passed, "note": note, "unit": unit,
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
    return checks + _issue17_targets(rows)


def _issue17_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and encoding at QoS 1: batched max rate / (echo + model) bound; single-window max
    rate / echo's; p99 at 1,000/s / echo's p99 at 1,000/s."""
    checks = []
    qos1 = [row for row in rows if row["qos"] == 1]
    for row in (r for r in qos1 if r["payload"] == "batched"):
        note = f"model {row['model_cost_us']:.0f} µs/msg" if row.get("model_cost_us") is not None else ""
        if not row.get("echo_saturated", True):
            note += "; echo not saturated: bound is a lower bound"
        checks.append(_check(
            f"QoS 1 batched ({row['windows']}), {row['model']}, {row['encoding']}: max rate / (echo + model) bound",
            "issue 17", row.get("ratio_bound"), BOUND_RATIO_TARGET, True, note.strip("; "), "ratio"))
    for row in (r for r in qos1 if r["payload"] == "single"):
        checks.append(_check(
            f"QoS 1 single-window, {row['model']}, {row['encoding']}: max rate / echo's", "issue 17",
            row.get("ratio_max_rate"), SINGLE_ECHO_RATIO_TARGET, True,
            "" if row.get("echo_saturated", True) else "echo not saturated: ratio is an upper bound", "ratio"))
    for row in qos1:
        what = "single-window" if row["windows"] == 1 else f"batched ({row['windows']})"
        measured = row.get("ratio_p99_at_1000")
        note = ""
        if measured is not None:
            note = f"{row['worker_p99_at_1000_ms']:.2f} vs {row['echo_p99_at_1000_ms']:.2f} ms"
        checks.append(_check(
            f"QoS 1 {what}, {row['model']}, {row['encoding']}: p99 at 1,000/s / echo's p99 at 1,000/s", "issue 17",
            measured, P99_RATIO_AT_1000_TARGET, False, note, "times"))
    return checks
