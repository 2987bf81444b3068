"""Log output of the server: `log_format: text` (one human line per event) or `json` (one JSON
object per line, for Loki, Elasticsearch or `kubectl logs | jq`).

A JSON line has `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `process`,
`message`, and, on request-related lines, `tenant`, `model`, `version`, `request_id` and
`trace_id` (from the request's W3C `traceparent` MQTT user property). Request-related
fields are passed with `extra=request_fields(...)`; nothing per request is logged at INFO
or above in normal operation (the worker's per-answer line is DEBUG).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]

# Attributes of a LogRecord that are copied into a JSON line when a caller set them.
REQUEST_FIELDS = ("tenant", "model", "version", "request_id", "trace_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def trace_id(trace: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex trace id>-<16 hex parent>-<flags>`), if valid."""
    for key, value in trace:
        if key == "traceparent":
            parts = value.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32:
                return parts[1]
    return None


def request_fields(
    tenant: str | None,
    model: str | None,
    version: int | None,
    request_id: str | None,
    trace: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """`extra=` for a request-related log line."""
    return {"tenant": tenant, "model": model, "version": version, "request_id": request_id, "trace_id": trace_id(trace)}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks inside the object, as `exception`)."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(body, default=str).decode()


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """The root logger writes to stderr in `log_format`; replaces handlers set before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("amqtt").setLevel(logging.WARNING)
