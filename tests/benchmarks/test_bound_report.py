"""The echo + model bound, the report's rows per model and encoding, the issue-17 verdicts and the
plan's sweeps: arithmetic and bookkeeping on made-up reports (no broker, no timing asserted)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.model_cost import merge_runs, summarize_samples
from benchmarks.plan import PayloadPlan, Plan
from benchmarks.report_markdown import render_markdown
from benchmarks.report_summary import echo_model_bound, find_payload, summarize


def test_bound_adds_the_model_cost_to_the_echo_cost_per_message() -> None:
    # echo 4,000 msg/s = 250 µs/msg; + 250 µs of model = 500 µs/msg = 2,000 msg/s
    assert echo_model_bound(4000.0, 250.0) == pytest.approx(2000.0)
    assert echo_model_bound(10_000.0, 0.0) == pytest.approx(10_000.0)
    assert echo_model_bound(8000.0, 330.0) == pytest.approx(1e6 / (125.0 + 330.0))
    assert echo_model_bound(None, 10.0) is None
    assert echo_model_bound(0.0, 10.0) is None
    assert echo_model_bound(4000.0, None) is None


def _step(rate: float | None, p99: float, *, phase: str = "sweep", sustained: bool = True) -> dict[str, Any]:
    step: dict[str, Any] = {
        "mode": "open" if rate is not None else "closed", "phase": phase, "throughput": rate or 100.0,
        "latency_ms": {"p50": p99 / 2, "p90": p99, "p99": p99, "max": p99},
        "sent": 10, "answered": 10, "errors": 0, "unanswered": 0, "windows": 1, "forecasts_per_s": 0.0,
        "cpu_cores": {}, "superseded": False,
    }
    if rate is not None:
        step["rate"], step["sustained"] = rate, sustained
    else:
        step["concurrency"] = 8
    return step


def _sweep(name: str, windows: int, model: str, encoding: str, best: float, p99_at_1000: float) -> dict[str, Any]:
    return {
        "name": name, "windows": windows, "model": model, "encoding": encoding,
        "steps": [_step(1000, p99_at_1000), _step(None, 1.0)],
        "max_sustainable_rate": best, "saturated": True, "generator_limited": False,
        "peak_throughput": best * 1.1, "peak_forecasts_per_s": best * 1.1 * windows,
        "max_sustainable_forecasts_per_s": best * windows, "half_rate": None,
    }


def _report() -> dict[str, Any]:
    echo = [_sweep("single", 1, "lstm", "json", 8000, 1.0), _sweep("batched", 64, "lstm", "json", 4000, 1.0),
            _sweep("batched", 64, "lstm", "binary", 5000, 0.8)]
    worker = [_sweep("single", 1, "lstm", "json", 7600, 1.2), _sweep("batched", 64, "lstm", "json", 2000, 2.0),
              _sweep("batched", 64, "lstm", "binary", 2400, 1.5), _sweep("batched", 64, "ann", "json", 3400, 1.1),
              _sweep("batched", 64, "ann", "binary", 4000, 0.9)]
    return {
        "meta": {"plan": {}, "models_addressed": ["lstm", "ann"], "encodings": ["json", "binary"]},
        "blocks": [
            {"target": "echo", "qos": 1, "payloads": echo, "rss_ready_mb": 10.0},
            {"target": "worker", "qos": 1, "payloads": worker, "rss_ready_mb": 70.0, "rss_peak_mb": 80.0},
        ],
        "model_cost": {
            "runs": [{"when": "before", "models": {"lstm": {"64": {"p50_us": 250.0, "round_p50_us": [250.0]}}}}],
            "p50_us": {"lstm": {"1": 20.0, "64": 250.0}, "ann": {"1": 8.0, "64": 10.0}},
        },
    }


def test_rows_per_model_and_encoding_with_the_bound_columns() -> None:
    summary = summarize(_report())
    keys = [(r["payload"], r["model"], r["encoding"]) for r in summary["rows"]]
    assert keys == [("single", "lstm", "json"), ("batched", "lstm", "json"), ("batched", "lstm", "binary"),
                    ("batched", "ann", "json"), ("batched", "ann", "binary")]
    rows = {(r["payload"], r["model"], r["encoding"]): r for r in summary["rows"]}
    lstm = rows[("batched", "lstm", "json")]
    assert lstm["echo_max_rate"] == 4000  # the echo's sweep of the same payload and encoding, whatever model
    assert lstm["echo_cost_us"] == pytest.approx(250.0)
    assert lstm["model_cost_us"] == 250.0
    assert lstm["bound_rate"] == pytest.approx(2000.0)
    assert lstm["ratio_bound"] == pytest.approx(1.0)
    assert lstm["ratio_max_rate"] == pytest.approx(0.5)
    assert lstm["ratio_p99_at_1000"] == pytest.approx(2.0)
    binary = rows[("batched", "lstm", "binary")]
    assert binary["echo_max_rate"] == 5000
    assert binary["bound_rate"] == pytest.approx(1e6 / 450.0)
    assert binary["ratio_bound"] == pytest.approx(2400 / (1e6 / 450.0))
    ann = rows[("batched", "ann", "json")]
    assert ann["bound_rate"] == pytest.approx(1e6 / 260.0)
    assert rows[("single", "lstm", "json")]["model_cost_us"] == 20.0


def test_issue17_verdicts() -> None:
    checks = {c["name"]: c for c in summarize(_report())["targets"] if c["kind"] == "issue 17"}
    bound = checks["QoS 1 batched (64), lstm, json: max rate / (echo + model) bound"]
    assert bound["passed"] is True and bound["unit"] == "ratio" and bound["limit"] == 0.90
    assert checks["QoS 1 batched (64), ann, json: max rate / (echo + model) bound"]["passed"] is False  # 3400/3846
    assert checks["QoS 1 batched (64), lstm, binary: max rate / (echo + model) bound"]["passed"] is True
    single = checks["QoS 1 single-window, lstm, json: max rate / echo's"]
    assert single["measured"] == pytest.approx(0.95) and single["passed"] is True
    p99 = checks["QoS 1 single-window, lstm, json: p99 at 1,000/s / echo's p99 at 1,000/s"]
    assert p99["measured"] == pytest.approx(1.2) and p99["passed"] is True and p99["unit"] == "times"
    assert checks["QoS 1 batched (64), lstm, json: p99 at 1,000/s / echo's p99 at 1,000/s"]["passed"] is False
    # the targets of issue 7 and DESIGN.md stay, on the lstm JSON rows
    names = [c["name"] for c in summarize(_report())["targets"]]
    assert "QoS 1 single-window max sustainable rate / echo's" in names


def test_markdown_shows_the_bound_table_and_verdicts() -> None:
    text = render_markdown(_report())
    assert "## Against the bound of echo + model" in text
    assert "| 1 | 64 | lstm | json | 4,000 | 250.0 | 250.0 | 2,000 | 2,000 | 50% | 100% | 2.00x |" in text
    assert "| issue 17 | QoS 1 batched (64), ann, json: max rate / (echo + model) bound | 88% | >= 90% |" in text
    assert "| 1.20x | <= 1.25x | pass" in text


def test_a_report_without_models_or_encodings_reads_as_lstm_json() -> None:
    report = _report()
    for block in report["blocks"]:
        block["payloads"] = [p for p in block["payloads"] if p["encoding"] == "json" and p["model"] == "lstm"]
        for payload in block["payloads"]:
            del payload["model"], payload["encoding"]
    del report["model_cost"]
    rows = summarize(report)["rows"]
    assert [(r["payload"], r["model"], r["encoding"]) for r in rows] == [("single", "lstm", "json"),
                                                                         ("batched", "lstm", "json")]
    assert rows[1]["bound_rate"] is None and rows[1]["ratio_bound"] is None
    assert find_payload(report, "worker", 1, "batched") is not None
    assert "## Against the bound" not in render_markdown(report)


def test_plan_sweeps_every_model_for_the_worker_and_once_per_encoding_for_the_echo() -> None:
    plan = Plan(
        qos_levels=[1, 0],
        payloads=[PayloadPlan("single", 1, [1000], [8], encodings=["json"]), PayloadPlan("batched", 64, [1000], [8])],
        models=["lstm", "ann"], encodings=["json", "binary"], variant_qos=[1],
    )
    names = lambda target, qos: [(v.payload.name, v.model, v.encoding) for v in plan.variants(target, qos)]  # noqa: E731
    assert names("echo", 1) == [("single", "lstm", "json"), ("batched", "lstm", "json"), ("batched", "lstm", "binary")]
    assert names("worker", 1) == [
        ("single", "lstm", "json"), ("single", "ann", "json"), ("batched", "lstm", "json"),
        ("batched", "lstm", "binary"), ("batched", "ann", "json"), ("batched", "ann", "binary"),
    ]
    assert names("worker", 0) == [("single", "lstm", "json"), ("batched", "lstm", "json")]
    quick, full = Plan.quick(), Plan.full()
    assert 1000.0 in quick.fixed_rates and 1000.0 in full.fixed_rates
    # the time budget: at most twice the sweeps of before issue 17 (quick 4, full 8)
    assert sum(len(quick.variants(t, q)) for q in quick.qos_levels for t in quick.targets) <= 8
    assert sum(len(full.variants(t, q)) for q in full.qos_levels for t in full.targets) <= 16


def test_model_cost_figures() -> None:
    figures = summarize_samples([100e-6, 200e-6, 300e-6], [200e-6])
    assert figures["p50_us"] == pytest.approx(200.0) and figures["calls"] == 3
    assert figures["round_p50_us"] == [200.0]
    runs = [{"models": {"lstm": {"64": {"p50_us": 300.0}}}}, {"models": {"lstm": {"64": {"p50_us": 340.0}}}}]
    assert merge_runs(runs) == {"lstm": {"64": 320.0}}


def test_binary_requests_carry_the_same_windows_as_json_ones_and_ask_for_binary_answers() -> None:
    from benchmarks.loadgen import request_bodies
    from contract.oip import decode_request

    for windows in (1, 64):
        json_bodies = request_bodies(windows, 6, 1, variants=3)
        binary_bodies = request_bodies(windows, 6, 1, variants=3, encoding="binary")
        for index, (json_body, binary_body) in enumerate(zip(json_bodies, binary_bodies, strict=True)):
            as_json = decode_request(b'{"id":"lg-' + str(index).encode() + json_body, max_bytes=2**20, max_windows=64)
            as_binary = decode_request(b'{"id":"lg-' + str(index).encode() + binary_body, max_bytes=2**20,
                                       max_windows=64)
            assert as_binary.id == as_json.id == f"lg-{index}"
            assert (as_binary.windows == as_json.windows).all() and as_binary.windows.shape == (windows, 6, 1)
            assert as_json.binary_answer is None and as_binary.binary_answer is not None
    with pytest.raises(ValueError):
        request_bodies(1, 6, 1, encoding="protobuf")
