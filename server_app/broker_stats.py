"""The broker's own counters (``$SYS/broker/...``) as Prometheus metrics: loss inside the broker made visible.

Why: when the broker drops a message (a session's queue is full: ``max_queued_messages`` /
``max_queued_bytes``), the publisher has had its PUBACK, the worker never sees the message,
and every metric of ours stays green (issue 11). Mosquitto counts such drops itself and
publishes the count, with other counters, under ``$SYS/broker/`` every ``sys_interval``
seconds (default 10; 0 turns it off). Mosquitto 2.0.11 publishes, among others (checked with
``sys_interval 1`` and ``mosquitto_sub -v -t '$SYS/#'``)::

    $SYS/broker/publish/messages/dropped 45      messages dropped because a session's queue was full
    $SYS/broker/clients/connected 1
    $SYS/broker/store/messages/count 58
    $SYS/broker/retained messages/count 40       (a space in the topic)
    $SYS/broker/uptime 12 seconds                (a unit in the payload)
    $SYS/broker/version mosquitto version 2.0.11 (not a number: ignored)

:class:`BrokerStats` is a small MQTT connection of its own, beside the worker's serving
connection and never touching it: client id = the worker's client id + ``-sys``, a clean
session (nothing is queued for it while it is away), QoS 0, paho's own network thread. It
subscribes ``$SYS/broker/#`` (the workers' broker user may: ``provisioning.broker_auth``) and
exports the counters of :data:`BROKER_METRICS` that the broker actually sends, plus
``mqtt_broker_sys_last_update_timestamp_seconds`` (when the last ``$SYS`` message arrived,
so an operator sees the feed stop). Only numeric payloads count; anything else is ignored.

Gauges, not counters, also for the totals since the broker started (dropped, received,
sent): the value is the broker's, not ours. We do not count events, we copy the broker's
number, which a ``Counter`` cannot be set to; and that number restarts from 0 when the
*broker* restarts, not when this process does. PromQL's ``increase()``/``rate()`` treat any
decrease as a counter reset, so ``increase(mqtt_broker_messages_dropped[5m])`` is right on
such a gauge across broker restarts. Every worker exports the same broker-wide numbers
(aggregate with ``max``, not ``sum``).

A broker without ``$SYS`` (the embedded amqtt broker as we start it: no ``$SYS`` plugin;
Mosquitto with ``sys_interval 0``; EMQX, which publishes under ``$SYS/brokers/<node>/``) or one
that refuses the subscription: nothing is exported and one INFO line says so. An amqtt
broker with its ``BrokerSysPlugin`` does publish some of the same topics
(``clients/connected``, ``messages/received``, ``uptime``, ...) but no drop counter; those are
exported.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contract.mqtt_client import connect_properties, make_client
from contract.settings import BrokerSettings

__all__ = [
    "BROKER_METRICS",
    "LAST_UPDATE_METRIC",
    "SYS_FILTER",
    "SYS_PREFIX",
    "BrokerStats",
    "parse_sys_payload",
]

log = logging.getLogger(__name__)

SYS_PREFIX: Final = "$SYS/broker/"
SYS_FILTER: Final = SYS_PREFIX + "#"

# $SYS/broker/<suffix> -> (metric name, help). Mosquitto 2.0.11 topic names.
BROKER_METRICS: Final[dict[str, tuple[str, str]]] = {
    "publish/messages/dropped": (
        "mqtt_broker_messages_dropped",
        "Messages the broker dropped since it started, because a session's queue was full "
        "(max_queued_messages / max_queued_bytes); the publisher had its PUBACK. Broker total (gauge)",
    ),
    "clients/connected": ("mqtt_broker_clients_connected", "Clients connected to the broker now"),
    "clients/disconnected": (
        "mqtt_broker_clients_disconnected",
        "Persistent sessions whose client is not connected now (their messages queue in the broker)",
    ),
    "clients/expired": (
        "mqtt_broker_clients_expired",
        "Persistent sessions the broker expired since it started, with whatever was queued for them. "
        "Broker total (gauge)",
    ),
    "store/messages/count": (
        "mqtt_broker_store_messages",
        "Messages held in the broker's store now (queued and in flight for sessions, retained)",
    ),
    "store/messages/bytes": ("mqtt_broker_store_messages_bytes", "Payload bytes held in the broker's store now"),
    "retained messages/count": ("mqtt_broker_retained_messages", "Retained messages held by the broker now"),
    "subscriptions/count": ("mqtt_broker_subscriptions", "Subscriptions on the broker now"),
    "messages/received": (
        "mqtt_broker_messages_received",
        "MQTT packets of any type the broker received since it started. Broker total (gauge)",
    ),
    "messages/sent": (
        "mqtt_broker_messages_sent",
        "MQTT packets of any type the broker sent since it started. Broker total (gauge)",
    ),
    "publish/messages/received": (
        "mqtt_broker_publish_messages_received",
        "PUBLISH messages the broker received since it started. Broker total (gauge)",
    ),
    "publish/messages/sent": (
        "mqtt_broker_publish_messages_sent",
        "PUBLISH messages the broker sent since it started. Broker total (gauge)",
    ),
    "heap/current": ("mqtt_broker_heap_bytes", "Heap memory the broker uses now"),
    "uptime": ("mqtt_broker_uptime_seconds", "Seconds since the broker started (drops when it restarts)"),
}
LAST_UPDATE_METRIC: Final = "mqtt_broker_sys_last_update_timestamp_seconds"
_LAST_UPDATE_HELP: Final = (
    "Unix time at which this worker last received a $SYS/broker message; its age shows a stopped feed"
)

_MAX_PAYLOAD: Final = 64  # every counter fits; longer payloads are not counters
_NUMBER: Final = re.compile(rb"[0-9]{1,20}(?:\.[0-9]{1,12})?")
_UPTIME: Final = re.compile(rb"([0-9]{1,20}) seconds")  # Mosquitto: "<n> seconds"; amqtt: "<n>"


def parse_sys_payload(suffix: str, payload: bytes | bytearray) -> float | None:
    """The number in a ``$SYS/broker/<suffix>`` payload, or None when it is not a plain number.

    Accepts unsigned decimals (``45``, ``0.00``), and ``<n> seconds`` for ``uptime`` only;
    rejects empty, signed, exponent, ``nan``/``inf``, underscores, non-ASCII and long payloads."""
    if not isinstance(payload, bytes | bytearray) or len(payload) > _MAX_PAYLOAD:
        return None
    text = bytes(payload).strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if suffix == "uptime":
        match = _UPTIME.fullmatch(text)
        if match:
            return float(match.group(1))
    return None


class _Collector(Collector):
    """Yields only what the broker has sent: nothing at all on a broker without $SYS."""

    def __init__(self, snapshot: Callable[[], tuple[dict[str, float], float | None]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are not known until the broker sends them

    def collect(self) -> Iterator[Metric]:
        values, last_update = self._snapshot()
        for suffix, (name, help_text) in BROKER_METRICS.items():
            if suffix in values:
                yield GaugeMetricFamily(name, help_text, value=values[suffix])
        if last_update is not None:
            yield GaugeMetricFamily(LAST_UPDATE_METRIC, _LAST_UPDATE_HELP, value=last_update)


class BrokerStats:
    """Subscribes ``$SYS/broker/#`` on its own connection and exports counters into ``registry``.

    ``start()`` never blocks and never raises for an unreachable broker (paho's thread connects
    and reconnects with the configured backoff); ``stop()`` disconnects and joins that thread.
    ``silence_s``: without any ``$SYS`` message this long after the subscription was granted,
    log (once, INFO) that the broker publishes none.
    """

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        registry: CollectorRegistry,
        *,
        silence_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._v5 = broker.mqtt_version == "5"
        self._clock = clock
        self._silence_s = silence_s
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._last_update: float | None = None
        self._told = False  # the one INFO line about a broker without $SYS
        self._seen_sys = False
        self._silence_timer: threading.Timer | None = None
        self._started = False
        self._stopped = False
        self._refusals_logged: set[str] = set()
        self.client_id = client_id
        self.subscribed = threading.Event()
        self._client = make_client(broker, client_id, persistent=False)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._registry = registry
        self._collector = _Collector(self.snapshot)
        registry.register(self._collector)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("BrokerStats.start() called twice")
        self._started = True
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=self._broker.keepalive_s,
            clean_start=True if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties(self._broker, persistent=False),
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and join paho's thread. The last values stay exported (their age shows)."""
        if self._stopped:
            return
        self._stopped = True
        with self._lock:
            timer, self._silence_timer = self._silence_timer, None
        if timer is not None:
            timer.cancel()
        if self._started:
            try:
                self._client.disconnect()
            except Exception:  # a client that never connected
                log.debug("broker stats: disconnect failed", exc_info=True)
            self._client.loop_stop()

    def snapshot(self) -> tuple[dict[str, float], float | None]:
        """(values by $SYS suffix, unix time of the last $SYS message or None)."""
        with self._lock:
            return dict(self._values), self._last_update

    # -- paho callbacks (paho's thread: short, never raise) --------------------------------
    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            if reason_code.is_failure:
                self._log_refusal(f"broker refused the $SYS connection as {self.client_id}: {reason_code}")
                return
            client.subscribe(SYS_FILTER, qos=0)
        except Exception:
            log.exception("broker stats: on_connect failed")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.subscribed.clear()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            if not reason_codes or any(code.is_failure for code in reason_codes):
                codes = [str(code) for code in reason_codes]
                self._tell_once(f"the broker refused SUBSCRIBE {SYS_FILTER} ({codes}): no broker metrics exported")
                return
            self.subscribed.set()
            with self._lock:
                if self._silence_timer is None and not self._seen_sys and not self._told and not self._stopped:
                    timer = threading.Timer(self._silence_s, self._check_silence)
                    timer.name = "broker-stats-silence"
                    timer.daemon = True
                    self._silence_timer = timer
                    timer.start()
        except Exception:
            log.exception("broker stats: on_subscribe failed")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
            if not topic.startswith(SYS_PREFIX):
                return
            suffix = topic[len(SYS_PREFIX):]
            value = parse_sys_payload(suffix, message.payload) if suffix in BROKER_METRICS else None
            now = self._clock()
            with self._lock:
                first = not self._seen_sys
                self._seen_sys = True
                self._last_update = now
                if value is not None:
                    self._values[suffix] = value
            if first:
                log.info("broker $SYS counters arriving on %s: exporting mqtt_broker_* metrics", SYS_FILTER)
        except Exception:
            log.exception("broker stats: on_message failed")

    # -- helpers -------------------------------------------------------------------------
    def _check_silence(self) -> None:
        try:
            with self._lock:
                silent = not self._seen_sys and not self._stopped
            if silent:
                self._tell_once(
                    f"no {SYS_PREFIX}... message within {self._silence_s:g} s of subscribing: this broker "
                    "publishes no $SYS counters (embedded amqtt, EMQX, or Mosquitto with sys_interval 0); "
                    "no broker metrics exported"
                )
        except Exception:
            log.exception("broker stats: silence check failed")

    def _tell_once(self, message: str) -> None:
        with self._lock:
            if self._told:
                return
            self._told = True
        log.info("broker stats: %s", message)

    def _log_refusal(self, message: str) -> None:
        with self._lock:
            if message in self._refusals_logged:
                return
            self._refusals_logged.add(message)
        log.warning("broker stats: %s", message)
