"""paho-mqtt adapter. Knows topics as strings and payloads as bytes, nothing of models.

Callbacks only buffer. Requests are acknowledged (PUBACK, manual ack) only after the answer
to them has itself been accepted by the broker, so a worker killed at any point loses no
acknowledged request: the broker redelivers whatever was not acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contract.mqtt_client import connect_properties, make_client, set_tcp_nodelay
from contract.oip import PEEK_BYTES
from contract.oip_binary import HEADER_LENGTH_PROPERTY
from server_app.config import BrokerConfig
from server_app.mqtt_socket import BufferedSocket

log = logging.getLogger(__name__)


MAX_DRAIN_ROUNDS = 1000  # socket reads per poll beyond paho's own (each reads one or more packets)
# W3C Trace Context for MQTT: user properties copied from a request onto its answer.
TRACE_PROPERTIES = frozenset({"traceparent", "tracestate"})
_HEADER_LENGTH_KEY = HEADER_LENGTH_PROPERTY.lower()  # matched as HTTP matches its header: any case


@dataclass(slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    response_topic: str | None
    correlation_data: bytes | None
    received_at: float
    dup: bool = False  # a redelivery by the broker (MQTT DUP flag)
    retain: bool = False  # a retained message, delivered because we subscribed
    trace: tuple[tuple[str, str], ...] = ()
    header_length: str | None = None  # binary tensors: the `Inference-Header-Content-Length` user property


class PackedOnce(Properties):
    """Properties that never change once set: packed once (paho packs them again for every
    publish, walking all ~40 property names: as costly as the rest of a small publish)."""

    def pack(self) -> bytes:
        packed = self.__dict__.get("_packed_once")
        if packed is None:
            packed = bytes(super().pack())
            object.__setattr__(self, "_packed_once", packed)
        return cast(bytes, packed)


@dataclass(slots=True)
class _PendingAnswer:
    request: InboundMessage
    topic: str


class MqttTransport:
    """One MQTT connection of a worker, driven by the serving thread (`poll`), never by a thread
    of its own: no hand-off between a network thread and the serving thread per message (the
    profile showed those hand-offs cost as much as the rest of the worker together).

    Received requests go to `on_message` at once (the worker's inbox decides what to keep). Not
    thread-safe: every method is called from the serving thread.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        on_message: Callable[[InboundMessage], None],
        *,
        receive_maximum: int,
        will_topic: str | None = None,
        will_payload: bytes | None = None,
        on_subscribed: Callable[[], None] = lambda: None,
        on_refused: Callable[[InboundMessage, str, str], None] = lambda request, topic, reason: None,
    ) -> None:
        """`on_refused(request, answer_topic, reason)`: the broker refused an answer (MQTT 5
        PUBACK reason >= 0x80); the request is acknowledged only once that callback has
        published something else for it (or acknowledged it)."""
        self._broker = broker
        self._on_refused = on_refused
        self._deliver = on_message
        self._delivered = 0
        self._content_properties: dict[str, Properties] = {}
        self._on_subscribed = on_subscribed
        self._qos = broker.qos
        self._v5 = broker.mqtt_version == "5"
        self._client = make_client(broker, client_id, manual_ack=True, persistent=True)
        # Answers in flight never exceed unacknowledged requests (bounded by receive_maximum),
        # so paho's own limit only costs a scan per PUBACK.
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        self._receive_maximum = receive_maximum
        if will_topic is not None and will_payload is not None:
            self._client.will_set(will_topic, will_payload, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._filters: list[str] = []
        self._pending_acks: dict[int, _PendingAnswer] = {}  # answer mid -> its request
        self._next_attempt = 0.0
        self._backoff = broker.reconnect_min_delay_s
        self._started = False
        self._connect_called = False
        # Read by the health thread: Events are safe to share.
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client_id = client_id

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, filters: list[str]) -> None:
        """Remember the filters; the first `poll` connects (and reconnects, with backoff)."""
        self._filters = list(filters)
        self._started = True

    def _connect(self) -> None:
        properties = connect_properties(self._broker, True, self._receive_maximum)
        try:
            if not self._connect_called:
                self._client.connect(
                    self._broker.host,
                    self._broker.port,
                    keepalive=self._broker.keepalive_s,
                    clean_start=False if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=properties,
                )
                self._connect_called = True
            else:
                self._client.reconnect()
            self._backoff = self._broker.reconnect_min_delay_s
        except (OSError, ValueError) as exc:
            log.warning(
                "cannot reach broker %s:%d (%s); retrying in %.1fs", self._broker.host, self._broker.port, exc,
                self._backoff,
            )
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._broker.reconnect_max_delay_s)

    def poll(self, timeout: float) -> None:
        """Network I/O for up to `timeout` seconds: read requests and acks, write answers."""
        if not self._started:
            return
        if self._client.socket() is None:
            if time.monotonic() >= self._next_attempt:
                self._connect()
            if self._client.socket() is None:
                time.sleep(min(timeout, max(0.0, self._next_attempt - time.monotonic())))
                return
        delivered = self._delivered
        rc = self._loop(timeout)
        if rc == paho.MQTT_ERR_SUCCESS and self._delivered != delivered:  # nothing read: nothing to drain
            self._drain_socket()
        if rc != paho.MQTT_ERR_SUCCESS and self._client.socket() is None:
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._broker.reconnect_max_delay_s)

    def _loop(self, timeout: float) -> paho.MQTTErrorCode:
        """paho's loop() through its external-loop calls (loop_read, loop_write, loop_misc): no
        socket pair (loop() makes one, then writes a byte to it for every packet queued and
        reads it back: two system calls per packet); reads already buffered need no select;
        what paho wrote (answers since the last poll, acknowledgements) leaves in one send."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return paho.MQTT_ERR_NO_CONN
        buffered = sock if isinstance(sock, BufferedSocket) else None
        if buffered is not None:
            buffered.flush()
        readable = buffered is not None and buffered.buffered() > 0
        if not readable:
            writing = client.want_write() or (buffered is not None and buffered.unsent > 0)
            try:
                ready, _, _ = select.select([sock], [sock] if writing else [], [], timeout)
            except (OSError, ValueError, TypeError):
                ready = [sock]  # let loop_read find out what is wrong with the socket
            readable = bool(ready)
        rc = client.loop_read() if readable else paho.MQTT_ERR_SUCCESS
        if rc == paho.MQTT_ERR_SUCCESS and client.want_write():
            rc = client.loop_write()
        if rc == paho.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if buffered is not None:
            buffered.flush()
        return rc

    def stop_receiving(self) -> None:
        """Unsubscribe, so the broker sends new requests to other replicas while we drain."""
        self.subscribed.clear()
        if self._filters and self.connected.is_set():
            self._client.unsubscribe(list(self._filters))

    def _drain_socket(self) -> None:
        """Read every packet the socket already holds. paho reads only a few per call, so a
        request would otherwise wait in the socket behind another tenant's backlog, out of
        reach of the inbox's fairness (and of its shedding). Bounded: the broker may keep
        sending, and the serving loop must get its turn."""
        for _ in range(MAX_DRAIN_ROUNDS):
            before = self._delivered
            if self._client.loop_read() != paho.MQTT_ERR_SUCCESS or self._delivered == before:
                return

    @property
    def idle(self) -> bool:
        """Every answer confirmed by the broker."""
        return not self._pending_acks

    def close(self) -> None:
        self._client.disconnect()
        self._loop(0.1)

    # -- subscriptions -------------------------------------------------------------------
    def set_filters(self, filters: list[str]) -> None:
        """Subscribe to new filters and drop old ones (tutorial queues change on reload)."""
        old, new = set(self._filters), set(filters)
        self._filters = list(filters)
        if not self.connected.is_set():
            return
        if new - old:
            self._subscribe(sorted(new - old))
        if old - new:
            self._client.unsubscribe(sorted(old - new))

    def _subscribe(self, filters: list[str]) -> None:
        """MQTT 5: no retained messages at subscribe time (retain handling 2), and the retain flag
        as published (a live request published with retain is recognised and refused)."""
        if self._v5:
            options = SubscribeOptions(qos=int(self._qos), retainHandling=2, retainAsPublished=True)
            self._client.subscribe([(f, options) for f in filters])
        else:
            self._client.subscribe([(f, int(self._qos)) for f in filters])

    # -- publishing ----------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        ack: InboundMessage | None = None,
        content_type: str | None = None,
        retain: bool = False,
        header_length: int | None = None,
    ) -> None:
        """Publish; with `ack`, this is the answer to that request: its correlation data and
        trace context go along (MQTT 5), and it is acknowledged once the broker accepted this.
        `header_length`: a binary answer's JSON header length, sent as the user property
        `Inference-Header-Content-Length` (MQTT 5 only; the answer to a request that had it)."""
        properties = None
        if self._v5:
            if ack is not None and (ack.correlation_data is not None or ack.trace or header_length is not None):
                properties = Properties(PacketTypes.PUBLISH)
                if content_type is not None:
                    properties.ContentType = content_type
                if ack.correlation_data is not None:
                    properties.CorrelationData = ack.correlation_data
                user = list(ack.trace)
                if header_length is not None:
                    user.append((HEADER_LENGTH_PROPERTY, str(header_length)))
                if user:
                    properties.UserProperty = user
            elif content_type is not None:
                # paho's Properties() costs as much as the rest of a publish: one per content
                # type, shared (paho only reads it).
                properties = self._content_properties.get(content_type)
                if properties is None:
                    properties = self._content_properties[content_type] = PackedOnce(PacketTypes.PUBLISH)
                    properties.ContentType = content_type
        info = self._client.publish(topic, payload, qos=self._qos, retain=retain, properties=properties)
        # MQTT_ERR_NO_CONN: paho keeps the message and sends it after reconnecting.
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.error("publish to %s failed: %s", topic, paho.error_string(info.rc))
        if ack is not None and ack.qos > 0:
            if self._qos > 0:
                # Only what a refusal needs (topic, properties, the id at the payload's start): the
                # payload itself, up to 1 MiB, must not wait for the broker's acknowledgement too.
                if len(ack.payload) > PEEK_BYTES:
                    ack = dataclasses.replace(ack, payload=ack.payload[:PEEK_BYTES])
                self._pending_acks[info.mid] = _PendingAnswer(ack, topic)  # acked in _on_publish
            else:
                self._client.ack(ack.mid, ack.qos)

    def clear_retained(self, topic: str) -> None:
        """Delete the broker's retained message on `topic` (an empty retained publish), so that
        a retained request is neither kept in the broker's memory nor replayed to new workers.
        MQTT 5 only: there the deletion comes back flagged retained (retain as published) and is
        recognised; an MQTT 3.1.1 subscriber would get it as an empty request."""
        if self._v5:
            self._client.publish(topic, b"", qos=self._qos, retain=True)

    def acknowledge(self, message: InboundMessage) -> None:
        """Acknowledge a request that needs no answer (a de-duplicated retransmission)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # -- paho callbacks (inside poll, on the serving thread: short, never raise) -----------
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
        sock = client.socket()
        if isinstance(sock, socket.socket):
            client._sock = BufferedSocket(sock)  # type: ignore[assignment]  # paho has no hook for this
        self.connected.set()
        log.info("connected to %s:%d as %s (session present: %s)", self._broker.host, self._broker.port,
                 self.client_id, flags.session_present)
        if self._filters:
            self._subscribe(self._filters)

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
        # Unconfirmed answers: paho resends them after reconnecting (persistent session) and
        # their PUBACKs still arrive; the broker redelivers the requests we did not ack.
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
            trace: tuple[tuple[str, str], ...] = ()
            header_length = None
            if self._v5 and message.properties is not None:
                response_topic = getattr(message.properties, "ResponseTopic", None)
                correlation = getattr(message.properties, "CorrelationData", None)
                user = getattr(message.properties, "UserProperty", None)
                if user:
                    trace = tuple((k, v) for k, v in user if k in TRACE_PROPERTIES)[:4]
                    header_length = next((v for k, v in user if k.lower() == _HEADER_LENGTH_KEY), None)
            inbound = InboundMessage(
                message.topic, bytes(message.payload), message.mid, message.qos, response_topic, correlation,
                time.monotonic(), bool(message.dup), bool(message.retain), trace, header_length,
            )
            self._delivered += 1
            self._deliver(inbound)
        except Exception:  # an exception here would break paho's read loop
            log.exception("a received message could not be handed over")

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        pending = self._pending_acks.pop(mid, None)
        if pending is None:
            return
        if reason_code.is_failure:
            try:
                self._on_refused(pending.request, pending.topic, reason_code.getName())
            except Exception:
                log.exception("on_refused callback failed; acknowledging the request")
                client.ack(pending.request.mid, 1)
            return
        client.ack(pending.request.mid, 1)
