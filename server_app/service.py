"""The data plane: tenant + model + windows -> forecasts. No MQTT, no JSON.

Requests of one batch are grouped by model version; each group is one batched invoke.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from contract.errors import InternalError, InvalidWindow, RateLimited, RequestError, TooLarge
from contract.oip import SeriesInfo
from server_app.limits import RateLimiter
from server_app.runtime import LoadedModel
from server_app.state import ServingState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    tenant: str
    model: str
    id: str | None
    windows: np.ndarray  # [n, window_length, features] float32
    normalized: bool
    series: SeriesInfo | None = None  # where the windows come from (quality tracking, canary choice)


@dataclass(slots=True)
class Prediction:
    model_name: str
    model_version: int
    forecasts: np.ndarray  # [n, outputs]; raw units unless the request was normalised
    compute_s: float  # the batched invoke this prediction was part of (normalise to denormalise)
    role: str = "live"  # "live", or "canary" for a canary version's answer
    shadow: Prediction | None = None  # the tenant's shadow version on the same windows (never sent)


Outcome = Prediction | RequestError


def in_canary(series: str, fraction: float) -> bool:
    """Stable per series (not per process: no PYTHONHASHSEED), so a series never flips versions."""
    digest = hashlib.blake2b(series.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


class InferenceService:
    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self._limiter = limiter or RateLimiter()

    def _admit(self, state: ServingState, request: Request) -> LoadedModel:
        model = state.route(request.tenant, request.model)
        length, features = model.window_shape
        _, got_length, got_features = request.windows.shape
        if got_length != length or got_features != features:
            raise InvalidWindow(
                f"window must have {length} steps of {features} feature(s), got {got_length} of {got_features}"
            )
        tenant = state.policy.tenants[request.tenant]
        cost = request.windows.shape[0]
        capacity = self._limiter.capacity(tenant.rate_limit_per_s, tenant.burst)
        if cost > capacity:
            # Waiting would never help: say so instead of inviting a retry that cannot pass.
            raise TooLarge(
                f"{cost} windows in one message exceed tenant {request.tenant!r}'s burst of {capacity:g} windows; "
                "send at most that many per message"
            )
        if not self._limiter.allow(request.tenant, tenant.rate_limit_per_s, tenant.burst, cost):
            raise RateLimited(
                f"tenant {request.tenant!r} exceeds its rate limit of {tenant.rate_limit_per_s:g} windows/s"
            )
        return model

    def predict(self, state: ServingState, requests: list[Request]) -> list[Outcome]:
        """Admit each request, run one invoke per model version, and the tenants' shadow
        versions on the windows of requests that name their series."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        groups: dict[int, tuple[LoadedModel, str, list[int]]] = {}
        shadow_groups: dict[int, tuple[LoadedModel, str, list[int]]] = {}
        for index, request in enumerate(requests):
            try:
                model = self._admit(state, request)
            except RequestError as exc:
                outcomes[index] = exc
                continue
            role = "live"
            key = (request.tenant, request.model)
            canary = state.canaries.get(key)
            if canary is not None and request.series is not None and in_canary(request.series.series, canary[1]):
                model, role = canary[0], "canary"
            groups.setdefault(id(model), (model, role, []))[2].append(index)
            shadow = state.shadows.get(key)
            if shadow is not None and request.series is not None and not request.normalized:
                shadow_groups.setdefault(id(shadow), (shadow, "shadow", []))[2].append(index)

        for model, role, indexes in groups.values():
            for i, outcome in zip(indexes, self._run(model, role, requests, indexes), strict=True):
                outcomes[i] = outcome
        for model, role, indexes in shadow_groups.values():
            for i, outcome in zip(indexes, self._run(model, role, requests, indexes), strict=True):
                answered = outcomes[i]
                if isinstance(answered, Prediction) and isinstance(outcome, Prediction):
                    answered.shadow = outcome
        return [outcome if outcome is not None else InternalError("no outcome") for outcome in outcomes]

    @staticmethod
    def _run(model: LoadedModel, role: str, requests: list[Request], indexes: list[int]) -> list[Outcome]:
        """One batched invoke for the requests at `indexes`; an outcome for each."""
        # Normalise and denormalise once per group (the common case: every request raw).
        all_raw = not any(requests[i].normalized for i in indexes)
        windows = [requests[i].windows for i in indexes]
        started = time.perf_counter()
        try:
            batch = windows[0] if len(windows) == 1 else np.concatenate(windows)
            if all_raw:
                forecasts = model.denormalize(model.predict_normalized(model.normalize(batch)))
            else:
                mixed = [
                    w if requests[i].normalized else model.normalize(w) for i, w in zip(indexes, windows, strict=True)
                ]
                forecasts = model.predict_normalized(np.concatenate(mixed))
        except Exception as exc:  # a failing invoke answers its group, never kills the worker
            log.exception("invoke failed for %s/%d", model.name, model.version)
            return [InternalError(f"inference failed: {type(exc).__name__}") for _ in indexes]
        compute_s = time.perf_counter() - started
        results: list[Outcome] = []
        start = 0
        for i in indexes:
            count = requests[i].windows.shape[0]
            part = forecasts[start : start + count]
            start += count
            if not all_raw and not requests[i].normalized:
                part = model.denormalize(part)
            results.append(Prediction(model.name, model.version, part, compute_s, role))
        return results

    def forget_tenants_except(self, tenants: set[str]) -> None:
        self._limiter.forget_except(tenants)
