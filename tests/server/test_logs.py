"""log_format json: one JSON object per line, request fields on request lines (issue 15)."""

from __future__ import annotations

import json
import logging

import pytest

from server_app.config import parse_config
from server_app.logs import configure_logging, request_fields, trace_id

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_request_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json")
    log = logging.getLogger("server_app.worker")
    log.debug("answered ok", extra=request_fields("acme", "lstm", 3, "r-1", (("traceparent", TRACEPARENT),)))
    log.info("serving %s", "x")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("batch failed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines  # a traceback stays inside its line
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "answered ok" and first["level"] == "DEBUG" and first["logger"] == "server_app.worker"
    assert (first["tenant"], first["model"], first["version"], first["request_id"]) == ("acme", "lstm", 3, "r-1")
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "tenant" not in second and second["message"] == "serving x"
    assert "ValueError: boom" in third["exception"]


def test_text_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("server_app").info("hello")
    line = capsys.readouterr().err.strip()
    assert line.endswith("server_app: hello") and not line.startswith("{")


def test_trace_id_of_malformed_traceparent_is_none() -> None:
    assert trace_id((("traceparent", "garbage"),)) is None
    assert trace_id(()) is None


def test_log_format_is_a_config_key() -> None:
    base = "models: {lstm: {repository: m}}\ntenants: {acme: {models: [lstm]}}\n"
    assert parse_config(base).log_format == "text"
    assert parse_config(base + "log_format: json\n").log_format == "json"
    with pytest.raises(Exception, match="log_format"):
        parse_config(base + "log_format: xml\n")
