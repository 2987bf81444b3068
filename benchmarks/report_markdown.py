"""The benchmark report as markdown: the run's conditions, the targets, ours vs echo, the worker's
resources and every step."""

from __future__ import annotations

from typing import Any

from benchmarks.report_plot import PLOT_NAME
from benchmarks.report_summary import summarize

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
        "request to arrival of the answer with its id, at the load generator. Model `lstm` of two loaded "
        "(`lstm`, `ann`), tenant `bench`, shared subscription, the worker's shipped defaults"
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
        if measured is not None and "/ echo" in check["name"]:
            shown = _pct(measured)
            limit = _pct(check["limit"])
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
        "| QoS | windows/msg | echo max sustainable msg/s | worker max sustainable msg/s | ratio | "
        "echo peak msg/s | worker peak msg/s | ratio | worker forecasts/s (sustained / peak) | "
        "worker p99 at half max | echo p99 at half max | worker p99 at 1000/s | echo p99 at 1000/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["rows"]:
        half_w = f"{_f(row.get('worker_p99_at_half_ms'), 2)} ms @ {_f(row.get('worker_half_rate'), 0)}/s"
        half_e = f"{_f(row.get('echo_p99_at_half_ms'), 2)} ms @ {_f(row.get('echo_half_rate'), 0)}/s"
        lines.append(
            f"| {row['qos']} | {row['windows']} | {_rate(row, 'echo')} | {_rate(row, 'worker')} | "
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
        "rate: it is what the target does when pushed past the point where latency stays bounded.",
        "",
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
        "| target | QoS | win | phase | offered | sent | answered | errors | unanswered | throughput/s | "
        "forecasts/s | p50 ms | p90 ms | p99 ms | max ms | cpu target | cpu broker | cpu loadgen | cpu others | |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for block in report.get("blocks", []):
        for payload in block.get("payloads", []):
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
                    f"| {block['target']} | {block['qos']} | {step['windows']} | {step['phase']} | {offered} | "
                    f"{step['sent']:,} | {step['answered']:,} | {step['errors']:,} | {step['unanswered']:,} | "
                    f"{step['throughput']:,.0f} | {step['forecasts_per_s']:,.0f} | {_f(lat['p50'], 2)} | "
                    f"{_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} | {_f(lat['max'], 1)} | "
                    f"{_f(cpu.get('target'), 2)} | {_f(cpu.get('broker'), 2)} | {_f(cpu.get('loadgen'), 2)} | "
                    f"{_f(cpu.get('others'), 2)} | {flag} |"
                )
    lines += ["", f"![latency vs throughput]({PLOT_NAME})", ""]
    return "\n".join(lines)


def _overrides(overrides: Any) -> str:
    if not overrides:
        return ""
    return " except " + ", ".join(f"`{key}: {value}`" for key, value in overrides.items())


def _loadavg(values: Any) -> str:
    if not values:
        return "?"
    return " / ".join(f"{v:.2f}" for v in values)
