"""Between the worker and the quality tracker: feed it each answered request that names its
series and time, publish its alarms, mirror its scores into metrics. Serving thread only.

Published (retained, JSON): `tenants/<t>/models/<m>/quality` for the tenant and
`service/quality/<t>/<m>` for operators, on every alarm change and at most once a second
while scores move. Each alarm is also a log line (WARNING raised, INFO cleared) and a metric.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import orjson

from contract import topics
from contract.actuals import Actual
from server_app.config import QualityConfig
from server_app.metrics import Metrics
from server_app.quality import QualityEvent, QualityTracker
from server_app.service import Prediction, Request
from server_app.state import ServingState

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 1.0


class QualityFeed:
    def __init__(
        self,
        config: QualityConfig,
        metrics: Metrics,
        publish: Callable[[str, bytes], None],
        promote: Callable[[str, str, int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = QualityTracker(config)
        self._metrics = metrics
        self._publish = publish
        self._promote = promote
        self._clock = clock
        self._next_publish = 0.0
        self._series_dropped_exported = 0
        # What other threads (the console) may read: replaced whole, never mutated in place.
        self.latest: dict[tuple[str, str], dict[str, object]] = {}

    def configure(self, config: QualityConfig, tenants: set[str]) -> None:
        self.tracker.configure(config)
        self.tracker.forget_except(tenants)

    def after_prediction(self, request: Request, prediction: Prediction) -> None:
        """O(pending) for one answered request; nothing unless it names its series and time."""
        info = request.series
        if info is None or not info.timed or request.normalized:
            return
        assert info.time is not None and info.step_s is not None
        if not self.tracker.config.enabled:
            return
        forecasts = [(prediction.model_version, prediction.role, float(prediction.forecasts[-1, 0]))]
        if prediction.shadow is not None:
            shadow = prediction.shadow
            forecasts.append((shadow.model_version, "shadow", float(shadow.forecasts[-1, 0])))
        events = self.tracker.observe(
            request.tenant, request.model, info.series, info.time, info.step_s, request.windows[:, :, 0], forecasts
        )
        for event in events:
            self._on_event(event)

    def actuals(self, tenant: str, actuals: list[Actual]) -> None:
        """Readings from the tenant's actuals topic (`tenants/<t>/actuals`)."""
        if not self.tracker.config.enabled:
            return
        for actual in actuals:
            for event in self.tracker.observe_actual(tenant, actual.series, actual.time, actual.value):
                self._on_event(event)

    def _on_event(self, event: QualityEvent) -> None:
        if event.kind == "promote":
            log.warning(
                "promoting %s version %d for tenant %s: its MAE %.4g beats the live version %s (%.4g)",
                event.model, event.version, event.tenant, event.detail["shadow_mae"], event.detail["from"],
                event.detail["live_mae"],
            )
            self._promote(event.tenant, event.model, event.version)
        elif event.kind == "alarm":
            log.warning(
                "quality alarm: tenant %s model %s version %d (%s): skill %s, MAE %s",
                event.tenant, event.model, event.version, ", ".join(event.detail.get("reasons", [])),
                event.detail.get("skill"), event.detail.get("mae"),
            )
            self._metrics.count_drift(event.tenant, event.model, event.version, self.tracker.config.drift_detector)
        else:
            log.info("quality alarm cleared: tenant %s model %s version %d", event.tenant, event.model, event.version)
        self._announce(event.tenant, event.model)

    def _announce(self, tenant: str, model: str) -> None:
        body = self.tracker.describe(tenant, model)
        self.latest = {**self.latest, (tenant, model): body}
        payload = orjson.dumps(body)
        self._publish(topics.quality_topic(tenant, model), payload)
        self._publish(topics.service_quality_topic(tenant, model), payload)
        self.tracker.changed.discard((tenant, model))

    def flush(self) -> None:
        """Called every serving-loop turn: publish and mirror moved scores at most once a second."""
        now = self._clock()
        if now < self._next_publish or not self.tracker.changed:
            return
        self._next_publish = now + PUBLISH_INTERVAL_S
        dropped = self.tracker.series_dropped - self._series_dropped_exported
        if dropped:
            self._metrics.series_dropped.inc(dropped)
            self._series_dropped_exported = self.tracker.series_dropped
        for (tenant, model, version, role), score in self.tracker.scores().items():
            if (tenant, model) in self.tracker.changed and len(score) > 0:
                self._metrics.set_quality(tenant, model, version, mae=score.mae, persistence_mae=score.persistence_mae)
                if role == "live":
                    self._metrics.declare_drift(tenant, model, version, self.tracker.config.drift_detector)
        for tenant, model in sorted(self.tracker.changed):
            self._announce(tenant, model)


def promoted(state: ServingState, tenant: str, model: str, version: int) -> ServingState | None:
    """The state with (tenant, model) answered by its shadow `version` (None if that is not the shadow)."""
    shadow = state.shadows.get((tenant, model))
    if shadow is None or shadow.version != version:
        return None
    routes = {**state.routes, (tenant, model): shadow}
    shadows = {key: value for key, value in state.shadows.items() if key != (tenant, model)}
    return dataclasses.replace(state, routes=routes, shadows=shadows)
