"""The suite's one MQTT test client: :class:`MqttProbe` (paho 2.x, bounded waits).

As an observer it subscribes, waits for messages by count, predicate or topic filter, and
checks that nothing arrived. As a tenant (:meth:`MqttProbe.for_tenant`) it sends requests
without waiting (:meth:`~MqttProbe.send`), remembers the broker's PUBACK reason code of each,
republishes the ones no subscriber took (v5 0x10), and collects answers by id.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.messages import (
    MqttProbeError,
    Payload,
    ReceivedMessage,
    Sent,
    TlsFiles,
    encode_payload,
    protocol_constant,
    tenant_filters,
    v5_properties,
)
from tests.support.probe_records import ProbeRecords

_probe_ids = itertools.count(1)


class MqttProbe(ProbeRecords):
    """A paho-mqtt 2.x test client with bounded waits.

    - ``TCP_NODELAY`` on every (re)connect; paho's network thread reconnects by itself
      after a broker restart (:meth:`wait_connected`), and subscribes ``subscribe_on_connect``
      again each time (:meth:`connect` waits for that SUBACK too).
    - :meth:`publish` and :meth:`subscribe` wait for the broker's acknowledgement;
      :meth:`send` does not, and tracks the request by id.
    - Everything received is kept in order (:attr:`messages`, :meth:`wait_for`); JSON
      objects with an ``id`` are also indexed by it (:meth:`wait_answers`, :meth:`snapshot`).

    ``clean_session`` means clean session (3.1.1) or clean start (5). For a persistent
    session give a fixed ``client_id``, ``clean_session=False`` and (v5) ``session_expiry_s``.
    """

    v5_properties = staticmethod(v5_properties)

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        protocol: str | int = "3.1.1",
        clean_session: bool = True,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        session_expiry_s: int | None = None,
        max_inflight: int = 1000,
        tls: TlsFiles | None = None,
        subscribe_on_connect: Iterable[str] = (),
        tenant: str | None = None,
    ) -> None:
        self.host, self.port, self.tenant = host, port, tenant
        self.protocol = protocol_constant(protocol)
        self.client_id = client_id or f"probe-{os.getpid()}-{next(_probe_ids)}-{uuid.uuid4().hex[:6]}"
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.session_expiry_s = session_expiry_s
        self.filters = list(subscribe_on_connect)
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._answers: dict[str, list[ReceivedMessage]] = {}
        self._received = 0
        self._connected = False
        self._connack: ReasonCode | None = None
        self._session_present: bool | None = None
        self._disconnects = 0
        self.connects = 0
        self._filters_mid: int | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._unsubacks: dict[int, list[ReasonCode]] = {}
        self._puback_rc: dict[int, int] = {}  # by mid; mids repeat after 65535 publishes of one client
        self._puback_order: list[int] = []
        self._sent: list[Sent] = []
        self._callback_errors: list[BaseException] = []
        self._closed = False
        self._loop_started = False

        v5 = self.protocol == mqtt.MQTTv5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else clean_session,
            protocol=self.protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_file),
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.client.max_inflight_messages_set(max_inflight)
        # paho sleeps in min(delay, 1 s) steps before reconnecting, and loop_stop() waits
        # for that sleep: sub-second delays (floats work; paho annotates int) keep both
        # reconnects after a broker restart and close() after a broker died fast.
        self.client.reconnect_delay_set(min_delay=cast(int, 0.1), max_delay=cast(int, 0.5))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_publish = self._on_publish

    @classmethod
    def for_tenant(
        cls,
        host: str,
        port: int,
        tenant: str,
        *,
        persistent: bool = False,
        subscribe: Iterable[str] | None = None,
        protocol: str = "5",
        **kwargs: Any,
    ) -> MqttProbe:
        """A tenant (MQTT 5 by default) reading its responses and errors (or ``subscribe``).

        ``persistent`` keeps its session an hour: answers published while it reconnects
        (broker restart) are queued for it. Not connected yet (use ``with`` or ``connect()``).
        """
        kwargs.setdefault("client_id", f"tenant-{tenant}-{os.getpid()}-{time.monotonic_ns() % 10**9}")
        if persistent:
            kwargs.update(clean_session=False, session_expiry_s=3600)
        filters = tenant_filters(tenant) if subscribe is None else list(subscribe)
        return cls(host, port, protocol=protocol, subscribe_on_connect=filters, tenant=tenant, **kwargs)

    # -- paho callbacks (network thread): record and notify only

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:  # fmt: skip
        mid = None
        if not reason_code.is_failure:
            sock = client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.filters:
                mid = client.subscribe([(f, 1) for f in self.filters])[1]
        with self._cond:
            self._filters_mid = mid
            self._connack = reason_code
            self._connected = not reason_code.is_failure
            self.connects += self._connected
            self._session_present = bool(flags.session_present)
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:  # fmt: skip
        with self._cond:
            self._connected = False
            self._disconnects += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            received = ReceivedMessage.of(message, time.monotonic())
        except Exception as exc:  # never let an exception kill paho's network thread
            with self._cond:
                self._callback_errors.append(exc)
            return
        request_id = received.request_id
        with self._cond:
            self._messages.append(received)
            self._received += 1
            if request_id is not None:
                self._answers.setdefault(request_id, []).append(received)
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:  # fmt: skip
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                        properties: Properties | None) -> None:  # fmt: skip
        with self._cond:
            self._unsubacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        value = int(reason_code.value) if isinstance(reason_code, ReasonCode) else 0
        with self._cond:
            self._puback_rc[mid] = value
            self._puback_order.append(value)

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait (holding the lock while checking) until ``condition()``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    # -- connection

    def connect(self, timeout: float | None = None) -> MqttProbe:
        """Connect and wait for CONNACK (and the SUBACK of ``subscribe_on_connect``).

        :class:`MqttProbeError` (with ``reason_code``) if the broker refuses or closes."""
        timeout = self.connect_timeout if timeout is None else timeout
        properties: Properties | None = None
        if self.protocol == mqtt.MQTTv5 and self.session_expiry_s is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry_s
        with self._cond:
            self._connack = None
            disconnects_before = self._disconnects
        try:
            if self.protocol == mqtt.MQTTv5:
                self.client.connect(self.host, self.port, self.keepalive, clean_start=self.clean_session,
                                    properties=properties)  # fmt: skip
            else:
                self.client.connect(self.host, self.port, self.keepalive)
        except OSError as exc:
            raise MqttProbeError(f"{self.client_id}: cannot reach {self.host}:{self.port}: {exc}") from exc
        if not self._loop_started:
            self.client.loop_start()
            self._loop_started = True
        self._wait(lambda: self._connack is not None or self._disconnects != disconnects_before, timeout)
        with self._cond:
            connack, mid = self._connack, self._filters_mid
            closed_early = self._disconnects != disconnects_before and connack is None
        if connack is not None and not connack.is_failure:
            if mid is not None:
                codes = self._wait_ack(self._subacks, mid, timeout, f"SUBACK for {self.filters}")
                if any(code.is_failure for code in codes):
                    raise MqttProbeError(f"{self.client_id}: subscription to {self.filters} refused", codes[0])
            return self
        self._stop_loop()
        where = f"{self.host}:{self.port}"
        if connack is not None:
            raise MqttProbeError(
                f"{self.client_id}: broker {where} refused the connection: {connack} ({connack.value:#04x})", connack
            )
        if closed_early:
            raise MqttProbeError(f"{self.client_id}: broker {where} closed the connection before CONNACK")
        raise MqttProbeError(f"{self.client_id}: no CONNACK from {where} within {timeout:.1f} s")

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def session_present(self) -> bool | None:
        """The CONNACK session-present flag of the latest connection."""
        with self._cond:
            return self._session_present

    @property
    def connack(self) -> ReasonCode | None:
        with self._cond:
            return self._connack

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until paho's loop has (re)connected, e.g. after a broker restart."""
        if not self._wait(lambda: self._connected, timeout):
            raise TimeoutError(f"{self.client_id}: not reconnected within {timeout:.1f} s")

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        if not self._wait(lambda: not self._connected, timeout):
            raise TimeoutError(f"{self.client_id}: still connected after {timeout:.1f} s")

    # -- subscribe / publish

    def subscribe(self, filters: str | Iterable[str], qos: int = 1, *, timeout: float = 10.0,
                  check: bool = True) -> list[int]:  # fmt: skip
        """Subscribe and wait for SUBACK; the granted QoS / reason code per filter.

        With ``check`` (default) a refused filter (reason code >= 0x80) raises.
        """
        topics = [filters] if isinstance(filters, str) else list(filters)
        result, mid = self.client.subscribe([(t, qos) for t in topics])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttProbeError(f"{self.client_id}: subscribe {topics} failed: {mqtt.error_string(result)}")
        codes = self._wait_ack(self._subacks, mid, timeout, f"SUBACK for {topics}")
        values = [code.value for code in codes]
        if check and any(code.is_failure for code in codes):
            raise MqttProbeError(f"{self.client_id}: subscription to {topics} refused: {values}", codes[0])
        return values

    def unsubscribe(self, filters: str | Iterable[str], *, timeout: float = 10.0) -> None:
        topics = [filters] if isinstance(filters, str) else list(filters)
        result, mid = self.client.unsubscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttProbeError(f"{self.client_id}: unsubscribe {topics} failed: {mqtt.error_string(result)}")
        self._wait_ack(self._unsubacks, mid, timeout, f"UNSUBACK for {topics}")

    def _wait_ack(self, acks: dict[int, list[ReasonCode]], mid: int, timeout: float, what: str) -> list[ReasonCode]:
        if not self._wait(lambda: mid in acks, timeout):
            raise TimeoutError(f"{self.client_id}: no {what} within {timeout:.1f} s")
        with self._cond:
            return acks.pop(mid)

    def publish(self, topic: str, payload: Payload = b"", qos: int = 1, *, retain: bool = False,
                properties: Properties | None = None, wait: bool = True,
                timeout: float = 10.0) -> mqtt.MQTTMessageInfo:  # fmt: skip
        """Publish (dicts/lists as compact JSON) and, with ``wait``, block until done.

        Done means PUBACK (QoS 1) / PUBCOMP (QoS 2) received, or written to the socket (QoS 0).
        """
        info = self.client.publish(topic, encode_payload(payload), qos, retain=retain, properties=properties)
        if wait:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                raise MqttProbeError(f"{self.client_id}: publish to {topic!r} failed: {exc}") from exc
            if not info.is_published():
                raise TimeoutError(f"{self.client_id}: publish to {topic!r} not acknowledged within {timeout:.1f} s")
        return info

    @property
    def puback_reasons(self) -> list[int]:
        """Reason codes of the PUBACKs received so far, in arrival order (0 on MQTT 3.1.1)."""
        with self._cond:
            return list(self._puback_order)

    # -- shutdown

    def _stop_loop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._loop_started:
            self.client.loop_stop()
            self._loop_started = False

    def close(self) -> None:
        """Send DISCONNECT (a persistent session stays on the broker) and stop the network thread."""
        if self._closed:
            return
        self._closed = True
        self._stop_loop()

    def __enter__(self) -> MqttProbe:
        if not self.connected:
            self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MqttProbe({self.client_id!r} -> {self.host}:{self.port}, connected={self.connected})"
