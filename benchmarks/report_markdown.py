"""The benchmark report as markdown: the run's conditions, the targets, ours vs echo, the worker's
resources and every step."""

from __future__ import annotations

from typing import Any

from benchmarks.report_plot import PLOT_NAME
from benchmarks.report_summary import (
    BOUND_RATIO_TARGET,
    P99_RATIO_AT_1000_TARGET,
    SINGLE_ECHO_RATIO_TARGET,
    payload_encoding,
    payload_model,
    summarize,
)

__all__ = ["render_markdown"]


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if digits == 0:
            return f"{value:,.0f}{suffix}"
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _rate(row: dict[str, Any], label: str) -> str:
    rate = row.get(f"{label}_max_rate")
    if rate is None:
        return "-"
    text = f"{rate:,.0f}"
    if not row.get(f"{label}_saturated", True):
        text = f">= {text}"
    elif rate == 0:
        text = "< lowest step"
    if row.get(f"{label}_generator_limited"):
        text += " (generator-limited)"
    return text


def render_markdown(report: dict[str, Any]) -> str:
    meta = report.get("meta", {})
    summary = report.get("summary") or summarize(report)
    plan = meta.get("plan", {})
    lines = [
        "# Benchmark: inference worker vs bare echo worker over Mosquitto",
        "",
        f"Run {meta.get('started_at', '?')} on `{meta.get('host', '?')}` ({meta.get('cpu_count', '?')} CPUs, "
        f"{meta.get('platform', '?')}), commit `{(meta.get('git_commit') or '?')[:12]}`, {meta.get('broker', '?')}, "
        f"Python {meta.get('python', '?')}; {meta.get('duration_s', '?')} s. Load average at start "
        f"{_loadavg(meta.get('load_average_at_start'))}, at end {_loadavg(meta.get('load_average_at_end'))}.",
        "",
        f"Open-loop steps of {plan.get('step_s', '?')} s; a step is *sustained* when throughput >= "
        f"{_pct(plan.get('min_throughput_ratio'))} of the offered rate, no errors, nothing unanswered within "
        f"{plan.get('drain_s', '?')} s, and p99 <= {plan.get('p99_limit_ms', '?')} ms. Latency: publish of the "
        "request to arrival of the answer with its id, at the load generator. Requests to model(s) "
        f"{_names(meta.get('models_addressed') or [meta.get('model', 'lstm')])} of two loaded (`lstm`, `ann`), "
        f"payloads {_names(meta.get('encodings') or ['json'])} (json: OIP JSON; binary: OIP binary tensor "
        "extension, JSON header + NUL + float32 bytes, binary answers requested), tenant `bench`, shared "
        "subscription, the worker's shipped defaults"
        + _overrides(plan.get("worker_overrides"))
        + f". Open-loop requests are released on a {plan.get('tick_ms', '?')} ms tick.",
        "",
        f"Machine noise: {summary['resources'].get('steps_disturbed', '?')} of "
        f"{summary['resources'].get('steps_counted', '?')} counted steps were *disturbed* (other processes used "
        f"more than {plan.get('quiet_cores', '?')} cores during the step; failed disturbed steps were repeated, "
        f"at most {plan.get('disturbed_retries', '?')} times, after waiting up to {plan.get('quiet_wait_s', '?')} s "
        "for a quiet machine).",
        "",
        "## Targets",
        "",
        "| | check | measured | limit | result |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for check in summary["targets"]:
        measured = check["measured"]
        unit = check.get("unit") or ("ratio" if "/ echo" in check["name"] else "")
        if unit == "ratio":
            shown = _pct(measured)
            limit = _pct(check["limit"])
        elif unit == "times":
            shown = "-" if measured is None else f"{measured:.2f}x"
            limit = f"{check['limit']:.2f}x"
        else:
            shown = _f(measured, 2 if isinstance(measured, float) and measured < 100 else 0)
            limit = _f(check["limit"], 0 if check["limit"] >= 100 else 1)
        result = {True: "pass", False: "**FAIL**", None: "not measured"}[check["passed"]]
        if check["note"]:
            result += f" ({check['note']})"
        lines.append(f"| {check['kind']} | {check['name']} | {shown} | {check['comparison']} {limit} | {result} |")
    lines += [
        "",
        "## Ours vs echo (same broker, same generator, same run)",
        "",
        "| QoS | windows/msg | model | encoding | echo max sustainable msg/s | worker max sustainable msg/s | ratio | "
        "echo peak msg/s | worker peak msg/s | ratio | worker forecasts/s (sustained / peak) | "
        "worker p99 at half max | echo p99 at half max | worker p99 at 1000/s | echo p99 at 1000/s |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["rows"]:
        half_w = f"{_f(row.get('worker_p99_at_half_ms'), 2)} ms @ {_f(row.get('worker_half_rate'), 0)}/s"
        half_e = f"{_f(row.get('echo_p99_at_half_ms'), 2)} ms @ {_f(row.get('echo_half_rate'), 0)}/s"
        lines.append(
            f"| {row['qos']} | {row['windows']} | {row.get('model', 'lstm')} | {row.get('encoding', 'json')} | "
            f"{_rate(row, 'echo')} | {_rate(row, 'worker')} | "
            f"{_pct(row.get('ratio_max_rate'))} | {_f(row.get('echo_peak_throughput'), 0)} | "
            f"{_f(row.get('worker_peak_throughput'), 0)} | {_pct(row.get('ratio_peak'))} | "
            f"{_f(row.get('worker_max_forecasts_per_s'), 0)} / {_f(row.get('worker_peak_forecasts_per_s'), 0)} | "
            f"{half_w} | {half_e} | {_f(row.get('worker_p99_at_1000_ms'), 2)} ms | "
            f"{_f(row.get('echo_p99_at_1000_ms'), 2)} ms |"
        )
    resources = summary["resources"]
    startup = report.get("startup", {})
    lines += [
        "",
        "Peak = the highest throughput of any step (open or closed loop), so it can exceed the max sustainable "
        "rate: it is what the target does when pushed past the point where latency stays bounded. The echo "
        "answers every model alike: one echo sweep per payload and encoding serves every model's row.",
        "",
        *_bound_section(report, summary),
        "## Worker resources",
        "",
        f"- RSS with two models loaded: {_f(resources.get('rss_ready_mb'))} MB when ready, "
        f"{_f(resources.get('rss_idle_mb'))} MB idle 0.5 s later, {_f(resources.get('rss_peak_mb'))} MB peak "
        "under load.",
        f"- Process start to /readyz 200: median {_f(resources.get('time_to_ready_median_s'), 2)} s, slowest "
        f"{_f(resources.get('time_to_ready_max_s'), 2)} s over {len(startup.get('all_time_to_ready_s', []))} starts "
        f"({', '.join(f'{t:.2f}' for t in startup.get('all_time_to_ready_s', []))} s).",
        "",
        "## All steps",
        "",
        "CPU columns are cores used during the step (1.00 = one core busy): the target (echo or worker), "
        "Mosquitto, the load generator, and every other process on the machine.",
        "",
        "| target | QoS | win | model | enc | phase | offered | sent | answered | errors | unanswered | throughput/s | "
        "forecasts/s | p50 ms | p90 ms | p99 ms | max ms | cpu target | cpu broker | cpu loadgen | cpu others | |",
        "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for block in report.get("blocks", []):
        for payload in block.get("payloads", []):
            model = "(any)" if block["target"] == "echo" else payload_model(payload)
            encoding = payload_encoding(payload)
            for step in payload["steps"]:
                lat, cpu = step["latency_ms"], step.get("cpu_cores", {})
                offered = f"{step['rate']:,.0f}/s" if step["mode"] == "open" else f"conc {step['concurrency']}"
                flags = []
                if step["mode"] == "open":
                    flags.append("ok" if step["sustained"] else "not sustained")
                    if not step.get("generator_kept_up", True):
                        flags.append("generator behind")
                if step.get("disturbed"):
                    flags.append("disturbed")
                if step.get("superseded"):
                    flags.append("repeated below")
                if step.get("attempt", 1) > 1:
                    flags.append(f"attempt {step['attempt']}")
                flag = ", ".join(flags)
                lines.append(
                    f"| {block['target']} | {block['qos']} | {step['windows']} | {model} | {encoding} | "
                    f"{step['phase']} | {offered} | "
                    f"{step['sent']:,} | {step['answered']:,} | {step['errors']:,} | {step['unanswered']:,} | "
                    f"{step['throughput']:,.0f} | {step['forecasts_per_s']:,.0f} | {_f(lat['p50'], 2)} | "
                    f"{_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} | {_f(lat['max'], 1)} | "
                    f"{_f(cpu.get('target'), 2)} | {_f(cpu.get('broker'), 2)} | {_f(cpu.get('loadgen'), 2)} | "
                    f"{_f(cpu.get('others'), 2)} | {flag} |"
                )
    lines += ["", f"![latency vs throughput]({PLOT_NAME})", ""]
    return "\n".join(lines)


def _bound_section(report: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The worker against the echo and against the bound of echo + model compute, and the model cost runs."""
    cost = report.get("model_cost")
    if not cost:
        return []
    lines = [
        "## Against the bound of echo + model",
        "",
        "The echo adds nothing to the transport but a fixed answer; the worker also runs the model. The bound is "
        "what a worker could reach if it added nothing to the echo but the model's compute per message: "
        "`1 / (1 / echo's max msg/s + model cost per message)`, the model cost being normalise + invoke + "
        "denormalise as the worker does it (LiteRT, `num_threads=1`, the message's windows in one invoke; "
        "`benchmarks/model_cost.py`), p50, measured in this run before and after the blocks. For single-window "
        "messages the worker batches several messages into one invoke, so a 1-window invoke per message "
        "overstates its model cost (the bound is low there; the single-window target is against the echo). "
        f"Targets (issue 17): batched >= {BOUND_RATIO_TARGET:.0%} of the bound, single-window >= "
        f"{SINGLE_ECHO_RATIO_TARGET:.0%} of the echo, p99 at 1,000/s <= {P99_RATIO_AT_1000_TARGET:.2f}x the echo's.",
        "",
        "| QoS | windows/msg | model | encoding | echo max msg/s | echo µs/msg | model µs/msg | bound msg/s | "
        "worker max msg/s | ratio to echo | ratio to bound | p99 at 1000/s, worker / echo |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["rows"]:
        p99 = row.get("ratio_p99_at_1000")
        lines.append(
            f"| {row['qos']} | {row['windows']} | {row['model']} | {row['encoding']} | {_rate(row, 'echo')} | "
            f"{_f(row.get('echo_cost_us'), 1)} | {_f(row.get('model_cost_us'), 1)} | {_f(row.get('bound_rate'), 0)} | "
            f"{_rate(row, 'worker')} | {_pct(row.get('ratio_max_rate'))} | {_pct(row.get('ratio_bound'))} | "
            f"{'-' if p99 is None else f'{p99:.2f}x'} |"
        )
    lines += ["", "Model cost per message, p50 µs (p50 of each round; rounds alternate the models and sizes):", ""]
    for run in cost.get("runs", []):
        parts = []
        for name, sizes in run.get("models", {}).items():
            for windows, figures in sizes.items():
                rounds = ", ".join(f"{v:.0f}" for v in figures.get("round_p50_us", []))
                parts.append(f"{name} {windows} window(s) **{figures['p50_us']:.1f}** ({rounds})")
        lines.append(f"- {run.get('when', '?')} the blocks (other processes {_f(run.get('others_before'), 2)} "
                     f"cores before): " + "; ".join(parts))
    lines.append("")
    return lines


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _overrides(overrides: Any) -> str:
    if not overrides:
        return ""
    return " except " + ", ".join(f"`{key}: {value}`" for key, value in overrides.items())


def _loadavg(values: Any) -> str:
    if not values:
        return "?"
    return " / ".join(f"{v:.2f}" for v in values)
