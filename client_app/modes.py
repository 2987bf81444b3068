"""The client's run modes over one connected `TenantClient` and one station's windows.

- ``stream``: send at ``rate`` messages/s, print each forecast beside the actual next reading
  as answers arrive; stop at ``count`` messages, ``duration`` seconds, the end of the data or
  a stop request (Ctrl-C).
- ``wait``: send one request at a time (``count``, default 1), block for its answer, print it.
- ``no-wait``: send ``count`` requests (default 100) without waiting, then collect the answers
  by id and print them in send order.
- ``bulk``: send ``count`` windows (default: all) in messages of ``batch`` windows, collect
  them and print the forecasts as one JSON array in window order (``null`` where a message
  failed; with a multi-step model, one array of H forecasts per window).

A multi-step answer (horizon H) is printed as the window's H forecasts beside the readings
1..H steps after it (``-`` where the data has none) and scored per step (see `stats`).

Every mode ends by waiting (bounded) for outstanding answers and returns a `RunResult` with
the run's `Summary`. A first stop request stops sending and waits at most ``drain_on_stop_s``
for outstanding answers; a second one stops waiting.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TextIO

import orjson

from client_app.client import Answer, TenantClient
from client_app.config import TenantClientConfig
from client_app.data import Windows
from client_app.stats import Recorder, Summary

Mode = Literal["stream", "wait", "no-wait", "bulk"]
MODES: tuple[Mode, ...] = ("stream", "wait", "no-wait", "bulk")
DEFAULT_NO_WAIT_COUNT = 100
DEFAULT_BULK_BATCH = 64
EXPIRE_EVERY_S = 0.25


class StopSignal:
    """Set from a signal handler: the first request stops sending, the second stops waiting."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.forced = threading.Event()

    def request(self) -> None:
        if self.requested.is_set():
            self.forced.set()
        self.requested.set()


@dataclass(frozen=True)
class RunOptions:
    mode: Mode = "stream"
    count: int | None = None
    """Messages to send (stream, wait, no-wait) or windows (bulk); None: the mode's default."""
    duration_s: float | None = None
    """Stop sending after this many seconds (stream, no-wait)."""
    rate: float | None = None
    """Messages per second; None: as fast as possible."""
    batch: int = 1
    quiet: bool = False
    drain_on_stop_s: float = 2.0


@dataclass
class RunResult:
    summary: Summary
    exit_code: int
    forecasts: list[float | None] | None = None
    """bulk: step 1 of each window, in window order."""
    steps: list[list[float] | None] | None = None
    """bulk with a multi-step model: each window's forecasts for steps 1..H."""
    answers: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(values: Sequence[float | None], digits: int) -> str:
    return " ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def answer_lines(
    config: TenantClientConfig, answer: Answer, actuals: Sequence[Sequence[float | None]], digits: int = 2
) -> Iterator[str]:
    """Human-readable lines for one answer, one per window: its forecast(s) for steps 1..H
    and `actuals[i]`, the readings 1..H steps after window i (None: not in the data)."""
    version = f" v{answer.model_version}" if answer.model_version else ""
    head = f"{config.tenant} {config.model}{version} id={answer.id}"
    latency = f"({answer.latency_ms:.1f} ms)"
    rows = answer.window_steps() if answer.ok else None
    if rows is None:
        yield f"{head} error {answer.error_code}: {answer.error_message} {latency}"
        return
    many = len(rows) > 1
    for index, (forecast, actual) in enumerate(zip(rows, actuals, strict=True)):
        suffix = f"[{index}]" if many else ""
        yield f"{head}{suffix} forecast {_fmt(forecast, digits)} actual {_fmt(actual, digits)} {latency}"


class _Session:
    """Bookkeeping of one run: what was sent, which answers came, stats and output."""

    def __init__(
        self,
        config: TenantClientConfig,
        options: RunOptions,
        windows: Windows,
        client: TenantClient,
        answers: queue.Queue[Answer],
        stop: StopSignal,
        out: TextIO,
    ) -> None:
        self.config = config
        self.options = options
        self.windows = windows
        self.client = client
        self.answers = answers
        self.stop = stop
        self.out = out
        self.recorder = Recorder(config.tenant, config.model, options.mode, units=units_of(windows))
        self.digits = digits_of(windows)
        # stream and wait forget a request once handled (bounded memory on long runs);
        # no-wait and bulk keep every answer for the report at the end
        self.keep = options.mode in ("no-wait", "bulk")
        self.sent: dict[str, tuple[int, int]] = {}  # id -> (first window, count)
        self.order: list[str] = []
        self.collected: dict[str, Answer] = {}
        self.last: Answer | None = None
        self.print_live = options.mode in ("stream", "wait") and not options.quiet
        self._last_expire = time.monotonic()

    # -- sending ------------------------------------------------------------------------
    def send(self, start: int, count: int) -> str:
        request_id = self.client.next_id()
        self.sent[request_id] = (start, count)
        if self.keep:
            self.order.append(request_id)
        self.client.submit(self.windows.x[start : start + count], request_id, self.series_parameters(start, count))
        self.recorder.record_sent(count)
        return request_id

    def series_parameters(self, start: int, count: int) -> dict[str, object]:
        """Which series and when, so that the service scores its own forecasts (issue 14): the
        station, and the newest reading's position on the series' own clock (window index, step
        1: consecutive windows move on by one reading, whatever the readings' timestamps)."""
        return {"series": str(self.windows.station or "series"), "time": start + count - 1, "step_s": 1}

    def send_paced(self, plan: list[tuple[int, int]], rate: float | None, duration_s: float | None) -> None:
        """Send `plan` at `rate` messages/s (absolute schedule, no drift), handling answers meanwhile."""
        started = time.monotonic()
        for k, (start, count) in enumerate(plan):
            if rate is not None:
                due = started + k / rate
                while (wait := due - time.monotonic()) > 0 and not self.stop.requested.is_set():
                    self.pump(min(wait, 0.05))
            else:
                self.pump(0.0)
            if self.stop.requested.is_set():
                self.recorder.stopped_early = True
                return
            if duration_s is not None and time.monotonic() - started >= duration_s:
                return
            self.send(start, count)

    # -- receiving ----------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Handle answers that arrived (waiting up to `timeout` for the first), expire overdue ones."""
        try:
            answer = self.answers.get(timeout=timeout) if timeout > 0 else self.answers.get_nowait()
        except queue.Empty:
            answer = None
        while answer is not None:
            self.handle(answer)
            try:
                answer = self.answers.get_nowait()
            except queue.Empty:
                answer = None
        now = time.monotonic()
        if now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            self.report_expired(self.client.expire(now))

    def handle(self, answer: Answer) -> None:
        where = self.sent.get(answer.id) if self.keep else self.sent.pop(answer.id, None)
        if where is None:  # not ours (cannot happen: the client filters by run token)
            return
        start, count = where
        ahead = self.windows.actuals(start, count, answer.horizon)
        self.last = answer
        if self.keep:
            self.collected[answer.id] = answer
        multi_step = answer.ok and answer.horizon > 1
        self.recorder.record_answer(
            answer.latency_ms,
            forecasts=answer.forecasts if answer.ok else None,
            actuals=[float(row[0]) for row in ahead if row[0] is not None] if answer.ok else None,
            error_code=answer.error_code,
            model_version=answer.model_version,
            steps=answer.steps if multi_step else None,
            step_actuals=ahead if multi_step else None,
        )
        if self.print_live:
            for line in answer_lines(self.config, answer, ahead, self.digits):
                print(line, file=self.out, flush=True)

    def report_expired(self, ids: list[str]) -> None:
        if not self.keep:
            for request_id in ids:
                self.sent.pop(request_id, None)
        if self.print_live:
            for request_id in ids:
                print(
                    f"{self.config.tenant} {self.config.model} id={request_id} "
                    f"no answer within {self.config.request_timeout_s:g} s",
                    file=self.out,
                    flush=True,
                )

    def drain(self) -> None:
        """Wait for outstanding answers: up to request_timeout_s, or drain_on_stop_s after a stop."""
        deadline = time.monotonic() + self.config.request_timeout_s
        while self.client.outstanding > 0 and not self.stop.forced.is_set():
            if self.stop.requested.is_set():
                self.recorder.stopped_early = True
                deadline = min(deadline, time.monotonic() + self.options.drain_on_stop_s)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.pump(min(remaining, 0.05))
        self.pump(0.0)
        self.report_expired(self.client.expire(everything=True))
        self.pump(0.0)  # answers that raced the expiry
        self.recorder.finish()

    def wait_for(self, request_id: str) -> Answer | None:
        """Handle answers until `request_id`'s arrives (its Answer) or times out (None)."""
        deadline = time.monotonic() + self.config.request_timeout_s
        while request_id in self.sent and not self.stop.forced.is_set():
            if self.stop.requested.is_set():
                deadline = min(deadline, time.monotonic() + self.options.drain_on_stop_s)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.pump(min(remaining, 0.05))
        if request_id in self.sent:
            self.report_expired(self.client.expire(force=[request_id]))
            self.pump(0.0)
        answer = self.last
        return answer if answer is not None and answer.id == request_id else None

    def summary(self) -> Summary:
        return self.recorder.summary(
            late=self.client.late,
            duplicates=self.client.duplicates,
            uncorrelated_errors=len(self.client.uncorrelated_errors),
        )


def units_of(windows: Windows) -> str:
    return "normalised units" if windows.normalized else "raw units"


def digits_of(windows: Windows) -> int:
    """Decimals printed: normalised values are around -1..1."""
    return 4 if windows.normalized else 2


def plan_messages(available: int, batch: int, messages: int | None) -> list[tuple[int, int]]:
    """(first window, windows) per message: consecutive windows, the last message maybe shorter."""
    plan = [(start, min(batch, available - start)) for start in range(0, available, batch)]
    return plan if messages is None else plan[:messages]


def run_mode(
    config: TenantClientConfig,
    options: RunOptions,
    windows: Windows,
    client: TenantClient,
    answers: queue.Queue[Answer],
    stop: StopSignal,
    out: TextIO,
) -> RunResult:
    """Run one mode to its end (or a stop request); `client` must be connected with `answers`."""
    session = _Session(config, options, windows, client, answers, stop, out)
    notes: list[str] = []
    available = len(windows)
    if options.mode == "bulk":
        wanted = available if options.count is None else options.count
        if wanted > available:
            notes.append(f"only {available} windows in the data: sending {available}, not {wanted}")
        plan = plan_messages(min(wanted, available), options.batch, None)
    else:
        default = {"stream": None, "wait": 1, "no-wait": DEFAULT_NO_WAIT_COUNT}[options.mode]
        messages = default if options.count is None else options.count
        plan = plan_messages(available, options.batch, messages)
        if messages is not None and len(plan) < messages:
            notes.append(f"the data has windows for {len(plan)} messages of {options.batch}: sending {len(plan)}")

    if options.mode == "wait":
        failed = False
        for start, count in plan:
            if stop.requested.is_set():
                session.recorder.stopped_early = True
                break
            request_id = session.send(start, count)
            answer = session.wait_for(request_id)
            failed = failed or answer is None or not answer.ok
        session.drain()
        summary = session.summary()
        code = 0 if summary.all_answered and not failed and summary.sent > 0 else 1
        return RunResult(summary, code, notes=notes)

    session.send_paced(plan, options.rate, options.duration_s if options.mode != "bulk" else None)
    session.drain()
    summary = session.summary()
    result = RunResult(summary, 0 if summary.all_answered else 1, notes=notes)
    result.answers = [session.collected[i] for i in session.order if i in session.collected]
    if options.mode == "no-wait" and not options.quiet:
        for request_id in session.order:
            start, count = session.sent[request_id]
            answer = session.collected.get(request_id)
            if answer is None:
                print(f"{config.tenant} {config.model} id={request_id} unanswered", file=out)
                continue
            ahead = windows.actuals(start, count, answer.horizon)
            for line in answer_lines(config, answer, ahead, session.digits):
                print(line, file=out)
    if options.mode == "bulk":
        _bulk_output(session, result, out)
    return result


def _bulk_output(session: _Session, result: RunResult, out: TextIO) -> None:
    """The forecasts in window order: numbers (one step) or arrays of H (multi-step)."""
    forecasts: list[float | None] = []
    steps: list[list[float] | None] = []
    for request_id in session.order:
        _, count = session.sent[request_id]
        answer = session.collected.get(request_id)
        rows = answer.window_steps() if answer is not None and answer.ok else None
        if rows is None:
            forecasts.extend([None] * count)
            steps.extend([None] * count)
            continue
        for row in rows:
            forecasts.append(row[0] if math.isfinite(row[0]) else None)
            steps.append(list(row))
    multi_step = any(row is not None and len(row) > 1 for row in steps)
    result.forecasts = forecasts
    result.steps = steps if multi_step else None
    out.write(orjson.dumps(steps if multi_step else forecasts).decode() + "\n")
    out.flush()
