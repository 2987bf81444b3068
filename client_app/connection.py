"""`BrokerConnection`: one tenant client's MQTT session, knowing nothing of requests.

It connects (MQTT 5, or 3.1.1, or ``auto``: 5 falling back to 3.1.1 when the broker refuses
it or stays silent), waits for CONNACK and for the SUBACK of the reply topics, and turns
every refusal into a `ClientConnectError` that says what to change. Once connected, paho's
network thread runs; it reconnects with backoff, and with MQTT 5 the broker keeps the
session (and the answers arriving for it) for ``session_expiry_s`` across a connection
loss. `close` ends that session.

`publish` tracks MQTT 5 PUBACKs: reason 0x10 "no matching subscribers" (the broker accepted
the request but no worker was subscribed, e.g. a Mosquitto restart before the workers
resubscribed) is reported to ``on_unrouted`` with the key the message was published under,
so the owner can publish it again.

Callbacks run in paho's network thread: they are short and never raise.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from client_app.config import ClientBrokerConfig
from client_app.errors import ClientConnectError, ClientError
from contract.mqtt_client import make_client, set_tcp_nodelay

log = logging.getLogger(__name__)

MAX_INFLIGHT = 1000
AUTO_V5_CONNACK_WAIT_S = 1.0  # "auto": a broker silent this long after an MQTT 5 CONNECT gets 3.1.1
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code
_UNSUPPORTED_PROTOCOL = {1, 0x84}  # 3.1.1 "unacceptable protocol version", v5 "unsupported protocol version"
_BAD_CREDENTIALS = {4, 5, 0x86, 0x87}


class _ProtocolRefusedError(Exception):
    pass


def _protocol_refused(code: ReasonCode | None) -> bool:
    return code is not None and code.value in _UNSUPPORTED_PROTOCOL


class BrokerConnection:
    """Connect, subscribe to `reply_topics`, publish, close (see the module docstring)."""

    def __init__(
        self,
        broker: ClientBrokerConfig,
        client_id: str,
        reply_topics: Sequence[str],
        *,
        on_message: Callable[[paho.MQTTMessage], None],
        on_unrouted: Callable[[str], None],
    ) -> None:
        self.client_id = client_id
        self.reply_topics = tuple(reply_topics)
        self._base = broker
        self._broker = broker
        self._qos = int(broker.qos)
        self._on_message_cb = on_message
        self._on_unrouted = on_unrouted
        self._client: paho.Client | None = None
        self._lock = threading.Lock()
        # mid -> key while a PUBACK is awaited; PUBACKs that beat publish() returning its mid
        self._publish_mids: dict[int, str] = {}
        self._early_pubacks: dict[int, int] = {}
        self._publishing = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._settled = threading.Event()  # CONNACK (good or bad) arrived
        self._suback_event = threading.Event()  # SUBACK (good or bad) arrived
        self._connack: ReasonCode | None = None
        self._suback_mid: int | None = None
        self._suback: list[ReasonCode] | None = None
        self._closed = False
        self.disconnects = 0

    @property
    def protocol_version(self) -> str:
        return self._broker.mqtt_version

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def is_open(self) -> bool:
        """Connected once and not closed (paho may be reconnecting)."""
        return self._client is not None and not self._closed

    # -- connecting ----------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to the reply topics and wait for SUBACK; ClientConnectError if not."""
        if self._client is not None:
            raise ClientError("already connected")
        base = self._base
        versions = ["5", "3.1.1"] if base.protocol == "auto" else [base.protocol]
        for index, version in enumerate(versions):
            broker = base.model_copy(update={"protocol": version})
            fallback_left = index + 1 < len(versions)
            try:
                # amqtt may answer an MQTT 5 CONNECT with silence instead of a refusal: do not wait long
                connack_wait = min(timeout, AUTO_V5_CONNACK_WAIT_S) if fallback_left else timeout
                self._connect_once(broker, timeout, connack_wait, silence_is_refusal=fallback_left)
                return
            except _ProtocolRefusedError as exc:
                if fallback_left:
                    log.info("broker %s:%d refused MQTT %s (%s); retrying with %s", base.host, base.port, version,
                             exc, versions[index + 1])
                    continue
                raise ClientConnectError(
                    f"broker {base.host}:{base.port} refused MQTT {version} ({exc}); "
                    'set broker.protocol to "3.1.1" or "auto"'
                ) from None
        raise AssertionError("unreachable")

    def _connect_once(
        self, broker: ClientBrokerConfig, timeout: float, connack_wait: float, *, silence_is_refusal: bool
    ) -> None:
        """One attempt. The handshake runs paho's loop in this thread (no reconnect backoff to
        wait out when the broker says no); the network thread starts once CONNACK is good."""
        self._broker = broker
        self._connack = None
        self._suback = None
        self._suback_mid = None
        self._settled.clear()
        self._suback_event.clear()
        client = make_client(broker, self.client_id, persistent=False)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        where = f"{broker.host}:{broker.port}"
        started = time.monotonic()
        try:
            if broker.mqtt_version == "5":
                # A session the broker keeps across connection losses for session_expiry_s, so answers
                # published while we reconnect are not lost; close() ends it. clean_start stays False
                # even on the first connect (the client id is new each run, so there is nothing to
                # resume): Mosquitto 2.0.11 does not persist a clean-start session over its restart.
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = broker.session_expiry_s
                client.connect(broker.host, broker.port, broker.keepalive_s, clean_start=False,
                               properties=properties)
            else:
                client.connect(broker.host, broker.port, broker.keepalive_s)
        except (OSError, ValueError) as exc:
            raise ClientConnectError(f"cannot reach the broker at {where}: {exc}") from None
        try:
            self._await_connack(client, broker, where, started + connack_wait, connack_wait, silence_is_refusal)
            self._client = client
            client.loop_start()
            if not self._suback_event.wait(max(0.0, started + timeout - time.monotonic())):
                raise ClientConnectError(f"no SUBACK from the broker at {where} within {timeout:g} s")
            suback: list[ReasonCode] = self._suback or []
            refused = {t: str(c) for t, c in zip(self.reply_topics, suback, strict=False) if c.is_failure}
            if refused:
                raise ClientConnectError(
                    f"the broker at {where} refused the subscription(s) {refused}"
                    f" (check the broker's ACL for user {broker.username!r})"
                )
        except BaseException:
            self._client = None
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()
            raise
        log.info("connected to %s as %s (MQTT %s), subscribed to %s", where, self.client_id,
                 broker.mqtt_version, ", ".join(self.reply_topics))

    def _await_connack(
        self,
        client: paho.Client,
        broker: ClientBrokerConfig,
        where: str,
        deadline: float,
        connack_wait: float,
        silence_is_refusal: bool,
    ) -> None:
        while not self._settled.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if silence_is_refusal:
                    raise _ProtocolRefusedError(f"no CONNACK within {connack_wait:g} s")
                hint = (
                    " (a broker that speaks only MQTT 3.1.1, like the embedded amqtt broker, may not answer an "
                    'MQTT 5 CONNECT: try broker.protocol "3.1.1" or "auto")'
                    if broker.mqtt_version == "5"
                    else ""
                )
                raise ClientConnectError(f"no CONNACK from the broker at {where} within {connack_wait:g} s{hint}")
            if client.loop(timeout=min(remaining, 0.1)) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        connack = self._connack
        if connack is None:
            if broker.mqtt_version == "5":  # e.g. amqtt with authentication: no CONNACK at all for v5
                raise _ProtocolRefusedError("connection closed before CONNACK")
            raise ClientConnectError(f"the broker at {where} closed the connection before CONNACK")
        if connack.is_failure:
            if _protocol_refused(connack):
                raise _ProtocolRefusedError(str(connack))
            hint = " (check broker.username and broker.password)" if connack.value in _BAD_CREDENTIALS else ""
            raise ClientConnectError(f"the broker at {where} refused the connection: {connack}{hint}")

    def close(self) -> None:
        """Disconnect; with MQTT 5 the broker drops the session (nothing left to deliver to)."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is None:
            return
        properties = None
        if self._broker.mqtt_version == "5" and self._broker.session_expiry_s > 0:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0  # the session ends with us
        with contextlib.suppress(Exception):
            client.disconnect(properties=properties)
        client.loop_stop()

    # -- publishing ----------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, key: str) -> MQTTErrorCode:
        """Publish at the configured QoS; `on_unrouted(key)` if the broker had no subscriber."""
        client = self._client
        if client is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self._qos == 0 or self.protocol_version != "5":
            return client.publish(topic, payload, qos=self._qos).rc
        with self._lock:
            self._publishing += 1
        info = client.publish(topic, payload, qos=self._qos)
        with self._lock:
            self._publishing -= 1
            early = self._early_pubacks.pop(info.mid, None)
            if early is None:
                self._publish_mids[info.mid] = key
            if self._publishing == 0:
                self._early_pubacks.clear()
        if early == NO_MATCHING_SUBSCRIBERS:
            self._on_unrouted(key)
        return info.rc

    # -- paho callbacks (network thread: short, never raise) -----------------------------
    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._connack = reason_code
            if reason_code.is_failure:
                self._settled.set()
                return
            set_tcp_nodelay(client)
            self._connected.set()
            _, mid = client.subscribe([(topic, self._qos) for topic in self.reply_topics])
            self._suback_mid = mid
            self._settled.set()
        except Exception:
            log.exception("on_connect failed")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self.disconnects += 1
        connack = self._connack
        if connack is None:
            self._settled.set()
        if reason_code.is_failure and not self._closed and connack is not None and not connack.is_failure:
            log.warning("disconnected from the broker (%s); paho reconnects with backoff", reason_code)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._suback_mid:
            return
        self._suback = list(reason_codes)
        if any(code.is_failure for code in reason_codes):
            log.error("broker refused subscription(s) %s: %s", self.reply_topics, [str(c) for c in reason_codes])
        else:
            self._subscribed.set()
        self._suback_event.set()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        code = reason_code.value if isinstance(reason_code, ReasonCode) else 0
        with self._lock:
            key = self._publish_mids.pop(mid, None)
            if key is None:
                if self._publishing > 0:
                    self._early_pubacks[mid] = code
                return
        if code == NO_MATCHING_SUBSCRIBERS:
            self._on_unrouted(key)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            self._on_message_cb(message)
        except Exception:  # an exception here would kill paho's network thread
            log.exception("could not handle a message on %s", message.topic)
