"""One inference worker: MQTT in, micro-batches through the data plane, answers out.

Threads: the serving thread (this loop: it runs the MQTT client's I/O, decodes, batches,
invokes and publishes; the only user of the MQTT client and of the interpreters), the reload
thread (builds new serving states) and the health HTTP thread (reads flags only).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson

from contract import topics
from contract.actuals import decode_actuals
from contract.codecs import OIP
from contract.errors import (
    InvalidRequest,
    RequestError,
    RetainedRequest,
    TooLarge,
)
from contract.oip import check_size, peek_id
from contract.oip_binary import BinaryForm
from server_app.answering import Answerer
from server_app.batching import InboxSource, collect_batch, inbox_limits
from server_app.broker_stats import BrokerStats
from server_app.client_ids import worker_client_id
from server_app.config import BrokerConfig, ServerConfig
from server_app.console import ConsoleStats, console_routes
from server_app.health import HealthServer
from server_app.inbox import FairInbox
from server_app.limits import AnsweredRequests
from server_app.metrics import Metrics
from server_app.mqtt import InboundMessage, MqttTransport
from server_app.quality_feed import QualityFeed, promoted
from server_app.reload import Reloader
from server_app.routing import Reply, resolve_reply, subscriptions
from server_app.service import InferenceService, Outcome, Prediction, Request
from server_app.state import ServingState

log = logging.getLogger(__name__)

HEARTBEAT_STALE_S = 30.0


class Worker:
    def __init__(
        self,
        config: ServerConfig,
        config_path: Path | None = None,
        *,
        client_id: str | None = None,
        broker: BrokerConfig | None = None,
        health_port: int | None = None,
    ) -> None:
        """`broker` overrides config.broker (the embedded broker's real address); the
        config file's own broker section is still what reloads compare against."""
        self.config = config
        self._broker = broker or config.broker
        self._health_port = health_port if health_port is not None else config.health.port
        self.worker_id = client_id or config.worker.resolved_id()
        self.metrics = Metrics()
        self.console = ConsoleStats()  # the live console's numbers (server_app/console.py)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._pending_state: ServingState | None = None
        self._state: ServingState | None = None
        self._service = InferenceService()
        self._answered = AnsweredRequests(config.worker.dedup_window_s, config.worker.dedup_max_entries)
        self._heartbeat = time.monotonic()
        self._status_wanted = False  # set by other threads; the serving thread publishes
        self._status_topic = topics.status_topic(self.worker_id)
        self._reloader = Reloader(config, config_path, self._hand_over, self._on_reload_result)
        limits = config.worker
        self.inbox = FairInbox(**inbox_limits(limits))
        self.transport = MqttTransport(
            self._broker,
            worker_client_id(self._broker, self.worker_id),  # secret: no tenant can take the session over
            lambda message: self._on_message(message),
            receive_maximum=limits.max_inflight,
            will_topic=self._status_topic,
            will_payload=orjson.dumps({"worker": self.worker_id, "state": "offline"}),
            on_subscribed=lambda: self.publish_status("serving"),
            on_refused=lambda request, topic, reason: self._answers.refused(request, topic, reason),
        )
        self._answers = Answerer(
            self.transport, self.metrics, self.console, self._answered, self.worker_id, lambda: self._state
        )
        self._source = InboxSource(self.transport, self.inbox, limits.max_batch_bytes)
        # The broker's own counters ($SYS: dropped messages) on a second connection, exported on
        # /metrics; off without an HTTP endpoint (nobody could read them).
        self._broker_stats = (
            BrokerStats(self._broker, self.transport.client_id + "-sys", self.metrics.registry)
            if config.health.broker_stats and self._health_port is not None
            else None
        )
        self._quality = QualityFeed(config.quality, self.metrics, self._publish_retained, self._promote)
        self._health: HealthServer | None = None
        self._threads: list[threading.Thread] = []

    def _on_reload_result(self, result: str) -> None:
        self.metrics.reloads.labels(result=result).inc()
        self.console.reload_result(result)
        if result == "config_rejected":
            self._status_wanted = True  # make the rejection visible to operators

    # -- state hand-over -----------------------------------------------------------------
    def _hand_over(self, state: ServingState) -> None:
        """Called by the reloader; the serving thread swaps it in between batches."""
        self._pending_state = state

    def _current_state(self) -> ServingState:
        pending = self._pending_state
        if pending is not None and pending is not self._state:
            previous = self._state
            self._state = pending
            self._after_swap(previous, pending)
        assert self._state is not None
        return self._state

    def _after_swap(self, previous: ServingState | None, state: ServingState) -> None:
        group = self._broker.shared_group
        if previous is None or subscriptions(previous.policy, group) != subscriptions(state.policy, group):
            self.transport.set_filters(subscriptions(state.policy, group))
        self._service.forget_tenants_except(set(state.policy.tenants))
        limits = state.policy.worker
        self.inbox.configure(**inbox_limits(limits))
        self._source.max_batch_bytes = limits.max_batch_bytes
        self._answered.configure(limits.dedup_window_s, limits.dedup_max_entries)
        self._quality.configure(state.policy.quality, set(state.policy.tenants))
        self.metrics.observe_state(state)
        if previous is not None:  # start() announces the first state once connected
            self.publish_status("serving")
        log.info("serving %s", orjson.dumps(state.describe()).decode())

    def quality_snapshot(self) -> dict[tuple[str, str], dict[str, object]]:
        """The last quality message per (tenant, model): safe to read from any thread."""
        return self._quality.latest

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        self.transport.publish(topic, payload, retain=True)

    def _promote(self, tenant: str, model: str, version: int) -> None:
        """Auto-promotion (quality.auto_promote): the shadow answers from now on, until the
        config or repository changes (then the config is authoritative again)."""
        state = self._state
        new = promoted(state, tenant, model, version) if state is not None else None
        if new is not None:
            self._pending_state = new
            body = {"tenant": tenant, "model": model, "promoted": version, "worker": self.worker_id, "at": time.time()}
            self.transport.publish(topics.service_quality_topic(tenant, model) + "/promotion", orjson.dumps(body))

    def publish_status(self, phase: str) -> None:
        """Serving thread only (the MQTT client belongs to it)."""
        state = self._state
        body: dict[str, object] = {"worker": self.worker_id, "state": phase, "updated_at": time.time()}
        if state is not None:
            body.update(state.describe())
        if self._reloader.config_error:
            body["config_error"] = self._reloader.config_error
        self.transport.publish(self._status_topic, orjson.dumps(body), retain=True)

    # -- probes --------------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        if self._stopped.is_set():
            return True, "stopped"
        stale = time.monotonic() - self._heartbeat
        if stale > HEARTBEAT_STALE_S:
            return False, f"serving loop stalled for {stale:.0f}s"
        if not self._threads or not self._threads[0].is_alive():
            return False, "serving loop (which also runs the MQTT client) is not running"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        state = self._state
        if self._stop.is_set():
            return False, "draining"
        if not self.transport.connected.is_set():
            return False, "not connected to the broker"
        if not self.transport.subscribed.is_set():
            return False, "not subscribed"
        if state is None:
            return False, "models not loaded"
        if not state.ready:
            return False, f"models without a loadable version: {state.missing}"
        return True, "ready"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Load models (before taking traffic), connect, start serving threads."""
        self._reloader.poll_once()
        self._current_state()  # swap in before the first message
        state = self._state
        assert state is not None
        for name, why in state.missing.items():
            log.error("model %s cannot serve: %s", name, why)
        if self._health_port is not None:
            self._health = HealthServer(
                self.config.health.host, self._health_port, self.alive, self.ready, self.metrics.render,
                routes=console_routes(self) if self.config.health.console else None,
            )
            self._health.start()
        # The "serving" status goes out once the broker confirms the subscription (on_subscribed).
        self.transport.start(subscriptions(state.policy, self._broker.shared_group))
        if self._broker_stats is not None:
            self._broker_stats.start()
        serving = threading.Thread(target=self._serve, name="serving", daemon=True)
        reloading = threading.Thread(target=self._reloader.run, args=(self._stop,), name="reload", daemon=True)
        self._threads = [serving, reloading]
        for thread in self._threads:
            thread.start()

    @property
    def health_port(self) -> int | None:
        return self._health.port if self._health is not None else None

    def reload_now(self) -> None:
        self._reloader.trigger()

    def stop(self) -> None:
        """Graceful: stop taking requests, answer what is queued, let the broker confirm, disconnect.

        The serving thread does the draining (it owns the MQTT client); this waits for it."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._reloader.trigger()
        state = self._state  # the grace period of the config now served
        grace = (state.policy if state is not None else self.config).worker.shutdown_grace_s
        for thread in self._threads:
            thread.join(timeout=grace + 5.0)
        if self._broker_stats is not None:
            self._broker_stats.stop()
        if self._health is not None:
            self._health.stop()
        log.info("worker %s stopped", self.worker_id)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready()[0]:
                return True
            time.sleep(0.01)
        return False

    # -- the serving loop ----------------------------------------------------------------
    def _serve(self) -> None:
        transport = self.transport
        drain_deadline = quiet_until = 0.0
        try:
            while True:
                now = self._heartbeat = time.monotonic()
                state = self._current_state()
                self._quality.flush()
                if self._status_wanted:
                    self._status_wanted = False
                    self.publish_status("serving")
                if self._stop.is_set():
                    if not drain_deadline:
                        log.info("draining: unsubscribing and answering %d queued requests", len(self.inbox))
                        transport.stop_receiving()
                        drain_deadline = now + state.policy.worker.shutdown_grace_s
                        quiet_until = now + 0.2  # requests already on the wire still arrive
                    if now >= quiet_until and not self.inbox and transport.idle:
                        break
                    if now >= drain_deadline:
                        log.warning("grace period over with answers unconfirmed; the broker redelivers their requests")
                        break
                worker_config = state.policy.worker
                waiting = not self.inbox  # saturation: a poll entered with an empty inbox is idle time
                polled = time.monotonic()
                batch = collect_batch(self._source, worker_config.max_batch, worker_config.max_delay_ms / 1000.0)
                waited = time.monotonic() - polled if waiting else 0.0
                if batch:
                    try:
                        self.handle_batch(batch)
                    except Exception:  # never let one batch take the worker down
                        log.exception("batch of %d messages failed", len(batch))
                        self._answers.leftovers(batch)
                turn = time.monotonic() - now
                self.metrics.loop_turn(turn - waited, turn)
                self.metrics.observe_queue(len(self.inbox), self.inbox.bytes, self.inbox.max_messages,
                                           self.inbox.max_bytes)
        finally:
            self._stopped.set()
            self.publish_status("stopped")
            transport.poll(0.05)
            transport.close()

    def handle_batch(self, batch: list[InboundMessage]) -> None:
        """Decode every message, admit and predict in the data plane, answer each exactly once."""
        self._answers.settled.clear()
        state = self._current_state()
        limits = state.policy.worker
        started = time.monotonic()
        taken = len(batch)
        batch, late = self.inbox.expired(batch, started)
        late_bytes = sum(len(m.payload) for m in late)
        for message in late:
            waited_ms = (started - message.received_at) * 1e3
            why = (f"waited {waited_ms:.0f} ms in worker {self.worker_id}, over its latency budget of "
                   f"{limits.latency_budget_ms:g} ms; retry later")
            self._answers.shed(message, why, "expired")
        payload_bytes = sum(len(m.payload) for m in batch)
        requests: list[Request] = []
        # In batch order, so that answers leave in the order requests came (tutorial clients,
        # whose answers carry no id, match them by order): an error, or the index of a request.
        answers: list[tuple[InboundMessage, Reply, str | None, RequestError | int, BinaryForm | None]] = []
        for message in batch:
            if self._took_actuals(state, message):
                continue
            reply = resolve_reply(state, message)
            if reply is None:
                self.metrics.dropped.inc()
                self._answers.acknowledge(message)
                continue
            try:
                if reply.model is None:
                    raise InvalidRequest(
                        f"no service on {message.topic[:200]!r}: requests go to "
                        "tenants/<tenant>/models/<model>/requests, names matching [a-z0-9][a-z0-9_-]{0,62}",
                        peek_id(message.payload),
                    )
                if message.retain:
                    if not message.payload:  # the broker's retained copy cleared (by us): not a request
                        self._answers.acknowledge(message)
                        continue
                    self.metrics.retained.inc()
                    self.transport.clear_retained(message.topic)
                    raise RetainedRequest(
                        "a retained message on a request topic is never served: publish requests without retain",
                        peek_id(message.payload),
                    )
                decoded = reply.codec.decode(
                    message.payload, max_bytes=limits.max_message_bytes, max_windows=limits.max_windows_per_message,
                    header_length=message.header_length,
                )
            except RequestError as exc:
                if not self._answers.redelivered(message, exc.request_id):
                    answers.append((message, reply, exc.request_id, exc, None))
                continue
            if self._answers.redelivered(message, decoded.id):
                continue
            answers.append((message, reply, decoded.id, len(requests), decoded.binary_answer))
            requests.append(
                Request(reply.tenant, reply.model, decoded.id, decoded.windows, decoded.normalized, decoded.series)
            )
        outcomes: list[Outcome] = []
        if requests:
            self.metrics.observe_batch(len(requests), sum(r.windows.shape[0] for r in requests))
            outcomes = self._service.predict(state, requests)
        for message, reply, request_id, result, binary in answers:
            outcome = outcomes[result] if isinstance(result, int) else result
            self._answers.answer(message, reply, request_id, outcome, started, binary)
        full = taken >= limits.max_batch or payload_bytes + late_bytes >= limits.max_batch_bytes
        self.inbox.served(payload_bytes, time.monotonic() - started, full=full)
        for request, outcome in zip(requests, outcomes, strict=True):  # after `served`: not service time
            if isinstance(outcome, Prediction):
                self._quality.after_prediction(request, outcome)

    def _took_actuals(self, state: ServingState, message: InboundMessage) -> bool:
        """Readings on a tenant's actuals topic: fed to the quality tracker, acknowledged, never
        answered (they are not requests); an invalid payload gets one error on the errors topic."""
        tenant = topics.tenant_of_actuals(message.topic)
        if tenant is None:
            return False
        if tenant not in state.policy.tenants:
            self._answers.acknowledge(message)
            return True
        try:
            actuals = decode_actuals(message.payload, max_bytes=state.policy.worker.max_message_bytes)
        except RequestError as exc:
            self._answers.answer(message, Reply(tenant, None, topics.errors_topic(tenant), OIP), None, exc)
            return True
        self._answers.acknowledge(message)
        self._quality.actuals(tenant, actuals)
        return True

    def _on_message(self, message: InboundMessage) -> None:
        """A request arrived (inside poll, serving thread): queue it; answer what is shed.
        An oversize payload is refused at once: it costs nothing to refuse and would crowd the queue."""
        state = self._state
        if state is not None and len(message.payload) > state.policy.worker.max_message_bytes:
            reply = resolve_reply(state, message)
            if reply is not None:
                try:
                    check_size(message.payload, state.policy.worker.max_message_bytes)
                except TooLarge as error:
                    self._answers.answer(message, reply, error.request_id, error)
                    return
        for shed in self.inbox.offer(message):
            self._answers.shed(shed, f"worker {self.worker_id} cannot serve this within its latency budget "
                             f"({len(self.inbox)} requests, {self.inbox.bytes} bytes queued); retry later")
