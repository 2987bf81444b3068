"""Server configuration: pydantic models, validated once at start-up (and on each reload)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from contract.settings import BrokerSettings, Strict, TLSConfig

__all__ = ["BrokerConfig", "ServerConfig", "TLSConfig", "load_config", "parse_config"]
from contract.topics import NAME_PATTERN
from server_app.errors import ConfigError

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, Field(gt=0)]


class BrokerConfig(BrokerSettings):
    """The worker's broker section: the shared settings plus what only a worker has."""

    host: str = Field("embedded", description='"embedded" starts amqtt on 127.0.0.1')
    shared_group: Name | None = "inference"
    embedded_auth_file: Path | None = Field(
        None, description="embedded broker only: users and ACLs written by `python -m provisioning.broker_auth`"
    )

    @model_validator(mode="after")
    def _embedded_auth_needs_embedded(self) -> BrokerConfig:
        if self.embedded_auth_file is not None:
            if not self.embedded:
                raise ValueError("broker.embedded_auth_file needs broker.host: embedded")
            if self.username is None:
                raise ValueError("broker.embedded_auth_file needs broker.username (the workers' user)")
        return self

    @property
    def embedded(self) -> bool:
        return self.host == "embedded"

    @property
    def mqtt_version(self) -> Literal["3.1.1", "5"]:
        if self.protocol != "auto":
            return self.protocol
        return "3.1.1" if self.embedded else "5"  # amqtt speaks 3.1.1 only


class ModelConfig(Strict):
    repository: Path
    version: Literal["latest"] | PositiveInt = "latest"
    max_batch: PositiveInt | None = Field(
        None,
        description="most windows of this model in one invoke (default: worker.max_batch); a model that only "
        "runs at fixed batch sizes states them in its metadata.json",
    )


class CanaryConfig(Strict):
    version: PositiveInt
    fraction: float = Field(gt=0, lt=1, description="share of the tenant's series this version answers")


class TenantConfig(Strict):
    models: list[Name] = Field(min_length=1)
    versions: dict[Name, PositiveInt] = Field(default_factory=dict)
    shadow: dict[Name, PositiveInt] = Field(
        default_factory=dict, description="model -> version run on the tenant's windows and scored, never answered"
    )
    canary: dict[Name, CanaryConfig] = Field(
        default_factory=dict, description="model -> version answering a stable fraction of the tenant's series"
    )
    rate_limit_per_s: float | None = Field(None, gt=0)
    burst: PositiveInt | None = None
    format: Literal["oip", "tutorial"] = "oip"
    in_queue: str | None = None
    out_queue: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TenantConfig:
        for section in ("versions", "shadow", "canary"):
            unknown = set(getattr(self, section)) - set(self.models)
            if unknown:
                raise ValueError(f"{section} names models the tenant may not use: {sorted(unknown)}")
        if self.format == "tutorial":
            if not self.in_queue or not self.out_queue:
                raise ValueError("format tutorial needs in_queue and out_queue")
            if len(self.models) != 1:
                raise ValueError("format tutorial serves exactly one model")
        for name in ("in_queue", "out_queue"):
            topic = getattr(self, name)
            if topic is not None and (not topic or "+" in topic or "#" in topic or topic.startswith("$")):
                raise ValueError(f"{name} must be a plain topic name without wildcards: {topic!r}")
        return self


class WorkerConfig(Strict):
    id: str | None = Field(None, description="default: host name (the pod name on Kubernetes)")
    max_batch: PositiveInt = Field(64, description="messages per micro-batch (one invoke per model version)")
    max_batch_bytes: PositiveInt = Field(
        262_144, description="payload bytes per micro-batch (at least one message): bounds the work of one batch"
    )
    max_delay_ms: float = Field(0.0, ge=0, description="wait for a batch to fill; 0: batch what has arrived")
    latency_budget_ms: float = Field(
        5000.0, gt=0, description="a request expected to wait longer in the worker is answered `overloaded` at once"
    )
    queue_size: PositiveInt = Field(10_000, description="requests queued per worker; beyond: `overloaded`")
    queue_bytes: PositiveInt = Field(
        67_108_864, description="payload bytes queued per worker; beyond: `overloaded` (bounds the worker's memory)"
    )
    max_message_bytes: PositiveInt = 1_048_576
    max_windows_per_message: PositiveInt = 4096
    dedup_window_s: float = Field(300.0, ge=0)
    dedup_max_entries: PositiveInt = 200_000
    shutdown_grace_s: float = Field(10.0, gt=0)
    max_inflight: int = Field(
        65_535, ge=1, le=65_535,
        description="MQTT 5 Receive Maximum: unacknowledged requests the broker may hand this worker. Large, so "
        "that the backlog waits in the worker (fair, bounded, shed on the latency budget), not at the broker",
    )

    @model_validator(mode="after")
    def _queue_holds_a_message(self) -> WorkerConfig:
        if self.queue_bytes < self.max_message_bytes:
            raise ValueError("worker.queue_bytes must hold at least one message of worker.max_message_bytes")
        return self

    def resolved_id(self) -> str:
        return self.id or socket.gethostname()


class ReloadConfig(Strict):
    enabled: bool = True
    poll_interval_s: float = Field(1.0, gt=0)


class HealthConfig(Strict):
    host: str = Field("127.0.0.1", description="address to bind; loopback by default (this machine only)")
    host_env: str | None = Field(
        None,
        description="environment variable holding the address to bind, when set and not empty "
        "(Kubernetes: POD_IP from the downward API); `host` is the fallback",
    )
    port: int | None = Field(8080, ge=0, le=65535, description="null disables the HTTP endpoint")
    broker_stats: bool = Field(
        True,
        description="export the broker's $SYS/broker counters (dropped messages, clients, store) as "
        "mqtt_broker_* metrics, read on a second connection (server_app.broker_stats)",
    )
    console: bool = Field(
        True,
        description="serve the live console (page at /, data at /console.json) on this endpoint, beside /metrics: "
        "it shows tenant names and traffic to whoever can reach health.host",
    )

    @model_validator(mode="before")
    @classmethod
    def _host_from_environment(cls, data: object) -> object:
        # Resolved when the file is parsed, so a reload of the same file compares equal.
        if isinstance(data, dict) and isinstance(data.get("host_env"), str):
            value = os.environ.get(data["host_env"], "").strip()
            if value:
                data = {**data, "host": value}
        return data


class PromotionConfig(Strict):
    margin: float = Field(0.1, ge=0, lt=1, description="the shadow's MAE must be this fraction below the live one")
    min_resolved: PositiveInt = Field(200, description="resolved forecasts of both versions before deciding")


class QualityConfig(Strict):
    enabled: bool = True
    window: PositiveInt = Field(200, description="resolved forecasts in the rolling MAE / RMSE / skill")
    min_resolved: PositiveInt = Field(30, description="resolved forecasts before skill is judged")
    skill_threshold: float = Field(1.0, gt=0, description="skill (MAE / persistence MAE) above this raises an alarm")
    drift_detector: Literal["adwin", "page_hinkley", "off"] = "adwin"
    max_series: PositiveInt = Field(10_000, description="series tracked per worker; least recently seen dropped")
    pending_per_series: PositiveInt = Field(16, description="unresolved forecasts kept per series (oldest dropped)")
    auto_promote: PromotionConfig | None = Field(None, description="promote a shadow that beats the live version")


class ServingPolicy(Strict):
    """What a running worker serves, and what a reload may change: models, tenants, and the
    worker's batching and limits. The serving state holds this; the start-up settings (broker,
    health, log level, worker.id, worker.max_inflight) stay with the process that read them."""

    models: dict[Name, ModelConfig]
    tenants: dict[Name, TenantConfig]
    worker: WorkerConfig
    quality: QualityConfig


class ServerConfig(Strict):
    broker: BrokerConfig = Field(default_factory=lambda: BrokerConfig())
    models: dict[Name, ModelConfig] = Field(min_length=1)
    tenants: dict[Name, TenantConfig] = Field(min_length=1)
    worker: WorkerConfig = Field(default_factory=lambda: WorkerConfig())
    quality: QualityConfig = Field(default_factory=lambda: QualityConfig())
    reload: ReloadConfig = Field(default_factory=lambda: ReloadConfig())
    health: HealthConfig = Field(default_factory=lambda: HealthConfig())
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per line, with tenant, model, version and trace id on request lines"
    )

    @model_validator(mode="after")
    def _cross_check(self) -> ServerConfig:
        seen_queues: dict[str, str] = {}
        for tenant_id, tenant in self.tenants.items():
            missing = [m for m in tenant.models if m not in self.models]
            if missing:
                raise ValueError(f"tenant {tenant_id!r} uses unknown models {missing}")
            if tenant.in_queue is not None:
                if tenant.in_queue in seen_queues:
                    raise ValueError(
                        f"tenants {seen_queues[tenant.in_queue]!r} and {tenant_id!r} share in_queue {tenant.in_queue!r}"
                    )
                if tenant.in_queue.startswith("tenants/"):
                    raise ValueError(f"tenant {tenant_id!r}: in_queue must not lie under tenants/")
                seen_queues[tenant.in_queue] = tenant_id
        return self

    @property
    def policy(self) -> ServingPolicy:
        return ServingPolicy(models=self.models, tenants=self.tenants, worker=self.worker, quality=self.quality)

def parse_config(text: str, source: str = "<config>") -> ServerConfig:
    """Validate config text (YAML or JSON); raise ConfigError naming the source and field."""
    try:
        raw = yaml.safe_load(text) if not source.endswith(".json") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    try:
        return ServerConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def load_config(path: Path) -> ServerConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return parse_config(text, str(path))
