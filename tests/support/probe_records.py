"""What :class:`~tests.support.probe.MqttProbe` recorded, and waits on it: messages received
(by count, predicate, topic filter), answers by id, requests sent with :meth:`~ProbeRecords.send`,
their PUBACK reason codes, republishing.

A mixin only so that each module stays readable: :class:`MqttProbe` is the one class to use.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from tests.support.messages import ReceivedMessage, RequestStats, Sent, acknowledged


class ProbeRecords:
    """Needs the probe's client, lock, records (filled by its paho callbacks) and ``_wait``."""

    client: mqtt.Client
    _cond: threading.Condition
    _sent: list[Sent]
    _answers: dict[str, list[ReceivedMessage]]
    _received: int
    _puback_rc: dict[int, int]
    _messages: list[ReceivedMessage]
    _connected: bool
    _callback_errors: list[BaseException]
    client_id: str
    _wait: Callable[[Callable[[], bool], float], bool]

    # -- received messages

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of everything received so far (since the last :meth:`clear`)."""
        with self._cond:
            return list(self._messages)

    @property
    def total_received(self) -> int:
        """How many messages arrived since the start (:meth:`clear` does not reset it)."""
        with self._cond:
            return self._received

    def clear(self) -> None:
        """Forget the messages (and answers by id) received so far."""
        with self._cond:
            self._messages.clear()
            self._answers.clear()

    def wait_for(
        self,
        condition: int | Callable[[ReceivedMessage], bool] = 1,
        timeout: float = 10.0,
        *,
        count: int = 1,
        topic: str | None = None,
    ) -> list[ReceivedMessage]:
        """Wait until enough messages arrived; return the matching ones (in arrival order).

        - ``wait_for(5)``: at least 5 messages (matching ``topic``, an MQTT filter, if given).
        - ``wait_for(pred, count=3)``: at least 3 messages for which ``pred(msg)`` is true.
        Raises ``TimeoutError`` listing what did arrive.
        """
        wanted = condition if isinstance(condition, int) else count
        predicate = condition if callable(condition) else (lambda _m: True)
        found: list[ReceivedMessage] = []

        def enough() -> bool:
            nonlocal found
            found = [m for m in self._messages
                     if (topic is None or mqtt.topic_matches_sub(topic, m.topic)) and predicate(m)]  # fmt: skip
            return len(found) >= wanted

        if self._wait(enough, timeout):
            return found
        with self._cond:
            seen = [m.topic for m in self._messages[-10:]]
            raise TimeoutError(
                f"{self.client_id}: wanted {wanted} matching message(s)"
                f"{f' on {topic!r}' if topic else ''} within {timeout:.1f} s, got {len(found)} "
                f"(of {len(self._messages)} received; last topics: {seen}); connected={self._connected}"
            )

    def assert_no_messages(self, within: float = 0.5, *, topic: str | None = None) -> None:
        """Wait ``within`` seconds and fail if any message (on ``topic``) arrived meanwhile or before."""
        time.sleep(within)
        with self._cond:
            got = [m for m in self._messages if topic is None or mqtt.topic_matches_sub(topic, m.topic)]
        assert not got, f"{self.client_id}: expected no messages, got {[(m.topic, m.payload[:60]) for m in got]}"

    @property
    def callback_errors(self) -> list[BaseException]:
        with self._cond:
            return list(self._callback_errors)

    # -- requests sent by id (tenant side)

    def send(self, topic: str, request_id: str, payload: bytes, properties: Properties | None = None) -> None:
        """Publish a request with QoS 1 without waiting; remembered by id for acks and answers."""
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        self._sent.append(Sent(request_id, topic, payload, properties, [info], time.monotonic()))

    @property
    def sent(self) -> list[Sent]:
        return list(self._sent)

    @property
    def sent_ids(self) -> list[str]:
        return [s.request_id for s in self._sent]

    def _reason(self, info: mqtt.MQTTMessageInfo) -> int | None:
        """PUBACK reason code of one attempt; None while not acknowledged."""
        if not acknowledged(info):
            return None
        with self._cond:
            return self._puback_rc.get(info.mid, 0)

    def acked_ids(self) -> list[str]:
        """Requests the broker acknowledged (PUBACK received, whatever its reason code)."""
        return [s.request_id for s in self._sent if any(acknowledged(i) for i in s.attempts)]

    def accepted_ids(self) -> list[str]:
        """Requests acknowledged with reason code 0 (Success) on some attempt.

        MQTT v5 PUBACK 0x10 "No matching subscribers" is a success code too, but it tells
        the publisher the broker had nobody to deliver the message to and dropped it.
        """
        return [s.request_id for s in self._sent if any(self._reason(i) == 0 for i in s.attempts)]

    def unrouted_ids(self) -> list[str]:
        """Requests whose latest attempt was acknowledged with 0x10 and no attempt with 0."""
        out = []
        for sent in self._sent:
            reasons = [self._reason(i) for i in sent.attempts]
            if 0 not in reasons and reasons[-1] == 0x10:
                out.append(sent.request_id)
        return out

    def republish(self, ids: Iterable[str]) -> int:
        """Publish these requests again (same id and payload): what a v5 client does on 0x10."""
        wanted = set(ids)
        count = 0
        for sent in self._sent:
            if sent.request_id in wanted:
                sent.attempts.append(self.client.publish(sent.topic, sent.payload, qos=1, properties=sent.properties))
                count += 1
        return count

    def wait_acked(self, timeout: float) -> bool:
        """Wait until the latest attempt of every sent request is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(acknowledged(s.info) for s in self._sent):
                return True
            time.sleep(0.05)
        return False

    # -- answers by id

    def answered(self, ids: Iterable[str]) -> set[str]:
        with self._cond:
            return {i for i in ids if i in self._answers}

    def wait_answers(self, ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until every id in ``ids`` has at least one answer; return the ones still missing."""
        wanted = set(ids)
        self._wait(lambda: all(i in self._answers for i in wanted), timeout)
        with self._cond:
            return {i for i in wanted if i not in self._answers}

    def wait_total(self, count: int, timeout: float) -> int:
        """Wait until ``count`` messages arrived since the start; how many did."""
        self._wait(lambda: self._received >= count, timeout)
        with self._cond:
            return self._received

    def quiet_for(self, seconds: float, timeout: float) -> bool:
        """Wait until no message arrived for ``seconds`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                before = self._received
            time.sleep(seconds)
            with self._cond:
                if self._received == before:
                    return True
        return False

    def snapshot(self) -> dict[str, list[ReceivedMessage]]:
        """Answers received so far by id (JSON objects with an ``id``), in arrival order."""
        with self._cond:
            return {k: list(v) for k, v in self._answers.items()}

    def stats(self, ids: Iterable[str] | None = None) -> RequestStats:
        wanted = list(self.sent_ids if ids is None else ids)
        answers = self.snapshot()
        codes: Counter[str] = Counter()
        duplicates = 0
        for request_id in wanted:
            got = answers.get(request_id, [])
            duplicates += max(0, len(got) - 1)
            if got:
                codes[got[0].code] += 1
        return RequestStats(
            sent=len(wanted),
            acked=len(self.acked_ids()),
            answered_ids=sum(1 for i in wanted if i in answers),
            answers=sum(len(answers.get(i, [])) for i in wanted),
            duplicates=duplicates,
            codes=dict(codes),
        )
