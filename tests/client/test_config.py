"""Tenant client config validation: clear errors naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from client_app.config import ClientConfigError, load_client_config, parse_client_config, with_overrides

BASE: dict[str, Any] = {"tenant": "acme", "model": "lstm", "data": "data/bts_sample.csv"}


def parse(**changes: Any) -> Any:
    return parse_client_config(json.dumps({**BASE, **changes}), "acme.json")


def test_defaults() -> None:
    config = parse()
    assert config.broker.host == "127.0.0.1"
    assert config.broker.port == 1883
    assert config.broker.qos == 1
    assert (config.window, config.batch, config.rate, config.format) == (6, 1, 10.0, "oip")
    assert config.station is None and config.parameter == 122 and config.resample_s is None
    assert config.request_timeout_s == 10.0
    assert config.messages_per_s == 10.0


def test_full_example() -> None:
    config = parse(
        broker={"host": "mqtt.example", "port": 8883, "username": "acme", "password": "pw", "qos": 0,
                "protocol": "5", "tls": {"ca_file": "/ca.pem"}},
        station=1161114002, parameter=122, window=6, resample_s=300, rate=0, batch=4, request_timeout_s=2.5,
    )
    assert config.broker.resolve_password() == "pw"
    assert config.messages_per_s is None
    assert config.resample_s == 300


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tenant": "Acme"}, "tenant: String should match pattern"),
        ({"model": ""}, "model: String should match pattern"),
        ({"window": 0}, "window: Input should be greater than 0"),
        ({"batch": -1}, "batch: Input should be greater than 0"),
        ({"rate": -1}, "rate: Input should be greater than or equal to 0"),
        ({"resample_s": 0}, "resample_s: Input should be greater than 0"),
        ({"request_timeout_s": 0}, "request_timeout_s: Input should be greater than 0"),
        ({"format": "xml"}, "format: Input should be 'oip' or 'tutorial'"),
        ({"sation": 1}, "sation: unknown key"),
        ({"broker": {"host": "embedded"}}, "broker.host: Value error, the client connects to a running broker"),
        ({"broker": {"qos": 2}}, "broker.qos: Input should be 0 or 1"),
        ({"broker": {"port": 70000}}, "broker.port: Input should be less than or equal to 65535"),
        ({"broker": {"password": "a", "password_file": "/x"}}, "give broker.password or broker.password_file"),
        ({"broker": {"hots": "x"}}, "broker.hots: unknown key"),
        ({"format": "tutorial"}, "format tutorial needs in_queue, out_queue"),
        ({"format": "tutorial", "data_format": "bts"}, "format tutorial needs in_queue, out_queue, normalization"),
        ({"data_format": "csv"}, "data_format: Input should be 'auto', 'bts' or 'tutorial'"),
        ({"in_queue": "inqueue/lstm"}, "in_queue only apply to format tutorial"),
        ({"format": "tutorial", "in_queue": "in/#", "out_queue": "o", "normalization": {"offset": 0, "scale": 1}},
         "in_queue must be a plain topic name"),
        ({"format": "tutorial", "in_queue": "i", "out_queue": "o", "normalization": {"offset": 0, "scale": 0}},
         "normalization.scale: Value error, must not be zero"),
        ({"format": "tutorial", "in_queue": "i", "out_queue": "o", "batch": 2,
          "normalization": {"offset": 0, "scale": 1}}, "batch must be 1"),
        ({"format": "tutorial", "in_queue": "i", "out_queue": "o", "binary": True,
          "normalization": {"offset": 0, "scale": 1}}, "binary tensors are an Open Inference Protocol extension"),
    ],
)
def test_invalid(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ClientConfigError) as info:
        parse(**changes)
    message = str(info.value)
    assert message.startswith("acme.json: "), message
    assert expected in message, message


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ClientConfigError, match=r"c.json: tenant: Field required; data: Field required"):
        parse_client_config('{"model": "lstm"}', "c.json")


def test_not_json_or_not_object(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match=r"x.json: not valid JSON"):
        parse_client_config("{tenant: acme", "x.json")
    with pytest.raises(ClientConfigError, match=r"x.json: the top level must be a JSON object"):
        parse_client_config("[1]", "x.json")
    with pytest.raises(ClientConfigError, match=r"cannot read config .*nope.json"):
        load_client_config(tmp_path / "nope.json")


def test_overrides_revalidate_and_keep_secrets() -> None:
    config = parse(broker={"username": "acme", "password": "s3cret"})
    changed = with_overrides(config, rate=250.0, batch=None)
    assert changed.rate == 250.0 and changed.batch == 1
    assert changed.broker.resolve_password() == "s3cret"
    assert with_overrides(config) is config
    with pytest.raises(ClientConfigError, match=r"command line: batch: Input should be greater than 0"):
        with_overrides(config, batch=0)


def test_shipped_examples_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "examples" / "tenants"
    configs = {path.stem: load_client_config(path) for path in sorted(root.glob("*.json"))}
    assert set(configs) >= {"acme", "beta", "course"}
    assert (configs["acme"].tenant, configs["acme"].model) == ("acme", "lstm")
    assert (configs["beta"].tenant, configs["beta"].model) == ("beta", "ann")
    course = configs["course"]
    assert (course.format, course.in_queue, course.out_queue) == ("tutorial", "inqueue/lstm", "outqueue/lstm")
    for config in configs.values():
        assert (config.broker.host, config.broker.port) == ("127.0.0.1", 1883)
        assert config.data == Path("data/bts_sample.csv")
