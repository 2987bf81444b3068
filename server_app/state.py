"""What a worker serves right now: an immutable snapshot of config, loaded models and routes.

A new snapshot is built off the serving thread (loading and warming new versions, reusing
unchanged ones) and swapped in whole; the serving thread reads one snapshot per batch, so a
batch never mixes versions and an old version is released when its last batch finishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import ModelNotAllowed, UnknownModel, UnknownTenant
from server_app.config import ServingPolicy
from server_app.errors import ModelLoadError
from server_app.repository import VersionFolder, list_versions
from server_app.runtime import LoadedModel, load_model_version

log = logging.getLogger(__name__)

ModelKey = tuple[str, int]


def model_max_batch(policy: ServingPolicy, name: str) -> int:
    """Most windows of model `name` per invoke: its own max_batch, else the worker's."""
    return policy.models[name].max_batch or policy.worker.max_batch


@dataclass(frozen=True)
class ServingState:
    policy: ServingPolicy
    models: dict[ModelKey, LoadedModel]
    routes: dict[tuple[str, str], LoadedModel]
    folders: dict[ModelKey, VersionFolder]
    defaults: dict[str, LoadedModel] = field(default_factory=dict)  # version served unless a tenant pins
    failures: dict[ModelKey, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # model name -> why nothing serves it
    # Per (tenant, model): a version scored on the same windows but never answered, and a
    # version answering a stable fraction of the tenant's series.
    shadows: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)
    canaries: dict[tuple[str, str], tuple[LoadedModel, float]] = field(default_factory=dict)

    def route(self, tenant: str, model: str) -> LoadedModel:
        loaded = self.routes.get((tenant, model))
        if loaded is not None:
            return loaded
        tenant_config = self.policy.tenants.get(tenant)
        if tenant_config is None:
            raise UnknownTenant(f"tenant {tenant!r} is not configured")
        if model not in self.policy.models:
            raise UnknownModel(f"model {model!r} is not served")
        if model not in tenant_config.models:
            raise ModelNotAllowed(f"tenant {tenant!r} may not use model {model!r}")
        raise UnknownModel(f"model {model!r} has no loadable version: {self.missing.get(model, 'not loaded')}")

    @property
    def ready(self) -> bool:
        return not self.missing

    def describe(self) -> dict[str, object]:
        """Loaded versions and routes, for the status message and logs."""
        defaults: dict[str, list[int]] = {}
        for name, version in sorted(self.models):
            defaults.setdefault(name, []).append(version)
        return {
            "models": {
                name: {"loaded": versions, "default": self.defaults[name].version if name in self.defaults else None}
                for name, versions in defaults.items()
            },
            "routes": {
                f"{tenant}/{model}": loaded.version for (tenant, model), loaded in sorted(self.routes.items())
            },
            "failures": {f"{name}/{version}": why for (name, version), why in sorted(self.failures.items())},
            "missing": dict(self.missing),
            "shadows": {
                f"{tenant}/{model}": loaded.version for (tenant, model), loaded in sorted(self.shadows.items())
            },
            "canaries": {
                f"{tenant}/{model}": {"version": loaded.version, "fraction": fraction}
                for (tenant, model), (loaded, fraction) in sorted(self.canaries.items())
            },
        }


class StateBuilder:
    """Builds snapshots; remembers failed versions so a broken folder is not reloaded every poll."""

    def __init__(self) -> None:
        self._failed: dict[ModelKey, tuple[float, str]] = {}

    def _load(self, name: str, folder: VersionFolder, policy: ServingPolicy) -> LoadedModel | str:
        key = (name, folder.version)
        failed = self._failed.get(key)
        if failed is not None and failed[0] == folder.stamp:
            return failed[1]
        try:
            loaded = load_model_version(folder.path, name=name, max_batch=model_max_batch(policy, name))
        except ModelLoadError as exc:
            self._failed[key] = (folder.stamp, str(exc))
            log.error("model %s version %d failed to load, previous version keeps serving: %s", *key, exc)
            return str(exc)
        except Exception as exc:  # a broken model file must never take the worker down
            self._failed[key] = (folder.stamp, f"{type(exc).__name__}: {exc}")
            log.exception("model %s version %d failed to load", *key)
            return str(exc)
        self._failed.pop(key, None)
        log.info("loaded model %s version %d from %s", name, folder.version, folder.path)
        return loaded

    def build(self, policy: ServingPolicy, previous: ServingState | None) -> ServingState:
        models: dict[ModelKey, LoadedModel] = {}
        folders: dict[ModelKey, VersionFolder] = {}
        failures: dict[ModelKey, str] = {}
        missing: dict[str, str] = {}
        old_models = previous.models if previous is not None else {}
        old_folders = previous.folders if previous is not None else {}

        def obtain(name: str, folder: VersionFolder) -> LoadedModel | None:
            key = (name, folder.version)
            if key in models:
                return models[key]
            old = old_models.get(key)
            same_folder = old_folders.get(key)
            if old is not None and same_folder == folder and old.max_batch == model_max_batch(policy, name):
                models[key], folders[key] = old, folder
                return old
            result = self._load(name, folder, policy)
            if isinstance(result, str):
                failures[key] = result
                return None
            models[key], folders[key] = result, folder
            return result

        defaults: dict[str, LoadedModel] = {}
        listings: dict[str, dict[int, VersionFolder]] = {}
        for name, model_config in policy.models.items():
            available = list_versions(Path(model_config.repository))
            by_version = listings[name] = {folder.version: folder for folder in available}
            if model_config.version == "latest":
                candidates = list(reversed(available))
            else:
                pinned_folder = by_version.get(model_config.version)
                candidates = [pinned_folder] if pinned_folder is not None else []
            chosen: LoadedModel | None = None
            if candidates:
                chosen = obtain(name, candidates[0])
            if chosen is None:
                # Keep what served before; at start-up fall back to older complete versions.
                previous_default = previous.defaults.get(name) if previous is not None else None
                if previous_default is not None and (name, previous_default.version) in old_folders:
                    models[(name, previous_default.version)] = previous_default
                    folders[(name, previous_default.version)] = old_folders[(name, previous_default.version)]
                    chosen = previous_default
                else:
                    for older in candidates[1:]:
                        chosen = obtain(name, older)
                        if chosen is not None:
                            break
            if chosen is None:
                wanted = model_config.version
                missing[name] = (
                    f"no loadable version (policy {wanted}) in {model_config.repository}"
                    if available
                    else f"no version folder in {model_config.repository}"
                )
            else:
                defaults[name] = chosen

        routes: dict[tuple[str, str], LoadedModel] = {}
        for tenant_id, tenant in policy.tenants.items():
            for name in tenant.models:
                pin = tenant.versions.get(name)
                target: LoadedModel | None = defaults.get(name)
                if pin is not None:
                    pin_folder = listings[name].get(pin)
                    pinned = obtain(name, pin_folder) if pin_folder is not None else None
                    if pinned is None:
                        old_route = previous.routes.get((tenant_id, name)) if previous is not None else None
                        why = failures.get((name, pin), f"version {pin} not found")
                        log.error("tenant %s pins %s version %d, which cannot serve (%s)", tenant_id, name, pin, why)
                        if old_route is not None and old_route.version == pin:
                            models[(name, pin)] = old_route
                            folders[(name, pin)] = old_folders[(name, pin)]
                            pinned = old_route
                        else:
                            failures.setdefault((name, pin), why)
                    target = pinned
                if target is not None:
                    routes[(tenant_id, name)] = target

        def candidate(tenant_id: str, name: str, version: int, role: str) -> LoadedModel | None:
            found = listings[name].get(version)
            loaded = obtain(name, found) if found is not None else None
            if loaded is None:
                why = failures.get((name, version), f"version {version} not found")
                log.error("tenant %s: %s version %d of %s cannot load (%s)", tenant_id, role, version, name, why)
            return loaded

        shadows: dict[tuple[str, str], LoadedModel] = {}
        canaries: dict[tuple[str, str], tuple[LoadedModel, float]] = {}
        for tenant_id, tenant in policy.tenants.items():
            for name, version in tenant.shadow.items():
                shadow = candidate(tenant_id, name, version, "shadow")
                if shadow is not None:
                    shadows[(tenant_id, name)] = shadow
            for name, canary_config in tenant.canary.items():
                canary = candidate(tenant_id, name, canary_config.version, "canary")
                if canary is not None:
                    canaries[(tenant_id, name)] = (canary, canary_config.fraction)
        return ServingState(policy, models, routes, folders, defaults, failures, missing, shadows, canaries)

