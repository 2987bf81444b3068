"""Server config validation: good defaults, clear errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_app.config import load_config, parse_config
from server_app.errors import ConfigError

MINIMAL = """
models:
  lstm: {repository: models/lstm}
tenants:
  acme: {models: [lstm]}
"""


def test_minimal_config_has_sane_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.broker.embedded
    assert config.broker.qos == 1
    assert config.broker.mqtt_version == "3.1.1"  # amqtt speaks 3.1.1 only
    assert config.models["lstm"].version == "latest"
    assert config.worker.max_batch == 64
    assert config.reload.poll_interval_s == 1.0


def test_full_example_from_design() -> None:
    config = parse_config(
        """
broker: {host: mosquitto, port: 1883, username: w, password: s, qos: 1, shared_group: inference}
models:
  lstm: {repository: models/lstm, version: latest}
  ann:  {repository: models/ann, version: 1}
tenants:
  acme:   {models: [lstm, ann], rate_limit_per_s: 1000}
  beta:   {models: [lstm], versions: {lstm: 3}}
  course: {models: [lstm], format: tutorial, in_queue: inqueue/lstm, out_queue: outqueue/lstm}
worker: {max_batch: 32, max_delay_ms: 0}
"""
    )
    assert config.broker.mqtt_version == "5"
    assert config.broker.resolve_password() == "s"
    assert config.tenants["beta"].versions == {"lstm": 3}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: {}\ntenants: {a: {models: [x]}}", "models"),
        (MINIMAL + "  beta: {models: [gru]}\n", "unknown models ['gru']"),
        (MINIMAL.replace("acme", "Acme"), "tenants.Acme"),
        (MINIMAL + "  beta: {models: [lstm], versions: {ann: 2}}\n", "may not use"),
        (MINIMAL + "  c: {models: [lstm], format: tutorial}\n", "in_queue and out_queue"),
        (MINIMAL + "  c: {models: [lstm], format: tutorial, in_queue: a/#, out_queue: b}\n", "wildcards"),
        (MINIMAL + "worker: {max_batch: 0}\n", "worker.max_batch"),
        (MINIMAL + "worker: {max_batchh: 3}\n", "worker.max_batchh: Extra inputs"),
        (MINIMAL + "broker: {password: a, password_file: /x}\n", "not both"),
        ("- just a list", "mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_invalid_configs_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "server.yaml")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("server.yaml")


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    config = parse_config(MINIMAL + f"broker: {{host: h, password_file: {secret}}}\n")
    assert config.broker.resolve_password() == "hunter2"
