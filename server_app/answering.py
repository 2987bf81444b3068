"""The one answer of each request: published with its MQTT 5 properties, counted, remembered
for redeliveries; refused answers rerouted; shed requests answered `overloaded`. Serving thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from contract import topics
from contract.codecs import Encoded
from contract.errors import AnswerRefused, InternalError, Overloaded
from contract.oip import peek_id
from contract.oip_binary import BinaryForm
from server_app.console import ConsoleStats
from server_app.limits import AnsweredRequests
from server_app.logs import request_fields
from server_app.metrics import UNKNOWN, Metrics
from server_app.mqtt import InboundMessage, MqttTransport
from server_app.routing import Reply, resolve_reply
from server_app.service import Outcome, Prediction
from server_app.state import ServingState

log = logging.getLogger(__name__)


class Answerer:
    def __init__(
        self,
        transport: MqttTransport,
        metrics: Metrics,
        console: ConsoleStats,
        answered: AnsweredRequests,
        worker_id: str,
        state: Callable[[], ServingState | None],
    ) -> None:
        self._transport = transport
        self._metrics = metrics
        self._console = console
        self._answered = answered
        self._worker_id = worker_id
        self._state = state
        self.settled: set[int] = set()  # ids of this batch's messages already answered or acknowledged

    def redelivered(self, message: InboundMessage, request_id: str | None) -> bool:
        """A broker redelivery (DUP) of a request this process already answered: acknowledge
        it without a second answer. The only request that gets no answer of its own."""
        if not message.dup or request_id is None or not self._answered.answered(message.topic, request_id):
            return False
        self._metrics.duplicates.inc()
        self.acknowledge(message)
        return True

    def acknowledge(self, message: InboundMessage) -> None:
        self._transport.acknowledge(message)
        self.settled.add(id(message))

    def leftovers(self, batch: list[InboundMessage]) -> None:
        """After an unexpected failure: every message of the batch not yet settled gets `internal`."""
        state = self._state()
        for message in batch:
            if id(message) in self.settled:
                continue
            reply = resolve_reply(state, message) if state is not None else None
            try:
                if reply is None:
                    self._transport.acknowledge(message)
                else:
                    error = InternalError("the worker failed on this batch")
                    self.answer(message, reply, peek_id(message.payload), error)
            except Exception:
                log.exception("could not answer a message of the failed batch")
                self._transport.acknowledge(message)

    def answer(
        self,
        message: InboundMessage,
        reply: Reply,
        request_id: str | None,
        outcome: Outcome,
        started: float | None = None,
        binary: BinaryForm | None = None,
    ) -> None:
        """`binary`: the request asked for a binary answer (binary tensor extension), framed so."""
        if isinstance(outcome, Prediction):
            parameters: dict[str, object] = {
                "tenant": reply.tenant, "served_at": time.time(), "worker": self._worker_id
            }
            if started is not None:
                # Where the latency went, for clients: waiting in this worker, then in the model.
                parameters["queue_ms"] = round((started - message.received_at) * 1000.0, 3)
                parameters["compute_ms"] = round(outcome.compute_s * 1000.0, 3)
            payload, content_type, header_length = reply.codec.encode_prediction(
                request_id, outcome.model_name, outcome.model_version, outcome.forecasts, parameters, binary
            )
            code = "ok"
            self._metrics.count_windows(outcome.model_name, outcome.model_version, outcome.forecasts.shape[0])
        else:
            code = outcome.code
            payload, content_type, header_length = Encoded(reply.codec.encode_error(request_id, outcome),
                                                           reply.codec.content_type)
        self._transport.publish(
            reply.topic, payload, ack=message, content_type=content_type, header_length=header_length
        )
        self.settled.add(id(message))
        if request_id is not None and message.qos > 0:
            self._answered.remember(message.topic, request_id)
        # Label only configured names: names in topics are chosen by clients, and every new
        # label value would be a new time series (unbounded memory here and in Prometheus).
        state = self._state()
        tenant = reply.tenant if state is not None and reply.tenant in state.policy.tenants else UNKNOWN
        model = reply.model if state is not None and reply.model in state.policy.models else UNKNOWN
        done = time.monotonic()
        prediction = outcome if isinstance(outcome, Prediction) else None
        self._metrics.observe_answer(
            tenant, model, code, done - message.received_at,
            None if started is None else started - message.received_at,
            prediction.model_version if prediction is not None else None,
            prediction.compute_s if prediction is not None else None,
        )
        if log.isEnabledFor(logging.DEBUG):  # per request: DEBUG only, never a cost at INFO
            log.debug("answered %s in %.3f ms", code, (done - message.received_at) * 1e3, extra=request_fields(
                tenant, model, prediction.model_version if prediction is not None else None, request_id, message.trace))
        self._console.record(tenant, model, outcome, message.received_at)

    def refused(self, request: InboundMessage, topic: str, reason: str) -> None:
        """The broker refused an answer (MQTT 5 only): count it, and tell the tenant on its
        errors topic where that is not the topic just refused. Inside poll, serving thread."""
        self._metrics.answers_refused.labels(reason=reason).inc()
        state = self._state()
        reply = resolve_reply(state, request) if state is not None else None
        log.warning("broker refused the answer on %r (%s)", topic[:200], reason)
        if reply is None or topic == topics.errors_topic(reply.tenant):
            self._transport.acknowledge(request)
            return
        error = AnswerRefused(f"the broker refused the answer on {topic[:200]!r}: {reason}")
        fallback = Reply(reply.tenant, reply.model, topics.errors_topic(reply.tenant), reply.codec)
        self.answer(request, fallback, peek_id(request.payload), error)

    def shed(self, message: InboundMessage, why: str, reason: str = "admission") -> None:
        state = self._state()
        reply = resolve_reply(state, message) if state is not None else None
        if reply is None:
            self._metrics.dropped.inc()
            self._transport.acknowledge(message)
            return
        self._metrics.count_shed(reason)
        self.answer(message, reply, peek_id(message.payload), Overloaded(why))
