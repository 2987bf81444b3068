"""`TenantClient`: one tenant's requests to the inference service and their answers.

Send windows, get a `Future[Answer]` per request, correlated by request id (Open Inference
Protocol format) or first-in first-out (tutorial format, whose replies carry no id). Usable
from the CLI, tests and benchmarks::

    with TenantClient(config) as client:          # connects, subscribes
        answer = client.request([[10, 11, 12, 12, 11, 10]])
        futures = [client.submit(w) for w in windows]

Where things live: the MQTT session (connect, protocol fallback, SUBACK, PUBACK tracking,
close) is `client_app.connection.BrokerConnection`; what an answer is and how a reply payload
becomes one is `client_app.answers`; this module keeps the requests in flight, matches
replies to them, publishes again what no worker received, and expires what is overdue.
`Answer` and the errors are importable from here.

Threads: paho's network thread runs the callbacks, which only parse, resolve futures and
enqueue (never raise); everything else runs in the caller's threads. A future's done
callbacks and ``on_answer`` run in the network thread: keep them short.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from client_app.answers import Answer, Sent, error_text, parse_oip_reply, parse_tutorial_reply
from client_app.config import TenantClientConfig
from client_app.connection import MAX_INFLIGHT, NO_MATCHING_SUBSCRIBERS, BrokerConnection
from client_app.errors import ClientConnectError, ClientError, RequestTimeout
from contract import oip, oip_answers, topics, tutorial
from contract.oip_binary import BinaryForm

log = logging.getLogger(__name__)

MAX_PUBLISH_ATTEMPTS = 30
MAX_UNCORRELATED_ERRORS = 100

__all__ = [
    "MAX_INFLIGHT",
    "MAX_PUBLISH_ATTEMPTS",
    "NO_MATCHING_SUBSCRIBERS",
    "Answer",
    "ClientConnectError",
    "ClientError",
    "RequestTimeout",
    "TenantClient",
    "new_run_token",
]


@dataclass(slots=True)
class _Pending:
    sent: Sent
    future: Future[Answer]
    payload: bytes = b""
    attempts: int = 1

    @property
    def id(self) -> str:
        return self.sent.id


def new_run_token() -> str:
    return secrets.token_hex(4)


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
        normalized: bool = False,
    ) -> None:
        """`answers`: every answer is also put here (for a consumer loop); `on_answer` is
        called in the network thread (exceptions are logged, never propagated).

        `normalized`: the windows are already normalised (the tutorial's pre-windowed data
        files): they are sent as they are (OIP: with ``parameters.normalized`` true), and the
        forecasts come back normalised. Otherwise windows are raw readings, and the tutorial
        format needs the config's ``normalization`` to send them."""
        self.config = config
        self.normalized = normalized
        self.run_token = run_token or new_run_token()
        self.client_id = client_id or config.client_id or f"{config.tenant}-client-{self.run_token}"
        self._id_prefix = f"{config.tenant}-{self.run_token}-"
        self._answers = answers
        self._on_answer = on_answer
        self._tutorial = config.format == "tutorial"
        if self._tutorial:
            assert config.in_queue is not None and config.out_queue is not None
            if config.normalization is None and not normalized:
                raise ClientError(
                    "format tutorial sends normalised values: raw readings need the config's normalization "
                    "(offset and scale from the model's metadata.json)"
                )
            self.request_topic = config.in_queue
            reply_topics: tuple[str, ...] = (config.out_queue,)
        else:
            self.request_topic = topics.request_topic(config.tenant, config.model)
            reply_topics = (topics.response_topic(config.tenant, config.model), topics.errors_topic(config.tenant))
        self._connection = BrokerConnection(
            config.broker, self.client_id, reply_topics, on_message=self._on_message, on_unrouted=self._republish_later
        )
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._expired: set[str] = set()
        self._seq = 0
        self.republished = 0
        # counters, read by anyone (ints: updates under the lock)
        self.late = 0
        self.duplicates = 0
        self.foreign = 0
        self.malformed = 0
        self.uncorrelated_errors: list[tuple[str | None, str]] = []

    # -- connection --------------------------------------------------------------------
    @property
    def reply_topics(self) -> tuple[str, ...]:
        return self._connection.reply_topics

    @property
    def protocol_version(self) -> str:
        return self._connection.protocol_version

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def disconnects(self) -> int:
        return self._connection.disconnects

    def connect(self, timeout: float = 10.0) -> TenantClient:
        """Connect, subscribe to the reply topics and wait for SUBACK; ClientConnectError if not."""
        self._connection.connect(timeout)
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect; requests still pending fail with RequestTimeout."""
        self._connection.close()
        with self._lock:
            leftovers = list(self._pending.values())
            self._pending.clear()
        for pending in leftovers:
            if not pending.future.done():
                pending.future.set_exception(RequestTimeout(f"request {pending.id}: client closed before its answer"))

    def __enter__(self) -> TenantClient:
        if not self._connection.is_open:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------
    def next_id(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{self._id_prefix}{self._seq:07d}"

    def encode(self, request_id: str, windows: np.ndarray, parameters: dict[str, object] | None = None) -> bytes:
        """The payload for windows [b, window] (oldest reading first) in the configured format;
        `parameters` (OIP only) go with it, e.g. the series and time the service scores by."""
        if self._tutorial:
            norm = self.config.normalization
            offset, scale = (0.0, 1.0) if self.normalized or norm is None else (norm.offset, norm.scale)
            return tutorial.encode_request(windows[0], offset, scale)
        merged: dict[str, object] = {**(parameters or {}), "sent_at": time.time()}
        if self.normalized:
            merged["normalized"] = True
        if self.config.binary:
            # the NUL-separated framing: self-describing on any MQTT version, no per-publish properties
            payload, _ = oip.encode_binary_request(request_id, windows, merged, BinaryForm.SEPARATOR)
            return payload
        return oip.encode_request(request_id, windows, merged)

    def submit(
        self,
        windows: np.ndarray | Sequence[Sequence[float]],
        request_id: str | None = None,
        parameters: dict[str, object] | None = None,
    ) -> Future[Answer]:
        """Publish one request of windows [b, window]; its answer resolves the returned future."""
        if not self._connection.is_open:
            raise ClientError("not connected: call connect() first")
        array = np.asarray(windows, dtype=np.float64)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[0] < 1:
            raise ValueError(f"windows must have shape [batch, window], got {array.shape}")
        if self._tutorial and array.shape[0] != 1:
            raise ValueError("the tutorial format carries exactly one window per message")
        request_id = request_id or self.next_id()
        payload = self.encode(request_id, array, parameters)
        future: Future[Answer] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if request_id in self._pending:
                raise ValueError(f"request id {request_id!r} is already pending")
            # registered before publishing: a fast answer must find it
            sent = Sent(request_id, int(array.shape[0]), time.monotonic())
            self._pending[request_id] = _Pending(sent, future, payload)
        rc = self._connection.publish(self.request_topic, payload, request_id)
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            with self._lock:
                self._pending.pop(request_id, None)
            raise ClientError(f"publish to {self.request_topic} failed: {paho.error_string(rc)}")
        return future

    def _republish_later(self, request_id: str) -> None:
        """No worker was subscribed when the broker took `request_id`: publish it again soon."""
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None or pending.attempts >= MAX_PUBLISH_ATTEMPTS or not self._connection.is_open:
                return
            pending.attempts += 1
            delay = min(0.1 * pending.attempts, 1.0)
        timer = threading.Timer(delay, self._republish, args=(request_id,))
        timer.daemon = True
        timer.start()

    def _republish(self, request_id: str) -> None:
        with self._lock:
            pending = self._pending.get(request_id)
        if pending is None or not self._connection.is_open:
            return
        self.republished += 1
        self._connection.publish(self.request_topic, pending.payload, request_id)

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
                if now - pending.sent.sent_at < limit:
                    break  # ordered by send time
                del self._pending[request_id]
                expired.append(pending)
            self._expired.update(p.id for p in expired)
        for pending in expired:
            if not pending.future.done():
                pending.future.set_exception(RequestTimeout(f"request {pending.id}: no answer within {limit:g} s"))
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

    # -- replies (network thread: short, never raise) -----------------------------------
    def _on_message(self, message: paho.MQTTMessage) -> None:
        received_at = time.monotonic()
        if self._tutorial:
            self._handle_tutorial(bytes(message.payload), received_at)
        else:
            self._handle_oip(bytes(message.payload), received_at)

    def _note_uncorrelated_error(self, body: dict[str, object]) -> None:
        """Under the lock: an error the service could not tie to a request id."""
        self.uncorrelated_errors.append((None, error_text(body)))
        del self.uncorrelated_errors[:-MAX_UNCORRELATED_ERRORS]

    def _handle_oip(self, payload: bytes, received_at: float) -> None:
        try:
            body = oip_answers.load_answer(payload)  # JSON, or a binary answer (NUL-separated)
        except ValueError:  # orjson's JSONDecodeError included
            with self._lock:
                self.malformed += 1
            return
        raw_id = body.get("id")
        request_id = raw_id if isinstance(raw_id, str) else None
        if request_id is None or not request_id.startswith(self._id_prefix):
            with self._lock:
                if request_id is None and body.get("error") is not None:
                    self._note_uncorrelated_error(body)
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
        self._resolve(pending, parse_oip_reply(pending.sent, body, received_at))

    def _handle_tutorial(self, payload: bytes, received_at: float) -> None:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
        with self._lock:
            if not isinstance(body, dict) or not self._pending:
                if isinstance(body, dict) and "error" in body:
                    self._note_uncorrelated_error(body)
                elif isinstance(body, dict):
                    self.late += 1
                else:
                    self.malformed += 1
                return
            _, pending = self._pending.popitem(last=False)  # FIFO: the tutorial reply carries no id
        norm = self.config.normalization
        offset, scale = (0.0, 1.0) if self.normalized or norm is None else (norm.offset, norm.scale)
        self._resolve(pending, parse_tutorial_reply(pending.sent, body, received_at, self.config.model, offset, scale))

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
