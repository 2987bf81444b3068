"""`TenantClient`: one tenant's MQTT connection to the inference service.

Connect (waiting for CONNACK and SUBACK), send windows, get a `Future[Answer]` per request,
correlated by request id (Open Inference Protocol format) or first-in first-out (tutorial
format, whose replies carry no id). Usable from the CLI, tests and benchmarks::

    with TenantClient(config) as client:          # connects, subscribes
        answer = client.request([[10, 11, 12, 12, 11, 10]])
        futures = [client.submit(w) for w in windows]

Threads: paho's network thread runs the callbacks, which only parse, resolve futures and
enqueue (never raise); everything else runs in the caller's threads. A future's done
callbacks and ``on_answer`` run in the network thread: keep them short.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from client_app.config import ClientBrokerConfig, TenantClientConfig
from contract import oip, topics, tutorial
from contract.mqtt_client import make_client, set_tcp_nodelay

log = logging.getLogger(__name__)

MAX_INFLIGHT = 1000
AUTO_V5_CONNACK_WAIT_S = 1.0  # "auto": a broker silent this long after an MQTT 5 CONNECT gets 3.1.1
_UNSUPPORTED_PROTOCOL = {1, 0x84}  # 3.1.1 "unacceptable protocol version", v5 "unsupported protocol version"


class ClientError(Exception):
    """Root of the client's errors."""


class ClientConnectError(ClientError):
    """The broker could not be reached, refused the connection or the subscriptions."""


class RequestTimeout(ClientError):
    """No answer within ``request_timeout_s`` (or the client closed first)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one request: forecasts (raw units) or a structured error."""

    id: str
    windows: int
    sent_at: float  # time.monotonic() when published
    received_at: float  # time.monotonic() when the network thread got the reply
    forecasts: tuple[float, ...] | None
    model_name: str | None = None
    model_version: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @property
    def latency_ms(self) -> float:
        return (self.received_at - self.sent_at) * 1000.0


@dataclass(slots=True)
class _Pending:
    id: str
    windows: int
    sent_at: float
    future: Future[Answer]
    payload: bytes = b""
    attempts: int = 1


NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code
MAX_PUBLISH_ATTEMPTS = 30


def new_run_token() -> str:
    return secrets.token_hex(4)


def _protocol_refused(code: ReasonCode | None) -> bool:
    return code is not None and code.value in _UNSUPPORTED_PROTOCOL


class TenantClient:
    """One tenant's connection; thread-safe `submit`/`request` from any number of threads."""

    def __init__(
        self,
        config: TenantClientConfig,
        *,
        client_id: str | None = None,
        run_token: str | None = None,
        answers: queue.Queue[Answer] | None = None,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        """`answers`: every answer is also put here (for a consumer loop); `on_answer` is
        called in the network thread (exceptions are logged, never propagated)."""
        self.config = config
        self.run_token = run_token or new_run_token()
        self.client_id = client_id or config.client_id or f"{config.tenant}-client-{self.run_token}"
        self._id_prefix = f"{config.tenant}-{self.run_token}-"
        self._answers = answers
        self._on_answer = on_answer
        self._tutorial = config.format == "tutorial"
        if self._tutorial:
            assert config.in_queue is not None and config.out_queue is not None
            self.request_topic = config.in_queue
            self.reply_topics: tuple[str, ...] = (config.out_queue,)
        else:
            self.request_topic = topics.request_topic(config.tenant, config.model)
            self.reply_topics = (
                topics.response_topic(config.tenant, config.model),
                topics.errors_topic(config.tenant),
            )
        self._qos = int(config.broker.qos)
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._expired: set[str] = set()
        # MQTT 5 PUBACK 0x10 "no matching subscribers": the broker accepted the request but no
        # worker was subscribed (e.g. a Mosquitto restart before the workers resubscribed);
        # such requests are published again. mid -> request id while a PUBACK is awaited.
        self._publish_mids: dict[int, str] = {}
        self._early_pubacks: dict[int, int] = {}
        self._publishing = 0
        self.republished = 0
        self._seq = 0
        self._client: paho.Client | None = None
        self._broker: ClientBrokerConfig = config.broker
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._settled = threading.Event()  # CONNACK (good or bad) arrived
        self._suback_event = threading.Event()  # SUBACK (good or bad) arrived
        self._connack: ReasonCode | None = None
        self._suback_mid: int | None = None
        self._suback: list[ReasonCode] | None = None
        self._closed = False
        # counters, read by anyone (ints: updates under the lock)
        self.late = 0
        self.duplicates = 0
        self.foreign = 0
        self.malformed = 0
        self.uncorrelated_errors: list[tuple[str | None, str]] = []
        self.disconnects = 0

    # -- connection --------------------------------------------------------------------
    @property
    def protocol_version(self) -> str:
        return self._broker.mqtt_version

    def connect(self, timeout: float = 10.0) -> TenantClient:
        """Connect, subscribe to the reply topics and wait for SUBACK; ClientConnectError if not."""
        if self._client is not None:
            raise ClientError("already connected")
        base = self.config.broker
        versions = ["5", "3.1.1"] if base.protocol == "auto" else [base.protocol]
        for index, version in enumerate(versions):
            broker = base.model_copy(update={"protocol": version})
            fallback_left = index + 1 < len(versions)
            try:
                # amqtt may answer an MQTT 5 CONNECT with silence instead of a refusal: do not wait long
                connack_wait = min(timeout, AUTO_V5_CONNACK_WAIT_S) if fallback_left else timeout
                self._connect_once(broker, timeout, connack_wait, silence_is_refusal=fallback_left)
                return self
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
            connack_deadline = started + connack_wait
            while not self._settled.is_set():
                remaining = connack_deadline - time.monotonic()
                if remaining <= 0:
                    if silence_is_refusal:
                        raise _ProtocolRefusedError(f"no CONNACK within {connack_wait:g} s")
                    hint = (
                        " (a broker that speaks only MQTT 3.1.1, like the embedded amqtt broker, may not answer an "
                        'MQTT 5 CONNECT: try broker.protocol "3.1.1" or "auto")'
                        if broker.mqtt_version == "5"
                        else ""
                    )
                    raise ClientConnectError(
                        f"no CONNACK from the broker at {where} within {connack_wait:g} s{hint}"
                    )
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
                hint = " (check broker.username and broker.password)" if connack.value in (4, 5, 0x86, 0x87) else ""
                raise ClientConnectError(f"the broker at {where} refused the connection: {connack}{hint}")
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

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect; requests still pending fail with RequestTimeout."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            properties = None
            if self._broker.mqtt_version == "5" and self._broker.session_expiry_s > 0:
                properties = Properties(PacketTypes.DISCONNECT)
                properties.SessionExpiryInterval = 0  # the session ends with us
            with contextlib.suppress(Exception):
                client.disconnect(properties=properties)
            client.loop_stop()
        with self._lock:
            leftovers = list(self._pending.values())
            self._pending.clear()
        for pending in leftovers:
            if not pending.future.done():
                pending.future.set_exception(RequestTimeout(f"request {pending.id}: client closed before its answer"))

    def __enter__(self) -> TenantClient:
        if self._client is None:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- requests ----------------------------------------------------------------------
    def next_id(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{self._id_prefix}{self._seq:07d}"

    def encode(self, request_id: str, windows: np.ndarray) -> bytes:
        """The payload for windows [b, window] (oldest reading first) in the configured format."""
        if self._tutorial:
            norm = self.config.normalization
            assert norm is not None
            row = windows[0]
            return tutorial.encode_request(row, norm.offset, norm.scale)
        return oip.encode_request(request_id, windows, {"sent_at": time.time()})

    def submit(self, windows: np.ndarray | Sequence[Sequence[float]], request_id: str | None = None) -> Future[Answer]:
        """Publish one request of windows [b, window]; its answer resolves the returned future."""
        client = self._client
        if client is None:
            raise ClientError("not connected: call connect() first")
        array = np.asarray(windows, dtype=np.float64)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[0] < 1:
            raise ValueError(f"windows must have shape [batch, window], got {array.shape}")
        if self._tutorial and array.shape[0] != 1:
            raise ValueError("the tutorial format carries exactly one window per message")
        request_id = request_id or self.next_id()
        payload = self.encode(request_id, array)
        future: Future[Answer] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if request_id in self._pending:
                raise ValueError(f"request id {request_id!r} is already pending")
            # registered before publishing: a fast answer must find it
            self._pending[request_id] = _Pending(request_id, int(array.shape[0]), time.monotonic(), future, payload)
        rc = self._publish(client, request_id, payload)
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            with self._lock:
                self._pending.pop(request_id, None)
            raise ClientError(f"publish to {self.request_topic} failed: {paho.error_string(rc)}")
        return future

    def _publish(self, client: paho.Client, request_id: str, payload: bytes) -> MQTTErrorCode:
        track = self._qos > 0 and self.protocol_version == "5"
        if not track:
            return client.publish(self.request_topic, payload, qos=self._qos).rc
        with self._lock:
            self._publishing += 1
        info = client.publish(self.request_topic, payload, qos=self._qos)
        with self._lock:
            self._publishing -= 1
            early = self._early_pubacks.pop(info.mid, None)
            if early is None:
                self._publish_mids[info.mid] = request_id
            if self._publishing == 0:
                self._early_pubacks.clear()
        if early == NO_MATCHING_SUBSCRIBERS:
            self._schedule_republish(request_id)
        return info.rc

    def _schedule_republish(self, request_id: str) -> None:
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None or pending.attempts >= MAX_PUBLISH_ATTEMPTS or self._closed:
                return
            pending.attempts += 1
            delay = min(0.1 * pending.attempts, 1.0)
        timer = threading.Timer(delay, self._republish, args=(request_id,))
        timer.daemon = True
        timer.start()

    def _republish(self, request_id: str) -> None:
        client = self._client
        with self._lock:
            pending = self._pending.get(request_id)
        if client is None or pending is None or self._closed:
            return
        self.republished += 1
        self._publish(client, request_id, pending.payload)

    def request(self, windows: np.ndarray | Sequence[Sequence[float]], timeout: float | None = None) -> Answer:
        """Send and wait; RequestTimeout when no answer comes in time."""
        request_id = self.next_id()
        future = self.submit(windows, request_id)
        wait_s = self.config.request_timeout_s if timeout is None else timeout
        try:
            return future.result(wait_s)
        except TimeoutError:
            self.expire(force=[request_id])
            raise RequestTimeout(f"request {request_id}: no answer within {wait_s:g} s") from None

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def expire(self, now: float | None = None, *, force: Sequence[str] = (), everything: bool = False) -> list[str]:
        """Fail requests older than request_timeout_s (and those in `force`, or all with
        `everything`) with RequestTimeout; their ids, oldest first."""
        now = time.monotonic() if now is None else now
        limit = self.config.request_timeout_s
        expired: list[_Pending] = []
        with self._lock:
            if everything:
                force = list(self._pending)
            for request_id in force:
                pending = self._pending.pop(request_id, None)
                if pending is not None:
                    expired.append(pending)
            for request_id, pending in list(self._pending.items()):
                if now - pending.sent_at < limit:
                    break  # ordered by send time
                del self._pending[request_id]
                expired.append(pending)
            self._expired.update(p.id for p in expired)
        for pending in expired:
            if not pending.future.done():
                pending.future.set_exception(
                    RequestTimeout(f"request {pending.id}: no answer within {limit:g} s")
                )
        return [p.id for p in expired]

    def wait_all(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until nothing is pending (True), `timeout` passes or `stop` is set (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.outstanding == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return False
            time.sleep(min(0.01, remaining))

    # -- paho callbacks (network thread: short, never raise) ---------------------------
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
            request_id = self._publish_mids.pop(mid, None)
            if request_id is None:
                if self._publishing > 0:
                    self._early_pubacks[mid] = code
                return
        if code == NO_MATCHING_SUBSCRIBERS:
            self._schedule_republish(request_id)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            received_at = time.monotonic()
            if self._tutorial:
                self._handle_tutorial(bytes(message.payload), received_at)
            else:
                self._handle_oip(message.topic, bytes(message.payload), received_at)
        except Exception:  # an exception here would kill paho's network thread
            log.exception("could not handle a message on %s", message.topic)

    # -- reply parsing (network thread) ------------------------------------------------
    def _handle_oip(self, topic: str, payload: bytes, received_at: float) -> None:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            with self._lock:
                self.malformed += 1
            return
        raw_id = body.get("id")
        request_id = raw_id if isinstance(raw_id, str) else None
        error = body.get("error")
        if request_id is None or not request_id.startswith(self._id_prefix):
            with self._lock:
                if request_id is None and error is not None:
                    self.uncorrelated_errors.append((None, _error_text(body)))
                    del self.uncorrelated_errors[:-100]
                elif request_id is None:
                    self.malformed += 1
                else:
                    self.foreign += 1  # another client of this tenant
            return
        with self._lock:
            pending = self._pending.pop(request_id, None)
            if pending is None:
                if request_id in self._expired:
                    self.late += 1
                else:
                    self.duplicates += 1
                return
        self._resolve(pending, _parse_oip(pending, body, received_at))

    def _handle_tutorial(self, payload: bytes, received_at: float) -> None:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
        with self._lock:
            if not isinstance(body, dict) or not self._pending:
                if isinstance(body, dict) and "error" in body:
                    self.uncorrelated_errors.append((None, _error_text(body)))
                    del self.uncorrelated_errors[:-100]
                elif isinstance(body, dict):
                    self.late += 1
                else:
                    self.malformed += 1
                return
            _, pending = self._pending.popitem(last=False)  # FIFO: the tutorial reply carries no id
        norm = self.config.normalization
        assert norm is not None
        if "error" in body:
            answer = _error_answer(pending, received_at, body)
        else:
            values = [v for v in body.values() if isinstance(v, int | float) and not isinstance(v, bool)]
            if len(body) != 1 or len(values) != 1:
                answer = Answer(pending.id, pending.windows, pending.sent_at, received_at, None,
                                error_code="bad_response",
                                error_message=f"expected one {{MODEL: value}} pair, got {str(body)[:200]}")
            else:
                answer = Answer(pending.id, pending.windows, pending.sent_at, received_at,
                                (norm.denormalize(float(values[0])),), model_name=self.config.model)
        self._resolve(pending, answer)

    def _resolve(self, pending: _Pending, answer: Answer) -> None:
        if not pending.future.done():
            pending.future.set_result(answer)
        if self._answers is not None:
            self._answers.put(answer)
        if self._on_answer is not None:
            try:
                self._on_answer(answer)
            except Exception:
                log.exception("on_answer callback failed for %s", answer.id)


class _ProtocolRefusedError(Exception):
    pass


def _error_text(body: dict[str, Any]) -> str:
    decoded = oip.decode_answer(body)
    if isinstance(decoded, oip.ErrorAnswer):
        return f"{decoded.code}: {decoded.message}"[:300]
    return str(body)[:200]


def _error_answer(pending: _Pending, received_at: float, body: dict[str, Any]) -> Answer:
    decoded = oip.decode_answer(body)
    code, message = (decoded.code, decoded.message) if isinstance(decoded, oip.ErrorAnswer) else ("unknown", "")
    return Answer(pending.id, pending.windows, pending.sent_at, received_at, None, error_code=code,
                  error_message=message)


def _parse_oip(pending: _Pending, body: dict[str, Any], received_at: float) -> Answer:
    decoded = oip.decode_answer(body)
    if isinstance(decoded, oip.ErrorAnswer):
        return Answer(pending.id, pending.windows, pending.sent_at, received_at, None,
                      error_code=decoded.code, error_message=decoded.message)
    if len(decoded.values) != pending.windows:
        return Answer(
            pending.id, pending.windows, pending.sent_at, received_at, None,
            model_name=decoded.model_name,
            error_code="bad_response",
            error_message=f"expected outputs[0].data with {pending.windows} numbers",
        )
    return Answer(
        pending.id,
        pending.windows,
        pending.sent_at,
        received_at,
        decoded.values,
        model_name=decoded.model_name,
        model_version=decoded.model_version,
    )
