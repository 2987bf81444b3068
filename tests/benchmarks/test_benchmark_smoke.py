"""The benchmark machinery end to end, briefly, at a low rate, against a real Mosquitto.

Checks the report's structure and bookkeeping only (every request accounted for,
percentiles ordered, summary and files written); performance is measured by
`python -m benchmarks`, never asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import summarize, write_report
from benchmarks.run import PayloadPlan, Plan, run_benchmark
from tests.support.configs import copy_model_repository
from tests.support.mosquitto import find_mosquitto

pytestmark = pytest.mark.integration

PERCENTILES = ("min", "p50", "p90", "p99", "p999", "max")


def _check_step(step: dict[str, Any]) -> None:
    assert step["sent"] > 0
    assert step["sent"] == step["answered"] + step["errors"] + step["unanswered"], step
    assert step["errors"] == 0, step["error_codes"]  # the generator's requests are valid for the worker
    assert step["answered"] > 0
    values = [step["latency_ms"][name] for name in PERCENTILES]
    assert all(v is not None and v >= 0 for v in values)
    assert values == sorted(values), step["latency_ms"]
    assert set(step["cpu_cores"]) == {"target", "broker", "loadgen", "others"}
    assert isinstance(step["disturbed"], bool)
    if step["mode"] == "open":
        assert isinstance(step["sustained"], bool)
        assert step["rate"] > 0
    else:
        assert step["concurrency"] > 0


def test_benchmark_machinery_end_to_end(tmp_path: Path) -> None:
    find_mosquitto()  # CI installs it: missing is an error, not a skip
    plan = Plan(
        qos_levels=[1],
        payloads=[
            PayloadPlan("single", 1, [40], [2], models=["lstm"], encodings=["json"]),
            PayloadPlan("batched", 64, [20], [1]),
        ],
        models=["lstm", "ann"],
        encodings=["json", "binary"],
        step_s=0.5,
        drain_s=5.0,
        settle_s=5.0,
        refine_steps=0,
        half_rate_step=False,
        startup_runs=0,
        retry_latency_misses=False,
        quiet_wait_s=0.0,
        disturbed_retries=0,
        model_cost_rounds=1,
    )
    report = run_benchmark(plan, copy_model_repository(tmp_path / "models"), tmp_path / "work")

    assert [(b["target"], b["qos"]) for b in report["blocks"]] == [("echo", 1), ("worker", 1)]
    sweeps = {b["target"]: [(p["name"], p["model"], p["encoding"]) for p in b["payloads"]] for b in report["blocks"]}
    assert sweeps == {
        "echo": [("single", "lstm", "json"), ("batched", "lstm", "json"), ("batched", "lstm", "binary")],
        "worker": [("single", "lstm", "json"), ("batched", "lstm", "json"), ("batched", "lstm", "binary"),
                   ("batched", "ann", "json"), ("batched", "ann", "binary")],
    }
    for block in report["blocks"]:
        for payload in block["payloads"]:
            modes = [s["mode"] for s in payload["steps"]]
            assert modes == ["open", "closed"]
            for step in payload["steps"]:
                _check_step(step)
                assert step["windows"] == payload["windows"]
            assert payload["peak_throughput"] > 0
    worker = report["blocks"][1]
    assert worker["time_to_ready_s"] > 0
    assert 0 < worker["rss_ready_mb"] <= worker["rss_peak_mb"]

    summary = report["summary"]
    assert summary == summarize(report)
    assert [(r["qos"], r["payload"], r["model"], r["encoding"]) for r in summary["rows"]] == [
        (1, "single", "lstm", "json"), (1, "batched", "lstm", "json"), (1, "batched", "lstm", "binary"),
        (1, "batched", "ann", "json"), (1, "batched", "ann", "binary"),
    ]
    costs = report["model_cost"]["p50_us"]
    assert set(costs) == {"lstm", "ann"} and all(set(sizes) == {"1", "64"} for sizes in costs.values())
    assert [run["when"] for run in report["model_cost"]["runs"]] == ["before", "after"]
    for row in summary["rows"]:
        assert row["echo_max_rate"] >= 0 and row["worker_max_rate"] >= 0
        assert row["model_cost_us"] > 0
        if row["echo_max_rate"]:
            assert 0 < row["bound_rate"] < row["echo_max_rate"]
    resources = summary["resources"]
    assert resources["rss_peak_mb"] > 0 and resources["time_to_ready_max_s"] > 0
    names = {check["name"] for check in summary["targets"]}
    assert any("RSS" in name for name in names) and any("readyz" in name for name in names)

    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["summary"]["rows"] == json.loads(json.dumps(summary["rows"]))
    markdown = paths["markdown"].read_text()
    assert "## Ours vs echo" in markdown and "## Against the bound of echo + model" in markdown
    assert "| echo | 1 | 64 | (any) | json |" in markdown and "| worker | 1 | 1 | lstm | json |" in markdown
    assert "| worker | 1 | 64 | ann | json |" in markdown and "| worker | 1 | 64 | ann | binary |" in markdown
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")
