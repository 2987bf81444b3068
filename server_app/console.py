"""The live console: a page on the health port showing what this worker is doing.

Two halves, so that the serving loop never pays for the page:

- :class:`ConsoleStats`, fed by the serving thread with ONE call per answer
  (:meth:`ConsoleStats.record`): a few dict and deque operations under one uncontended lock,
  O(1), bounded memory (per tenant and model: a fixed ring of per-second counts, the last
  ``latency_samples`` latencies, the last ``forecast_points`` forecasts). Labels are the
  worker's already sanitised ones (configured names or ``<unknown>``), codes the fixed wire
  set, so the number of series is bounded by the configuration.
- :func:`console_routes`: the HTTP side. The JSON (``/console.json``) is built on the health
  server's thread from a snapshot (copies taken under the lock, then percentiles, rates and
  the worker's state computed outside it); the page (``/``) and the vendored charting
  library (uPlot, MIT, ``console_static/``) are static bytes read once.

The page reveals tenant names and traffic: it is served on the same address as /metrics
(``health.host``, loopback by default) and switched off with ``health.console: false``.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from server_app.service import Outcome, Prediction
from server_app.supervisor import CONSOLE_PEERS_ENV

if TYPE_CHECKING:
    from server_app.worker import Worker

SCHEMA_VERSION = 1
RATE_SLOTS = 64  # seconds of per-second answer counts kept (ring)
RATE_WINDOW_S = 5  # answers per second: the mean over the last complete seconds
RATE_HISTORY_S = 60  # seconds of answers/s the page charts
DEFAULT_LATENCY_SAMPLES = 1024
DEFAULT_FORECAST_POINTS = 120
PEER_TIMEOUT_S = 1.0  # another worker's view: loopback, so a slow answer means a stuck worker

Route = Callable[[], tuple[bytes, str]]


class _Series:
    """One tenant and model: written by the serving thread under the collector's lock."""

    __slots__ = ("actuals", "codes", "counts", "forecasts", "latencies", "stamps", "version")

    def __init__(self, latency_samples: int, forecast_points: int) -> None:
        self.codes: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=latency_samples)
        self.stamps = [-1] * RATE_SLOTS  # which second each slot counts
        self.counts = [0] * RATE_SLOTS
        # (at on the monotonic clock, value, version)
        self.forecasts: deque[tuple[float, float, int]] = deque(maxlen=forecast_points)
        self.actuals: deque[tuple[float, float]] = deque(maxlen=forecast_points)
        self.version: int | None = None  # the version of the last answer with a forecast


class ConsoleStats:
    """Thread-safe per-tenant, per-model answer statistics for the console."""

    def __init__(
        self,
        *,
        latency_samples: int = DEFAULT_LATENCY_SAMPLES,
        forecast_points: int = DEFAULT_FORECAST_POINTS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if latency_samples < 1 or forecast_points < 1:
            raise ValueError("latency_samples and forecast_points must be >= 1")
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._latency_samples = latency_samples
        self._forecast_points = forecast_points
        self._clock = clock
        self._wall = wall_clock
        # Monotonic and wall clock at the same instant: per-second slots are stamped on the
        # monotonic clock (immune to clock steps) and shown in wall time.
        self._started = clock()
        self._started_wall = wall_clock()
        self._reloads = 0
        self._last_reload: tuple[float, str] | None = None

    @property
    def started_at(self) -> float:
        return self._started_wall

    # -- the serving thread's side (keep it O(1) and cheap) -------------------------------
    def record(self, tenant: str, model: str, outcome: Outcome, received_at: float) -> None:
        """One answer: `tenant`/`model` are configured names or a fixed placeholder (never a
        client-chosen string), `received_at` the request's arrival on the monotonic clock.

        Per answer on the serving thread: one clock read (forecasts are stamped on the
        monotonic clock and shown in wall time at snapshot, like the rates), no numpy scalar."""
        now = self._clock()
        second = int(now)
        slot = second % RATE_SLOTS
        with self._lock:
            series = self._series.get((tenant, model))
            if series is None:
                series = self._series[(tenant, model)] = _Series(self._latency_samples, self._forecast_points)
            series.latencies.append(now - received_at)
            if series.stamps[slot] != second:
                series.stamps[slot] = second
                series.counts[slot] = 0
            series.counts[slot] += 1
            codes = series.codes
            if isinstance(outcome, Prediction):
                codes["ok"] = codes.get("ok", 0) + 1
                series.version = outcome.model_version
                forecasts = outcome.forecasts
                if forecasts.size:
                    series.forecasts.append((now, forecasts.item(0), outcome.model_version))
            else:
                codes[outcome.code] = codes.get(outcome.code, 0) + 1

    def record_actual(self, tenant: str, model: str, at: float, value: float) -> None:
        """The observed value a forecast of (tenant, model) predicted, at wall time `at`: for the
        quality work (forecasts resolved against the series' next reading). Unused until then."""
        with self._lock:
            series = self._series.get((tenant, model))
            if series is not None:
                series.actuals.append((at, value))

    def reload_result(self, result: str) -> None:
        """A reload's outcome (``applied``, ``config_rejected``, ``error``): reload thread."""
        with self._lock:
            self._reloads += 1
            self._last_reload = (self._wall(), result)

    # -- the HTTP thread's side -----------------------------------------------------------
    def snapshot(self, tenants: set[str] | None = None) -> dict[str, Any]:
        """Statistics as plain data. `tenants`: the configured ones (others, left from before a
        reload, are not shown; the placeholder for unknown names always is)."""
        now = self._clock()
        with self._lock:
            if tenants is not None:
                for key in [key for key in self._series if key[0] not in tenants and not key[0].startswith("<")]:
                    del self._series[key]
            copies = [
                (
                    tenant, model, dict(series.codes), list(series.latencies), list(series.stamps),
                    list(series.counts), list(series.forecasts), list(series.actuals), series.version,
                )
                for (tenant, model), series in self._series.items()
            ]
            reloads, last_reload = self._reloads, self._last_reload
        offset = self._started_wall - self._started  # monotonic -> wall
        current = int(now)
        result: dict[str, dict[str, Any]] = {}
        for tenant, model, codes, latencies, stamps, counts, forecasts, actuals, version in sorted(copies):
            per_second = dict(zip(stamps, counts, strict=True))
            recent = [per_second.get(second, 0) for second in range(current - RATE_WINDOW_S, current)]
            history = [
                [second + offset, per_second.get(second, 0)]
                for second in range(current - RATE_HISTORY_S, current)
            ]
            latencies.sort()
            answers = sum(codes.values())
            result.setdefault(tenant, {})[model] = {
                "answers": answers,
                "ok": codes.get("ok", 0),
                "errors": {code: count for code, count in sorted(codes.items()) if code != "ok"},
                "error_count": answers - codes.get("ok", 0),
                "rate_per_s": round(sum(recent) / RATE_WINDOW_S, 3),
                "rate_history": history,
                "p50_ms": _percentile_ms(latencies, 0.50),
                "p99_ms": _percentile_ms(latencies, 0.99),
                "latency_samples": len(latencies),
                "version": version,
                "shadow": None,  # filled by the quality work (issue 14): versions scored without answering
                "canary": None,
                "skill": None,  # model MAE / persistence MAE once forecasts are resolved
                "forecasts": [[at + offset, value, served_by] for at, value, served_by in forecasts],
                "actuals": [[at, value] for at, value in actuals],
            }
        return {
            "tenants": result,
            "reload": {
                "count": reloads,
                "last_at": last_reload[0] if last_reload else None,
                "last_result": last_reload[1] if last_reload else None,
            },
        }


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return round(ordered[rank] * 1000.0, 3)


def worker_view(worker: Worker) -> dict[str, Any]:
    """This worker as the console shows it: identity, broker, models, reloads, queue, traffic."""
    state = worker._state  # an immutable snapshot: safe to read from this thread
    reloader = worker._reloader
    broker = worker._broker
    stats = worker.console
    described: dict[str, Any] = state.describe() if state is not None else {}
    routes: dict[str, int] = described.get("routes", {})
    traffic = stats.snapshot(set(state.policy.tenants) if state is not None else None)
    tenants: dict[str, dict[str, Any]] = traffic["tenants"]
    quality = worker.quality_snapshot()
    if state is not None:  # every configured route appears, with traffic or not
        for tenant_id, tenant in state.policy.tenants.items():
            for model in tenant.models:
                entry = tenants.setdefault(tenant_id, {}).setdefault(model, _idle_entry())
                entry["version"] = routes.get(f"{tenant_id}/{model}", entry["version"])
                scored = quality.get((tenant_id, model))
                _add_quality(entry, described, f"{tenant_id}/{model}", scored)
    ready, ready_detail = worker.ready()
    now = time.time()
    return {
        "worker": worker.worker_id,
        "started_at": stats.started_at,
        "uptime_s": round(now - stats.started_at, 3),
        "ready": ready,
        "ready_detail": ready_detail,
        "broker": {
            "host": broker.host,
            "port": broker.port,
            "connected": worker.transport.connected.is_set(),
            "subscribed": worker.transport.subscribed.is_set(),
        },
        "models": described.get("models", {}),
        "failures": described.get("failures", {}),
        "missing": described.get("missing", {}),
        "reload": {**traffic["reload"], "config_error": reloader.config_error},
        "queue_depth": len(worker.inbox),
        "tenants": {tenant: tenants[tenant] for tenant in sorted(tenants)},
    }


def _add_quality(entry: dict[str, Any], described: dict[str, Any], route: str, scored: dict[str, Any] | None) -> None:
    """Skill, alarm, shadow and canary of one route, from the quality tracker's last message."""
    versions: list[dict[str, Any]] = scored.get("versions", []) if scored else []

    def skill_of(version: Any, role: str) -> Any:
        return next((v.get("skill") for v in versions if v["version"] == version and v["role"] == role), None)

    entry["skill"] = skill_of(entry["version"], "live")
    entry["alarm"] = bool(scored and scored.get("alarm"))
    shadow = described.get("shadows", {}).get(route)
    entry["shadow"] = None if shadow is None else {"version": shadow, "skill": skill_of(shadow, "shadow")}
    canary = described.get("canaries", {}).get(route)
    entry["canary"] = None if canary is None else {**canary, "skill": skill_of(canary["version"], "canary")}


def _idle_entry() -> dict[str, Any]:
    return {
        "answers": 0, "ok": 0, "errors": {}, "error_count": 0, "rate_per_s": 0.0, "rate_history": [],
        "p50_ms": None, "p99_ms": None, "latency_samples": 0, "version": None, "shadow": None, "canary": None,
        "skill": None, "forecasts": [], "actuals": [],
    }


def console_document(workers: list[dict[str, Any]], aggregation: str) -> dict[str, Any]:
    """The JSON the page polls: every worker this one knows of, itself first."""
    return {"schema": SCHEMA_VERSION, "generated_at": time.time(), "aggregation": aggregation, "workers": workers}


def _static(name: str) -> bytes:
    return resources.files("server_app").joinpath("console_static", name).read_bytes()


STATIC_TYPES = {
    "console.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def console_peers() -> list[int]:
    """Health ports of the workers of this supervisor (``--workers N``), from its environment."""
    text = os.environ.get(CONSOLE_PEERS_ENV, "")
    return [int(part) for part in text.split(",") if part.strip().isdigit()]


def peer_view(host: str, port: int, timeout_s: float = PEER_TIMEOUT_S) -> dict[str, Any]:
    """Another worker's own view (its /console/self.json), or a stub saying why it is missing."""
    try:
        with urllib.request.urlopen(f"http://{_url_host(host)}:{port}/console/self.json", timeout=timeout_s) as answer:
            view: dict[str, Any] = orjson.loads(answer.read())
            return view
    except (OSError, ValueError) as exc:
        return {"worker": f"{host}:{port}", "unreachable": str(exc)[:200], "tenants": {}}


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def console_routes(worker: Worker) -> dict[str, Route]:
    """Paths the health server adds: the page, its JSON and its static files.

    Under a supervisor (``--workers N``) /console.json also holds every sibling worker's view,
    fetched on this HTTP thread from their /console/self.json (loopback, short timeout)."""
    files = {name: (_static(name), content_type) for name, content_type in STATIC_TYPES.items()}
    peers = console_peers()
    host = worker.config.health.host

    def own() -> tuple[bytes, str]:
        return orjson.dumps(worker_view(worker)), "application/json"

    def document() -> tuple[bytes, str]:
        views = [worker_view(worker)]
        views += [peer_view(host, port) for port in peers if port != worker.health_port]
        aggregation = f"{len(peers)} workers of one supervisor" if len(peers) > 1 else "single worker"
        return orjson.dumps(console_document(views, aggregation)), "application/json"

    routes: dict[str, Route] = {
        "/": _constant(files["console.html"]),
        "/console.json": document,
        "/console/self.json": own,
    }
    for name, content in files.items():
        routes[f"/console/{name}"] = _constant(content)
    return routes


def _constant(content: tuple[bytes, str]) -> Route:
    return lambda: content
