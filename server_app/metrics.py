"""Prometheus metrics of one worker, in its own registry (no process-wide globals)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.answers = Counter(
            "inference_answers", "Answers published, by tenant, model and outcome code",
            ["tenant", "model", "code"], registry=self.registry,
        )
        self.windows = Counter(
            "inference_windows", "Windows forecast", ["model", "version"], registry=self.registry
        )
        self.dropped = Counter(
            "inference_dropped_messages", "Messages that could not be tied to any tenant", registry=self.registry
        )
        self.duplicates = Counter(
            "inference_duplicate_requests",
            "Broker redeliveries (DUP) of requests this process already answered: acknowledged, not answered again",
            registry=self.registry,
        )
        self.retained = Counter(
            "inference_retained_requests", "Retained messages on request topics, refused", registry=self.registry
        )
        self.answers_refused = Counter(
            "inference_answers_refused", "Answers the broker refused (MQTT 5 PUBACK reason >= 0x80), by reason",
            ["reason"], registry=self.registry,
        )
        self.batch_messages = Histogram(
            "inference_batch_messages", "Messages per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.latency = Histogram(
            "inference_worker_latency_seconds", "Receive to publish, inside the worker",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0), registry=self.registry,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Messages waiting in the inbound queue", registry=self.registry
        )
        # Label values come from configured names only, so these caches stay small.
        self._answer_children: dict[tuple[str, str, str], Any] = {}
        self._window_children: dict[tuple[str, int], Any] = {}
        self.reloads = Counter(
            "inference_reloads", "State reloads by result", ["result"], registry=self.registry
        )

    def count_answer(self, tenant: str, model: str, code: str) -> None:
        """Per-answer counter, children cached (labels() costs more than inc())."""
        key = (tenant, model, code)
        child = self._answer_children.get(key)
        if child is None:
            child = self._answer_children[key] = self.answers.labels(tenant, model, code)
        child.inc()

    def count_windows(self, model: str, version: int, count: int) -> None:
        key = (model, version)
        child = self._window_children.get(key)
        if child is None:
            child = self._window_children[key] = self.windows.labels(model, str(version))
        child.inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
