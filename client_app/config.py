"""Tenant client configuration: one small JSON file per tenant, validated once at start-up.

Keys (everything not listed is rejected, so a typo is an error, not a silent default):

``tenant`` (required)
    Tenant id, ``[a-z0-9][a-z0-9_-]{0,62}``. Requests go to
    ``tenants/{tenant}/models/{model}/requests``; the broker's ACL ties it to ``broker.username``.
``model`` (required)
    Model name, same pattern (``lstm``, ``ann``...).
``broker``
    Where and how to connect; the server's ``BrokerConfig`` keys (see ``server_app/config.py``):
    ``host`` (default ``127.0.0.1``; ``embedded`` is not a host the client can reach),
    ``port`` (1883), ``username``, ``password`` or ``password_file`` (not both), ``qos``
    (0 or 1, default 1), ``protocol`` (``"3.1.1"``, ``"5"`` or ``"auto"``: try MQTT 5 and fall
    back to 3.1.1 when the broker refuses it or does not answer within 1 s, as the embedded
    amqtt broker does), ``keepalive_s`` (30), ``tls`` (``{ca_file, cert_file, key_file, insecure}``),
    ``reconnect_min_delay_s``/``reconnect_max_delay_s``, ``session_expiry_s`` (MQTT 5 only,
    default 120: how long the broker keeps the client's session, and the answers that arrive
    for it, across a connection loss; the client ends its session when it exits; with MQTT
    3.1.1 the client uses a clean session, so answers published while it reconnects are lost).
    ``shared_group`` is accepted and ignored.
``client_id``
    MQTT client id; default ``{tenant}-client-{random}``.
``data`` (required)
    CSV file in the BTS schema ``station_id,parameter_id,reading_time,value``, or the
    original tutorial's pre-windowed CSV (``norm_value, norm_1..norm_N``, already normalised;
    a relative path is taken relative to the current directory).
``data_format``
    ``"auto"`` (default: from the file's header; a header with ``norm_value`` and
    ``norm_1..norm_{window}`` is the tutorial's pre-windowed file), ``"bts"`` or ``"tutorial"``.
    Pre-windowed rows are sent as they are (normalised) and scored against ``norm_value``,
    in normalised units; ``resample_s``, ``time_unit`` and ``normalization`` do not apply.
``time_unit``
    Unit of numeric ``reading_time`` values in a BTS file: ``"auto"`` (default: detected per
    file from their magnitude), ``"s"``, ``"ms"``, ``"us"`` or ``"ns"`` since the Unix epoch.
``station``
    Station to stream; default: the first station with readings of ``parameter`` in the file.
``parameter``
    ``parameter_id`` to stream (default 122, BTS "Load of Power Grid").
``window``
    Readings per window (default 6); must match the model's ``window_length``.
``resample_s``
    ``null`` (default): use readings as they are. A number: sample the series every that many
    seconds (grid aligned to multiples of it since the epoch, last reading carried forward),
    exactly as ``ml_training --resample`` did for the model.
``rate``
    Messages per second in ``stream`` and ``no-wait`` modes (default 10); ``0`` or ``null``:
    as fast as possible.
``batch``
    Windows per message (default 1); ``bulk`` mode uses 64 unless ``--batch`` is given.
``format``
    ``"oip"`` (default, Open Inference Protocol subset, correlated by id) or ``"tutorial"``
    (the original tutorial's flat ``{"norm_1": .., ..}`` on ``in_queue``, replies
    ``{"LSTM": ..}`` on ``out_queue``, correlated first-in first-out).
``binary``
    ``true``: windows and forecasts as binary tensors (the Open Inference Protocol's binary
    tensor data extension, NUL-separated framing; ``format`` ``"oip"`` only). Default ``false``.
``in_queue``, ``out_queue``
    Topics of the tutorial format (required with it, forbidden without).
``normalization``
    ``{"offset": .., "scale": ..}`` from the model's ``metadata.json``; required by the tutorial
    format with BTS data (the client sends normalised values: ``norm = (raw - offset) / scale``).
``request_timeout_s``
    Seconds to wait for an answer before a request counts as unanswered (default 10).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.settings import BrokerSettings
from contract.topics import NAME_PATTERN

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class ClientConfigError(Exception):
    """The tenant client configuration (file or command line) is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientBrokerConfig(BrokerSettings):
    """The shared broker settings, with a client's defaults (the local broker, a short session)."""

    host: str = Field("127.0.0.1", description="broker host name or address")
    session_expiry_s: int = Field(120, ge=0, description="MQTT 5: session kept across connection losses")

    @field_validator("host")
    @classmethod
    def _reachable_host(cls, value: str) -> str:
        if value == "embedded":
            raise ValueError(
                'the client connects to a running broker; give its host (the demo\'s embedded broker '
                'listens on "127.0.0.1")'
            )
        if not value:
            raise ValueError("must not be empty")
        return value


class Normalization(_Strict):
    """``norm = (raw - offset) / scale``; copy both numbers from the model's metadata.json."""

    offset: float
    scale: float

    @field_validator("offset", "scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must not be zero")
        return value

    def normalize(self, raw: float) -> float:
        return (raw - self.offset) / self.scale

    def denormalize(self, normalized: float) -> float:
        return normalized * self.scale + self.offset


class TenantClientConfig(_Strict):
    """One tenant's client settings (see the module docstring for every key)."""

    tenant: Name
    model: Name
    broker: ClientBrokerConfig = Field(default_factory=lambda: ClientBrokerConfig())
    client_id: str | None = Field(None, min_length=1, max_length=128)
    data: Path
    data_format: Literal["auto", "bts", "tutorial"] = "auto"
    time_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto"
    station: int | None = None
    parameter: int = 122
    window: int = Field(6, gt=0, le=4096)
    resample_s: float | None = Field(None, gt=0)
    rate: float | None = Field(10.0, ge=0)
    batch: int = Field(1, gt=0, le=4096)
    format: Literal["oip", "tutorial"] = "oip"
    binary: bool = Field(False, description="windows and forecasts as binary tensors (format oip only)")
    in_queue: str | None = None
    out_queue: str | None = None
    normalization: Normalization | None = None
    request_timeout_s: float = Field(10.0, gt=0)

    @field_validator("resample_s", "rate", "request_timeout_s")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _check_format(self) -> TenantClientConfig:
        if self.format == "tutorial":
            # with data_format auto, normalization is checked once the data's format is known
            needed = ["in_queue", "out_queue"] + (["normalization"] if self.data_format == "bts" else [])
            missing = [k for k in needed if getattr(self, k) is None]
            if missing:
                raise ValueError(f"format tutorial needs {', '.join(missing)}")
            if self.batch != 1:
                raise ValueError("format tutorial carries one window per message: batch must be 1")
            if self.binary:
                raise ValueError("binary tensors are an Open Inference Protocol extension: use format oip")
        else:
            extra = [k for k in ("in_queue", "out_queue") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{' and '.join(extra)} only apply to format tutorial")
        for name in ("in_queue", "out_queue"):
            topic = getattr(self, name)
            if topic is not None and (not topic or "+" in topic or "#" in topic or topic.startswith("$")):
                raise ValueError(f"{name} must be a plain topic name without wildcards: {topic!r}")
        return self

    @property
    def messages_per_s(self) -> float | None:
        """The send rate, None for as fast as possible."""
        return self.rate if self.rate else None


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see client_app/README.md)"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_client_config(text: str, source: str = "<config>") -> TenantClientConfig:
    """Validate tenant client JSON; raise ClientConfigError naming the source and each bad key."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ClientConfigError(f"{source}: the top level must be a JSON object")
    try:
        config = TenantClientConfig.model_validate(raw)
    except ValidationError as exc:
        raise ClientConfigError(f"{source}: {_problems(exc)}") from None
    return config


def load_client_config(path: Path) -> TenantClientConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    return parse_client_config(text, str(path))


def with_overrides(config: TenantClientConfig, **changes: object) -> TenantClientConfig:
    """A re-validated copy with command-line overrides (None values are ignored)."""
    updates = {k: v for k, v in changes.items() if v is not None}
    if not updates:
        return config
    raw = {**config.model_dump(), **updates}
    try:
        return TenantClientConfig.model_validate(raw)
    except ValidationError as exc:
        raise ClientConfigError(f"command line: {_problems(exc)}") from None
