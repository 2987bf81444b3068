"""The command line: help, exit codes, output streams, SIGINT, against the echo responder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from client_app.cli import main
from tests.client.conftest import STATION, EchoResponder, tenant_json
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def summary_of(stderr: str) -> dict[str, Any]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("SUMMARY "), f"last stderr line is not SUMMARY:\n{stderr}"
    body: dict[str, Any] = json.loads(lines[-1].removeprefix("SUMMARY "))
    return body


def tenant_file(tmp_path: Path, port: int, data: Path, **changes: Any) -> Path:
    config: dict[str, Any] = {
        "tenant": "acme",
        "model": "lstm",
        "broker": {"host": "127.0.0.1", "port": port},
        "data": str(data),
        "station": STATION,
        "rate": 50,
        "request_timeout_s": 3,
    }
    config.update(changes)
    return tenant_json(tmp_path / "tenant.json", **config)


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--config", "--mode", "--rate", "--count", "--duration", "--batch", "--quiet", "--summary-json",
                 "stream", "no-wait", "bulk", "SUMMARY", "exit status"):
        assert word in text


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tenant_json(tmp_path / "bad.json", tenant="acme", model="lstm", data="x.csv", window=0)
    assert main(["--config", str(path)]) == 2
    assert f"error: {path}: window: Input should be greater than 0" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.json")]) == 2
    course = tenant_json(tmp_path / "course.json", tenant="course", model="lstm", data="x.csv", format="tutorial",
                         in_queue="i", out_queue="o", normalization={"offset": 0, "scale": 1})
    assert main(["--config", str(course), "--mode", "bulk"]) == 2
    assert "bulk mode needs format oip" in capsys.readouterr().err


def test_bad_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tenant_file(tmp_path, 1883, tmp_path / "nothere.csv")
    assert main(["--config", str(path)]) == 2
    assert "nothere.csv: no such file" in capsys.readouterr().err


def test_unreachable_broker_exits_3(tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tenant_file(tmp_path, free_port(), sample_csv)
    assert main(["--config", str(path), "--mode", "wait"]) == 3
    assert "error: cannot reach the broker at 127.0.0.1:" in capsys.readouterr().err


@pytest.mark.integration
def test_bulk_prints_a_json_array_and_the_summary_on_stderr(
    mosquitto: MosquittoBroker, echo: EchoResponder, tmp_path: Path, sample_csv: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tenant_file(tmp_path, mosquitto.port, sample_csv)
    summary_path = tmp_path / "summary.json"
    code = main(["--config", str(path), "--mode", "bulk", "--count", "100", "--summary-json", str(summary_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    forecasts = json.loads(captured.out)
    assert len(forecasts) == 100 and all(isinstance(v, float) for v in forecasts)
    summary = summary_of(captured.err)
    assert (summary["sent"], summary["windows_sent"], summary["answered"], summary["unanswered"]) == (2, 100, 2, 0)
    assert json.loads(summary_path.read_text()) == summary


@pytest.mark.integration
def test_sigint_stops_a_stream_cleanly(
    mosquitto: MosquittoBroker, echo: EchoResponder, tmp_path: Path, sample_csv: Path
) -> None:
    path = tenant_file(tmp_path, mosquitto.port, sample_csv, rate=20)
    process = subprocess.Popen(
        [sys.executable, "-m", "client_app", "--config", str(path), "--mode", "stream"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        assert all(" forecast " in line for line in lines), lines
        sent_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        assert time.monotonic() - sent_at < 4
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    summary = summary_of(err)
    assert summary["stopped_early"] is True
    assert summary["sent"] == summary["answered"] >= 5
    assert summary["unanswered"] == 0 and summary["errors"] == 0
    assert summary["sent"] < 194  # the data was not exhausted
    assert "Traceback" not in err
