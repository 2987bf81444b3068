"""Prometheus metrics of one worker, in its own registry (no process-wide globals).

Conventions (https://prometheus.io/docs/practices/naming/): base units (seconds, bytes),
counters end in ``_total``, durations are histograms (they aggregate across replicas;
summaries do not). Label values are bounded: tenant and model only from the configured
names (the worker passes ``<unknown>`` for anything else), version only from versions
that loaded, reasons and codes from fixed sets. Every metric is documented in one table in
the README ("Observability"); tests/integration/test_metrics_scrape.py keeps the two in step.

The worker calls methods, never the metric objects, so names, labels and buckets live here:

- :meth:`Metrics.observe_answer` once per answer (the histograms' counts equal the answers);
- :meth:`Metrics.observe_batch` once per micro-batch with requests;
- :meth:`Metrics.loop_turn` once per turn of the serving loop (saturation);
- :meth:`Metrics.observe_queue`, :meth:`Metrics.count_shed`, :meth:`Metrics.observe_state`.

Saturation, precisely: the serving loop is one thread that alternates between *waiting*
(a socket poll entered with an empty inbox: nothing to do until a request arrives, at most
50 ms) and *working* (everything else: reading a backlog, decoding, admission, invoke,
encoding, publishing). ``inference_loop_busy_seconds_total`` adds up the working time and
``inference_loop_seconds_total`` the wall time of the same turns, so over any range
``rate(busy) / rate(loop)`` is the busy fraction, 0 (idle) to 1 (a backlog on every turn:
requests arrive faster than this worker serves them). ``inference_loop_saturation_ratio``
is the same fraction over the last completed 10 s window, for readers without PromQL.

Room for the quality signals (issue 14): :meth:`Metrics.set_quality` and
:meth:`Metrics.count_drift` feed the ``inference_forecast_*`` and
``inference_drift_alarms_total`` families, declared here so that dashboards and alerts can
name them before the first value exists. Add new quality metrics beside them, here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from server_app.metric_families import PerAnswer

if TYPE_CHECKING:
    from server_app.state import ServingState

# No `*_created` series beside every counter and histogram: they double the series and no
# query here reads them (process-wide; the worker process has no other registry).
disable_created_metrics()

UNKNOWN = "<unknown>"
SATURATION_WINDOW_S = 10.0

# Seconds. Receive to publish reaches the latency budget (2 s by default) under overload.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COMPUTE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_MESSAGE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_WINDOW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

# Why the worker answered `overloaded` (count_shed): refused on arrival (inbox full, or the
# expected wait over worker.latency_budget_ms), or expired (waited in the inbox past it).
SHED_REASONS = ("admission", "expired")


class _Children:
    """labels() costs more than inc()/observe(): cache the children of one metric."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        if self._cache.pop(values, None) is not None:
            self._metric.remove(*values)


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = r = CollectorRegistry()
        self._clock = clock
        # -- answers and requests ------------------------------------------------------------
        # Per answer: the cheap families of PerAnswer (exported as prometheus_client's would be).
        self.answers = PerAnswer(
            "counter", "inference_answers",
            "Answers published, by tenant, model and outcome code (ok or an error code)",
            ["tenant", "model", "code"], r,
        )
        self.request_duration = PerAnswer(
            "histogram", "inference_request_duration_seconds",
            "Receive to publish inside the worker, every answer (ok and errors)",
            ["tenant", "model"], r, REQUEST_BUCKETS,
        )
        self.queue_duration = PerAnswer(
            "histogram", "inference_queue_duration_seconds",
            "Receive to the start of the micro-batch that served the request (waiting in the worker's inbox)",
            ["tenant", "model"], r, REQUEST_BUCKETS,
        )
        self.compute_duration = PerAnswer(
            "histogram", "inference_compute_duration_seconds",
            "The batched invoke (normalise, model, denormalise) that produced each forecast answer",
            ["model", "version"], r, COMPUTE_BUCKETS,
        )
        self.windows = PerAnswer("counter", "inference_windows", "Windows forecast", ["model", "version"], r)
        self.shed = Counter(
            "inference_shed",
            "Requests answered `overloaded` by the worker: admission (refused on arrival), expired (waited too long)",
            ["reason"], registry=r,
        )
        self.dropped = Counter(
            "inference_dropped_messages", "Messages that could not be tied to any tenant", registry=r
        )
        self.duplicates = Counter(
            "inference_duplicate_requests",
            "Broker redeliveries (DUP) of requests this process already answered: acknowledged, not answered again",
            registry=r,
        )
        self.retained = Counter(
            "inference_retained_requests", "Retained messages on request topics, refused", registry=r
        )
        self.answers_refused = Counter(
            "inference_answers_refused", "Answers the broker refused (MQTT 5 PUBACK reason >= 0x80), by reason",
            ["reason"], registry=r,
        )
        # -- batches, queue, saturation ------------------------------------------------------
        self.batch_messages = Histogram(
            "inference_batch_messages", "Requests per micro-batch (messages decoded and admitted to the data plane)",
            buckets=BATCH_MESSAGE_BUCKETS, registry=r,
        )
        self.batch_windows = Histogram(
            "inference_batch_windows", "Windows per micro-batch (all requests of the batch, every model)",
            buckets=BATCH_WINDOW_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth",
            "Requests received and not yet answered (the inbox, after each turn of the serving loop)",
            registry=r,
        )
        self.queue_bytes = Gauge("inference_queue_bytes", "Payload bytes in the inbox", registry=r)
        self.queue_capacity = Gauge(
            "inference_queue_capacity", "Requests the inbox holds at most (worker.queue_size)", registry=r
        )
        self.queue_capacity_bytes = Gauge(
            "inference_queue_capacity_bytes", "Payload bytes the inbox holds at most (worker.queue_bytes)", registry=r
        )
        self.loop_busy = PerAnswer(  # per turn of the serving loop: as cheap as the per-answer families
            "counter", "inference_loop_busy_seconds",
            "Time the serving loop worked (not waiting on an empty inbox); rate() is the busy fraction", (), r,
        )
        self.loop_time = PerAnswer(
            "counter", "inference_loop_seconds",
            "Wall time of the serving loop's turns (the denominator of saturation)", (), r,
        )
        self._loop_busy, self._loop_time = self.loop_busy.labels(), self.loop_time.labels()
        self.saturation = Gauge(
            "inference_loop_saturation_ratio",
            f"Busy fraction of the serving loop over the last completed {SATURATION_WINDOW_S:g} s window (0..1)",
            registry=r,
        )
        # -- models and reloads --------------------------------------------------------------
        self.reloads = Counter("inference_reloads", "State reloads by result", ["result"], registry=r)
        self.model_loads = Counter(
            "inference_model_loads",
            "Model versions loaded (result=loaded) or that failed to load (result=failed), counted once each",
            ["model", "result"], registry=r,
        )
        self.model_loaded = Gauge(
            "inference_model_loaded", "1 for every model version loaded and serving in this worker",
            ["model", "version"], registry=r,
        )
        self.model_default_version = Gauge(
            "inference_model_default_version",
            "Version a model serves to tenants that do not pin one (0: no loadable version)",
            ["model"], registry=r,
        )
        # -- quality (issue 14): declared now, set by the quality tracker ---------------------
        self.forecast_mae = Gauge(
            "inference_forecast_mae",
            "Rolling mean absolute error of resolved forecasts, raw units (forecaster: model or persistence)",
            ["tenant", "model", "version", "forecaster"], registry=r,
        )
        self.forecast_skill = Gauge(
            "inference_forecast_skill_ratio",
            "Model MAE / persistence MAE on the same windows (above 1: worse than repeating the last reading)",
            ["tenant", "model", "version"], registry=r,
        )
        self.drift_alarms = Counter(
            "inference_drift_alarms", "Change-detector alarms on the forecast error, by detector",
            ["tenant", "model", "version", "detector"], registry=r,
        )
        self.series_dropped = Counter(
            "inference_quality_series_dropped",
            "Series the quality tracker forgot (least recently seen) to stay within quality.max_series",
            registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

        # (tenant, model, code) -> its answer counter, request and queue histograms: one lookup per answer
        self._per_answer: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._compute_children: dict[tuple[str, int], Any] = {}  # (model, version) -> (histogram, windows)
        self._loaded_children = _Children(self.model_loaded)
        self._loaded: set[tuple[str, int]] = set()
        self._failed: set[tuple[str, int]] = set()
        self._queue_gauges = (self.queue_depth, self.queue_bytes, self.queue_capacity, self.queue_capacity_bytes)
        self._queue_values: tuple[int, ...] = (-1, -1, -1, -1)  # last set (none yet: every gauge is set once)
        self._window_start = clock()
        self._window_busy = 0.0

    # -- per answer ------------------------------------------------------------------------
    def observe_answer(
        self,
        tenant: str,
        model: str,
        code: str,
        total_s: float,
        queue_s: float | None = None,
        version: int | None = None,
        compute_s: float | None = None,
    ) -> None:
        """One answer published: `code` is "ok" or the error code; `total_s` receive to publish.
        `queue_s` when the request reached a micro-batch; `version` and `compute_s` for forecasts.
        tenant and model must be configured names (else UNKNOWN)."""
        key = (tenant, model, code)
        children = self._per_answer.get(key)
        if children is None:
            children = self._per_answer[key] = (
                self.answers.labels(tenant, model, code),
                self.request_duration.labels(tenant, model),
                self.queue_duration.labels(tenant, model),
            )
        answers, request, queue = children
        answers.value += 1.0
        request.observe(total_s)
        if queue_s is not None:
            queue.observe(queue_s)
        if version is not None and compute_s is not None:
            self._per_version(model, version)[0].observe(compute_s)

    def _per_version(self, model: str, version: int) -> tuple[Any, Any]:
        children = self._compute_children.get((model, version))
        if children is None:
            children = self._compute_children[(model, version)] = (
                self.compute_duration.labels(model, str(version)),
                self.windows.labels(model, str(version)),
            )
        return children

    def count_answer(self, tenant: str, model: str, code: str) -> None:
        """The answer counter alone (kept for callers that have no timings)."""
        self.answers.labels(tenant, model, code).inc()

    def count_windows(self, model: str, version: int, count: int) -> None:
        self._per_version(model, version)[1].value += count

    def count_shed(self, reason: str, count: int = 1) -> None:
        """Requests answered `overloaded` by the worker itself; reason one of SHED_REASONS."""
        self.shed.labels(reason).inc(count)

    # -- per batch and loop turn ----------------------------------------------------------
    def observe_batch(self, messages: int, windows: int) -> None:
        self.batch_messages.observe(messages)
        self.batch_windows.observe(windows)

    def observe_queue(self, messages: int, payload_bytes: int, capacity: int, capacity_bytes: int) -> None:
        """Once per turn of the serving loop: a gauge is set only when its value changed."""
        values = (messages, payload_bytes, capacity, capacity_bytes)
        if values == self._queue_values:
            return
        last = self._queue_values
        self._queue_values = values
        for gauge, value, before in zip(self._queue_gauges, values, last, strict=True):
            if value != before:
                gauge.set(value)

    def loop_turn(self, busy_s: float, total_s: float) -> None:
        """One turn of the serving loop: `total_s` wall time, of which `busy_s` working."""
        busy_s = min(max(busy_s, 0.0), total_s)
        self._loop_busy.value += busy_s
        self._loop_time.value += total_s
        self._window_busy += busy_s
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= SATURATION_WINDOW_S:
            self.saturation.set(min(1.0, self._window_busy / elapsed))
            self._window_start, self._window_busy = now, 0.0

    # -- models ----------------------------------------------------------------------------
    def observe_state(self, state: ServingState) -> None:
        """A serving state was swapped in: loaded versions, defaults, new load failures."""
        loaded = set(state.models)
        failed = set(state.failures)
        for name, version in sorted(loaded - self._loaded):
            self.model_loads.labels(name, "loaded").inc()
            self._loaded_children(name, str(version)).set(1)
        for name, version in self._loaded - loaded:
            self._loaded_children.remove(name, str(version))
        for name, _version in sorted(failed - self._failed):
            self.model_loads.labels(name, "failed").inc()
        self._loaded, self._failed = loaded, failed
        for name in state.policy.models:
            default = state.defaults.get(name)
            self.model_default_version.labels(name).set(default.version if default is not None else 0)

    # -- quality (issue 14) ----------------------------------------------------------------
    def set_quality(
        self,
        tenant: str,
        model: str,
        version: int,
        *,
        mae: float,
        persistence_mae: float | None = None,
        skill: float | None = None,
    ) -> None:
        """Rolling quality of (tenant, model, version); names must be configured ones.
        `skill` defaults to mae / persistence_mae when both are known and the latter is > 0."""
        v = str(version)
        self.forecast_mae.labels(tenant, model, v, "model").set(mae)
        if persistence_mae is not None:
            self.forecast_mae.labels(tenant, model, v, "persistence").set(persistence_mae)
            if skill is None and persistence_mae > 0:
                skill = mae / persistence_mae
        if skill is not None:
            self.forecast_skill.labels(tenant, model, v).set(skill)

    def count_drift(self, tenant: str, model: str, version: int, detector: str) -> None:
        """One drift alarm; `detector` from a fixed set (e.g. page_hinkley, adwin)."""
        self.drift_alarms.labels(tenant, model, str(version), detector).inc()

    def declare_drift(self, tenant: str, model: str, version: int, detector: str) -> None:
        """The alarm counter of a scored version, at 0: `increase()` then counts its first alarm."""
        self.drift_alarms.labels(tenant, model, str(version), detector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
