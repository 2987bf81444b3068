"""The broker's $SYS counters exported as mqtt_broker_* metrics (issue 11, "loss at the broker made visible").

Against a real Mosquitto 2.0.11 with ``sys_interval 1``: a persistent session that is away
while 50 QoS 1 messages are published to it, with ``max_queued_messages 5``, makes the broker
drop messages (each acknowledged to the publisher); ``mqtt_broker_messages_dropped`` must
rise. With the dynamic-security file generated from the server config, the workers' user
reads ``$SYS/broker/#``. Brokers without ``$SYS`` (the embedded amqtt as we start it) or
refusing the subscription: nothing exported, one INFO line.

No timing is asserted: every wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from contract.settings import BrokerSettings
from provisioning.embedded_broker import EmbeddedBroker
from server_app.broker_stats import BROKER_METRICS, LAST_UPDATE_METRIC, BrokerStats, parse_sys_payload
from server_app.client_ids import worker_client_id
from server_app.config import HealthConfig, parse_config
from tests.deployment.manifests import BASE, built_manifests, extract_file
from tests.support.brokers import secured_mosquitto
from tests.support.mosquitto import MosquittoBroker, find_mosquitto
from tests.support.probe import MqttProbe

DEADLINE_S = 30.0  # generous: only a broken feed takes this long
DROPPED = "mqtt_broker_messages_dropped"
LOGGER = "server_app.broker_stats"


def _wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {deadline_s:.0f} s: {what}"
        time.sleep(0.05)


def _broker_metric_names(registry: CollectorRegistry) -> list[str]:
    return [family.name for family in registry.collect() if family.name.startswith("mqtt_broker_")]


def _sys_message(topic: str, payload: bytes) -> paho.MQTTMessage:
    message = paho.MQTTMessage(topic=topic.encode())
    message.payload = payload
    return message


@pytest.fixture
def make_stats() -> Iterator[Callable[..., BrokerStats]]:
    made: list[BrokerStats] = []

    def factory(broker: BrokerSettings, client_id: str, registry: CollectorRegistry, **kwargs: Any) -> BrokerStats:
        stats = BrokerStats(broker, client_id, registry, **kwargs)
        made.append(stats)
        return stats

    yield factory
    for stats in made:
        stats.stop()


# --------------------------------------------------------------------------- unit: parsing


@pytest.mark.parametrize(
    ("suffix", "payload", "expected"),
    [
        ("publish/messages/dropped", b"45", 45.0),
        ("publish/messages/dropped", b"0", 0.0),
        ("clients/connected", b" 3\n", 3.0),
        ("heap/current", b"33336", 33336.0),
        ("load/publish/dropped/1min", b"0.00", 0.0),
        ("store/messages/count", b"18446744073709551615", 18446744073709551615.0),
        ("uptime", b"12 seconds", 12.0),  # Mosquitto
        ("uptime", b"12", 12.0),  # amqtt's BrokerSysPlugin
    ],
)
def test_numeric_payloads_are_parsed(suffix: str, payload: bytes, expected: float) -> None:
    assert parse_sys_payload(suffix, payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        b"", b" ", b"-1", b"+1", b"1e3", b"nan", b"NaN", b"inf", b"1_000", b"0x10", b"1.", b".5", b"1,5",
        b"12 seconds", b"mosquitto version 2.0.11", "٣".encode(), b"\xff\xfe", b"1" * 65, b"1\x002",
    ],
)
def test_anything_else_is_ignored(payload: bytes) -> None:
    assert parse_sys_payload("publish/messages/dropped", payload) is None


def test_messages_update_only_known_numeric_counters_and_never_raise() -> None:
    registry = CollectorRegistry()
    stats = BrokerStats(BrokerSettings(port=1), "w-sys", registry, clock=lambda: 1234.5)  # never started
    assert _broker_metric_names(registry) == [], "nothing is exported before the broker sends anything"
    assert b"mqtt_broker" not in generate_latest(registry)

    for topic, payload in [
        ("$SYS/broker/version", b"mosquitto version 2.0.11"),
        ("$SYS/broker/publish/messages/dropped", b"not a number"),
        ("$SYS/broker/clients/connected", "٣".encode()),
        ("$SYS/broker/store/messages/count", b"\xff" * 10_000),
        ("tenants/acme/models/lstm/requests", b"7"),  # not $SYS: not even a sign of life
    ]:
        stats._on_message(None, None, _sys_message(topic, payload))  # type: ignore[arg-type]
    stats._on_message(None, None, object())  # type: ignore[arg-type]  # a broken message: logged, not raised
    assert registry.get_sample_value(DROPPED) is None
    assert registry.get_sample_value(LAST_UPDATE_METRIC) == 1234.5, "any $SYS/broker message shows the feed alive"

    stats._on_message(None, None, _sys_message("$SYS/broker/publish/messages/dropped", b"45"))  # type: ignore[arg-type]
    stats._on_message(None, None, _sys_message("$SYS/broker/clients/connected", b"3"))  # type: ignore[arg-type]
    stats._on_message(None, None, _sys_message("$SYS/broker/retained messages/count", b"40"))  # type: ignore[arg-type]
    stats._on_message(None, None, _sys_message("$SYS/broker/uptime", b"99 seconds"))  # type: ignore[arg-type]
    assert registry.get_sample_value(DROPPED) == 45
    assert registry.get_sample_value("mqtt_broker_clients_connected") == 3
    assert registry.get_sample_value("mqtt_broker_retained_messages") == 40
    assert registry.get_sample_value("mqtt_broker_uptime_seconds") == 99
    text = generate_latest(registry).decode()
    assert f"# TYPE {DROPPED} gauge" in text
    # A broker restart: the total starts again from 0; the gauge follows (increase() sees a reset).
    stats._on_message(None, None, _sys_message("$SYS/broker/publish/messages/dropped", b"0"))  # type: ignore[arg-type]
    assert registry.get_sample_value(DROPPED) == 0
    stats.stop()


def test_metric_names_follow_prometheus_conventions() -> None:
    names = [name for name, _ in BROKER_METRICS.values()] + [LAST_UPDATE_METRIC]
    assert len(set(names)) == len(names)
    for name in names:
        assert name.startswith("mqtt_broker_"), name
        assert not name.endswith("_total"), f"{name}: a gauge has no _total suffix"
    assert DROPPED in names


def test_the_switch_defaults_to_on() -> None:
    assert HealthConfig().broker_stats is True
    assert HealthConfig.model_validate({"broker_stats": False}).broker_stats is False


def test_the_shipped_alert_rules_watch_the_exported_metrics() -> None:
    """deployment/base: ConfigMap inference-alerts holds a Prometheus rules file whose alerts
    use the names this module exports (a rename here must not silence the alert)."""
    rules_text = extract_file(built_manifests(BASE), "ConfigMap", "inference-alerts", "alerts.yaml")
    groups = yaml.safe_load(rules_text)["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    exported = {name for name, _ in BROKER_METRICS.values()} | {LAST_UPDATE_METRIC}
    for rule in rules.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        used = set(re.findall(r"\bmqtt_broker_[a-z_]+", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
    dropped = rules["MqttBrokerDroppedMessages"]
    assert f"increase({DROPPED}[5m])" in dropped["expr"] and dropped["expr"].endswith("> 0")
    assert LAST_UPDATE_METRIC in rules["MqttBrokerStatsStale"]["expr"]


# --------------------------------------------------------------------------- real brokers


@pytest.mark.integration
def test_messages_dropped_by_mosquitto_are_exported(
    tmp_path: Path, make_stats: Callable[..., BrokerStats]
) -> None:
    find_mosquitto()
    with MosquittoBroker(tmp_path / "mosquitto", max_queued_messages=5, extra_conf=["sys_interval 1"]) as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, protocol="5")
        registry = CollectorRegistry()
        stats = make_stats(settings, "inference-0-sys", registry)
        stats.start()
        _wait_until(lambda: registry.get_sample_value(DROPPED) is not None, "the first dropped-messages value")
        before = registry.get_sample_value(DROPPED)
        assert before is not None
        assert registry.get_sample_value(LAST_UPDATE_METRIC) is not None
        _wait_until(
            lambda: (registry.get_sample_value("mqtt_broker_clients_connected") or 0) >= 1,
            "our own $SYS connection counted as connected",
        )
        assert registry.get_sample_value("mqtt_broker_store_messages") is not None

        # A persistent session that goes away: the broker queues at most 5 messages for it.
        topic = "loss/victim"
        away = MqttProbe(
            broker.host, broker.port, client_id="victim", protocol="5", clean_session=False, session_expiry_s=3600
        ).connect()
        away.subscribe(topic, qos=1)
        away.close()
        with MqttProbe(broker.host, broker.port, protocol="5") as publisher:
            for i in range(50):
                publisher.publish(topic, f"{i}".encode(), qos=1)  # every one acknowledged: the loss is silent

        _wait_until(
            lambda: (registry.get_sample_value(DROPPED) or 0) >= before + 45,
            f"{DROPPED} to rise by 45 (50 published, 5 queued) from {before}",
        )
        assert "Outgoing messages are being dropped for client victim" in broker.log_tail(200)
        text = generate_latest(registry).decode()
        assert DROPPED in text and "mqtt_broker_clients_disconnected" in text


@pytest.mark.integration
def test_the_workers_user_reads_sys_with_the_generated_dynamic_security(
    tmp_path: Path, repository: Path, make_stats: Callable[..., BrokerStats]
) -> None:
    with secured_mosquitto(tmp_path, repository, extra_conf=["sys_interval 1"]) as secured:
        broker = secured.broker
        worker_broker = parse_config(yaml.safe_dump(secured.config)).broker
        client_id = worker_client_id(worker_broker, "inference-0") + "-sys"
        registry = CollectorRegistry()
        stats = make_stats(worker_broker, client_id, registry)
        stats.start()
        _wait_until(lambda: registry.get_sample_value(DROPPED) is not None, "dropped messages, as the workers' user")
        _wait_until(
            lambda: (registry.get_sample_value("mqtt_broker_clients_connected") or 0) >= 1, "connected clients"
        )

        # A tenant may not read them (the generated rules): its SUBSCRIBE is refused.
        with MqttProbe(broker.host, broker.port, username="acme", password="acme-secret", protocol="5") as tenant:
            codes = tenant.subscribe("$SYS/broker/#", check=False)
            assert codes and codes[0] >= 0x80, codes


@pytest.mark.integration
def test_a_broker_without_sys_exports_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture, make_stats: Callable[..., BrokerStats]
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with EmbeddedBroker(port=0) as broker:  # as the worker starts it: no $SYS plugin
        settings = BrokerSettings(host=broker.connect_host, port=broker.port, protocol="3.1.1")
        registry = CollectorRegistry()
        stats = make_stats(settings, "worker-sys", registry, silence_s=0.5)
        stats.start()
        _wait_until(stats.subscribed.is_set, "the $SYS subscription granted by amqtt")
        _wait_until(lambda: any("publishes no $SYS" in r.getMessage() for r in caplog.records), "the INFO line")
        stats.stop()
    said = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert _broker_metric_names(registry) == []


@pytest.mark.integration
def test_a_refused_sys_subscription_exports_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture, make_stats: Callable[..., BrokerStats]
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    # As with the generated amqtt-auth.json: the worker's subscribe ACL has no $ topics.
    with EmbeddedBroker(port=0, users={"w": "pw"}, topic_acl={"w": ["tenants/#"]}) as broker:
        settings = BrokerSettings(
            host=broker.connect_host, port=broker.port, protocol="3.1.1", username="w", password="pw"
        )
        registry = CollectorRegistry()
        stats = make_stats(settings, "worker-sys", registry)
        stats.start()
        _wait_until(lambda: any("refused SUBSCRIBE" in r.getMessage() for r in caplog.records), "the INFO line")
        stats.stop()
    said = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.INFO
    assert _broker_metric_names(registry) == []
