"""paho-mqtt adapter. Knows topics as strings and payloads as bytes, nothing of models.

Callbacks only enqueue. Requests are acknowledged (PUBACK, manual ack) only after the answer
to them has itself been accepted by the broker, so a worker killed at any point loses no
acknowledged request: the broker redelivers whatever was not acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from server_app.config import BrokerConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    response_topic: str | None
    correlation_data: bytes | None
    received_at: float


def set_tcp_nodelay(client: paho.Client) -> None:
    """Nagle plus delayed ACK turns sub-millisecond QoS 1 round trips into ~40 ms stalls."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # e.g. a socket closed meanwhile
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(
    broker: BrokerConfig, client_id: str, *, manual_ack: bool = False, persistent: bool = True
) -> paho.Client:
    """A paho client configured from BrokerConfig (protocol, credentials, TLS, backoff)."""
    v5 = broker.mqtt_version == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    password = broker.resolve_password()
    if broker.username is not None:
        client.username_pw_set(broker.username, password)
    if broker.tls is not None:
        client.tls_set(
            ca_certs=str(broker.tls.ca_file),
            certfile=str(broker.tls.cert_file) if broker.tls.cert_file else None,
            keyfile=str(broker.tls.key_file) if broker.tls.key_file else None,
        )
        client.tls_insecure_set(broker.tls.insecure)
    # paho's hints say int, but it computes with floats: sub-second first retries shorten the
    # window in which a restarted broker has no subscriber for our shared subscription.
    client.reconnect_delay_set(
        min_delay=cast(int, broker.reconnect_min_delay_s), max_delay=cast(int, broker.reconnect_max_delay_s)
    )
    return client


def connect_properties(broker: BrokerConfig, persistent: bool, receive_maximum: int) -> Properties | None:
    if broker.mqtt_version != "5":
        return None
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = broker.session_expiry_s
    properties.ReceiveMaximum = min(receive_maximum, 65535)
    return properties


class MqttTransport:
    """One MQTT connection of a worker: subscribe, enqueue, publish, acknowledge."""

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        inbox: queue.Queue[InboundMessage],
        on_overflow: Callable[[InboundMessage], None],
        *,
        max_inflight: int,
        will_topic: str | None = None,
        will_payload: bytes | None = None,
        on_subscribed: Callable[[], None] = lambda: None,
    ) -> None:
        self._broker = broker
        self._inbox = inbox
        self._on_overflow = on_overflow
        self._on_subscribed = on_subscribed
        self._qos = broker.qos
        self._v5 = broker.mqtt_version == "5"
        self._client = make_client(broker, client_id, manual_ack=True, persistent=True)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._receive_maximum = max_inflight
        if will_topic is not None and will_payload is not None:
            self._client.will_set(will_topic, will_payload, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._lock = threading.Lock()
        self._filters: list[str] = []
        self._pending_acks: dict[int, int] = {}  # response mid -> request mid
        # An answer can be confirmed before publish() returns its mid to us; such mids wait here.
        self._early_done: set[int] = set()
        self._publishing_with_ack = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client_id = client_id

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, filters: list[str]) -> None:
        self._filters = list(filters)
        properties = connect_properties(self._broker, True, self._receive_maximum)
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            keepalive=self._broker.keepalive_s,
            clean_start=False if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    def loop_alive(self) -> bool:
        thread = getattr(self._client, "_thread", None)
        return thread is not None and thread.is_alive()

    def stop_receiving(self) -> None:
        """Unsubscribe, so the broker sends new requests to other replicas while we drain."""
        self.subscribed.clear()
        if self._filters and self.connected.is_set():
            self._client.unsubscribe(list(self._filters))

    def wait_acked(self, timeout: float) -> bool:
        """Wait until every answer is accepted by the broker (and so its request acknowledged)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending_acks and self._publishing_with_ack == 0:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # -- subscriptions -------------------------------------------------------------------
    def set_filters(self, filters: list[str]) -> None:
        """Subscribe to new filters and drop old ones (tutorial queues change on reload)."""
        old, new = set(self._filters), set(filters)
        self._filters = list(filters)
        if not self.connected.is_set():
            return
        if new - old:
            self._client.subscribe([(f, int(self._qos)) for f in sorted(new - old)])
        if old - new:
            self._client.unsubscribe(sorted(old - new))

    # -- publishing ----------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        ack: InboundMessage | None = None,
        correlation_data: bytes | None = None,
        retain: bool = False,
    ) -> None:
        """Publish an answer; acknowledge `ack` once the broker has accepted the answer."""
        properties = None
        if correlation_data is not None and self._v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation_data
        request_mid = ack.mid if ack is not None and ack.qos > 0 else None
        if request_mid is None:
            info = self._client.publish(topic, payload, qos=self._qos, retain=retain, properties=properties)
            self._log_failure(topic, info.rc)
            return
        with self._lock:
            self._publishing_with_ack += 1
        info = self._client.publish(topic, payload, qos=self._qos, retain=retain, properties=properties)
        self._log_failure(topic, info.rc)
        with self._lock:
            self._publishing_with_ack -= 1
            done_now = info.mid in self._early_done
            if done_now:
                self._early_done.discard(info.mid)
            else:
                self._pending_acks[info.mid] = request_mid
            if self._publishing_with_ack == 0:
                self._early_done.clear()
        if done_now:
            self._client.ack(request_mid, 1)

    @staticmethod
    def _log_failure(topic: str, rc: int) -> None:
        # MQTT_ERR_NO_CONN: paho keeps the message and sends it after reconnecting.
        if rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.error("publish to %s failed: %s", topic, paho.error_string(rc))

    def acknowledge(self, message: InboundMessage) -> None:
        """Acknowledge a request that needs no answer (a de-duplicated retransmission)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # -- paho callbacks (network thread: short, never raise) -------------------------------
    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        set_tcp_nodelay(client)
        self.connected.set()
        log.info("connected to %s:%d as %s (session present: %s)", self._broker.host, self._broker.port,
                 self.client_id, flags.session_present)
        if self._filters:
            client.subscribe([(f, int(self._qos)) for f in self._filters])

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if reason_code.is_failure:
            log.warning("disconnected from broker (%s); reconnecting with backoff", reason_code)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("broker refused subscription(s): %s", refused)
        elif self._filters and not self.subscribed.is_set():
            self.subscribed.set()
            try:
                self._on_subscribed()
            except Exception:
                log.exception("on_subscribed callback failed")

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            response_topic = correlation = None
            if self._v5 and message.properties is not None:
                response_topic = getattr(message.properties, "ResponseTopic", None)
                correlation = getattr(message.properties, "CorrelationData", None)
            inbound = InboundMessage(
                message.topic, bytes(message.payload), message.mid, message.qos, response_topic, correlation,
                time.monotonic(),
            )
            try:
                self._inbox.put_nowait(inbound)
            except queue.Full:
                self._on_overflow(inbound)
        except Exception:  # an exception here would kill paho's network thread
            log.exception("dropping a message that could not be queued")

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            request_mid = self._pending_acks.pop(mid, None)
            if request_mid is None and self._publishing_with_ack > 0:
                self._early_done.add(mid)
        if request_mid is not None:
            client.ack(request_mid, 1)
