"""Broker connection settings shared by worker and client (each adds only its own fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class ConfigError(Exception):
    """A configuration (server, tenant client, trainer) is invalid; the message says where and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(Strict):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip host name verification (tests only)")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        return self


class BrokerSettings(Strict):
    """How to reach and log in to the broker. `BrokerConfig` (server) and `ClientBrokerConfig`
    (tenant client) extend it with their own fields and defaults."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=0, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    qos: Literal[0, 1] = 1
    protocol: Literal["auto", "3.1.1", "5"] = "auto"
    keepalive_s: int = Field(30, ge=5)
    session_expiry_s: int = Field(3600, ge=0, description="MQTT 5: session lifetime across connection losses")
    tls: TLSConfig | None = None
    reconnect_min_delay_s: float = Field(0.2, gt=0)
    reconnect_max_delay_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_password_source(self) -> BrokerSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give broker.password or broker.password_file, not both")
        return self

    @property
    def mqtt_version(self) -> Literal["3.1.1", "5"]:
        return "5" if self.protocol == "auto" else self.protocol

    def resolve_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"broker.password_file: cannot read {self.password_file}: {exc}") from exc
        return None
