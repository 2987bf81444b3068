"""Benchmark report: summary figures, JSON, a markdown table and a latency-vs-throughput plot.

`python -m benchmarks.report results/latest.json` re-renders report.md and the PNG from a
saved JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

JSON_NAME = "latest.json"
MARKDOWN_NAME = "report.md"
PLOT_NAME = "latency_vs_throughput.png"

# The floors of issue #7 (2 cores, Mosquitto, QoS 1) and the aims of DESIGN.md "Measuring".
SINGLE_RATIO_FLOOR = 0.70
SINGLE_RATIO_AIM = 0.90
BATCHED_FORECASTS_FLOOR = 100_000
BATCHED_RATIO_AIM = 0.80
P99_HALF_RATE_FLOOR_MS = 10.0
P99_AT_1000_AIM_MS = 2.0
RSS_FLOOR_MB = 150.0
READY_FLOOR_S = 2.0


def _payload(report: dict[str, Any], target: str, qos: int, name: str) -> dict[str, Any] | None:
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
            echo = _payload(report, "echo", qos, name)
            ours = _payload(report, "worker", qos, name)
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


# --------------------------------------------------------------------------------- markdown


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


# ------------------------------------------------------------------------------------ plot


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = report.get("blocks", [])
    qos_levels = sorted({b["qos"] for b in blocks}, reverse=True) or [1]
    names: list[str] = []
    for block in blocks:
        for payload in block.get("payloads", []):
            if payload["name"] not in names:
                names.append(payload["name"])
    names = names or ["single"]
    fig, axes = plt.subplots(
        len(qos_levels), len(names), figsize=(6.5 * len(names), 4.2 * len(qos_levels)), squeeze=False
    )
    colors = {"echo": "tab:gray", "worker": "tab:blue"}
    for r, qos in enumerate(qos_levels):
        for c, name in enumerate(names):
            ax = axes[r][c]
            windows = 1
            for target in ("echo", "worker"):
                payload = _payload(report, target, qos, name)
                if payload is None:
                    continue
                windows = payload["windows"]
                open_steps = sorted(
                    (
                        s
                        for s in payload["steps"]
                        if s["mode"] == "open" and s["latency_ms"]["p99"] is not None and not s.get("superseded")
                    ),
                    key=lambda s: s["rate"],
                )
                closed = [s for s in payload["steps"] if s["mode"] == "closed" and s["latency_ms"]["p99"] is not None]
                color = colors[target]
                kept = [s for s in open_steps if s.get("sustained")]
                over = [s for s in open_steps if not s.get("sustained")]
                xs = [s["throughput"] for s in kept]
                ax.plot(xs, [s["latency_ms"]["p99"] for s in kept], "o-", color=color,
                        label=f"{target} p99 (open loop, sustained)")
                ax.plot(xs, [s["latency_ms"]["p50"] for s in kept], "o--", color=color, alpha=0.6,
                        label=f"{target} p50 (open loop, sustained)")
                ax.plot([s["throughput"] for s in over], [s["latency_ms"]["p99"] for s in over], "o", color=color,
                        markerfacecolor="none", label=f"{target} p99 (open loop, not sustained)")
                ax.plot([s["throughput"] for s in closed], [s["latency_ms"]["p99"] for s in closed], "x",
                        color=color, markersize=9, label=f"{target} p99 (closed loop)")
            ax.set_yscale("log")
            ax.set_title(f"QoS {qos}, {windows} window{'s' if windows > 1 else ''} per message")
            ax.set_xlabel("answers/s" + (f" (x{windows} forecasts)" if windows > 1 else ""))
            ax.set_ylabel("latency (ms, log)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    meta = report.get("meta", {})
    fig.suptitle(f"Latency vs throughput, worker vs echo ({meta.get('started_at', '')}, {meta.get('host', '')})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """latest.json, report.md and the PNG in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if "summary" not in report:
        report["summary"] = summarize(report)
    json_path = out / JSON_NAME
    json_path.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    markdown_path = out / MARKDOWN_NAME
    markdown_path.write_text(render_markdown(report))
    png_path = plot(report, out / PLOT_NAME)
    return {"json": json_path, "markdown": markdown_path, "plot": png_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="a saved latest.json")
    parser.add_argument("--out", type=Path, help="default: the JSON's folder")
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text())
    report["summary"] = summarize(report)
    paths = write_report(report, args.out or args.json.parent)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
