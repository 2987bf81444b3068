"""`python -m client_app --config TENANT_FILE [--mode ...]`: parse arguments, then `run()`.

Output: answers (stream, wait, no-wait) or the JSON array of forecasts (bulk) on stdout; log
messages and the summary on stderr, whose last line is ``SUMMARY {json}``.

Exit status: 0 every request was answered (a structured error counts as an answer; in
``wait`` mode it does not), 1 some were not (or ``wait`` got an error), 2 bad config,
arguments or data, 3 the broker could not be reached or refused the connection/subscription.
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from client_app.client import Answer, ClientConnectError, TenantClient
from client_app.config import ClientConfigError, TenantClientConfig, load_client_config, with_overrides
from client_app.data import DataError, Windows, load_windows
from client_app.modes import DEFAULT_BULK_BATCH, DEFAULT_NO_WAIT_COUNT, MODES, Mode, RunOptions, RunResult, StopSignal

log = logging.getLogger("client_app")

EXIT_OK = 0
EXIT_UNANSWERED = 1
EXIT_USAGE = 2
EXIT_BROKER = 3


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


EPILOG = f"""\
modes:
  stream    send at --rate messages/s; print each forecast beside the actual next
            reading as answers arrive; until --count, --duration, the end of the
            data or Ctrl-C
  wait      send one request at a time (--count, default 1) and block for each
            answer; exit 1 on an error answer or a timeout
  no-wait   send --count requests (default {DEFAULT_NO_WAIT_COUNT}) without waiting, then collect
            the answers by id and print them in send order
  bulk      send --count windows (default: all) in messages of --batch windows
            (default {DEFAULT_BULK_BATCH}), as fast as possible unless --rate is given; print
            the forecasts as one JSON array (null where a message failed; a multi-step
            model: one array of its H forecasts per window)

Ctrl-C (or SIGTERM) stops sending, waits briefly for outstanding answers (a
second Ctrl-C stops waiting) and prints the summary.

output:
  stdout    answer lines, e.g.
            acme lstm v1 id=acme-1a2b3c4d-0000001 forecast 12.31 actual 12.00 (1.8 ms)
            (a model forecasting H steps: its H forecasts, then the readings 1..H
            steps ahead, "-" where the data has none; scored per step in the summary)
            (bulk: the JSON array of forecasts)
  stderr    log messages and the summary; its last line is
            SUMMARY {{"tenant": .., "model": .., "mode": .., "sent": .., "answered": ..,
            "errors": .., "errors_by_code": {{..}}, "unanswered": .., "windows_sent": ..,
            "forecasts": .., "p50_ms": .., "p90_ms": .., "p99_ms": .., "max_ms": ..,
            "mae": .., "duration_s": .., ...}}

exit status:
  0  every request was answered (a structured error counts as an answer,
     except in wait mode)
  1  some requests were not answered in time (or wait mode got an error)
  2  bad config, arguments or data
  3  the broker could not be reached or refused the connection/subscription

The tenant config keys are documented in client_app/README.md and in
client_app/config.py.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client_app",
        description=(
            "Tenant client of the MQTT inference service: sends windows of one station's readings "
            "from a BTS-schema CSV to tenants/<tenant>/models/<model>/requests, matches the answers "
            "by request id and reports forecasts against the actual next readings."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--config", type=Path, required=True, metavar="TENANT_FILE",
                        help="tenant client config (JSON), e.g. examples/tenants/acme.json")
    parser.add_argument("--mode", choices=MODES, default="stream", help="run mode (default: stream)")
    parser.add_argument("--rate", type=_non_negative_float, metavar="R",
                        help="messages per second (overrides the config's rate; 0: as fast as possible)")
    parser.add_argument("--count", type=_positive_int, metavar="N",
                        help="requests to send (stream: default until the data ends; wait: 1; no-wait: "
                        f"{DEFAULT_NO_WAIT_COUNT}); in bulk mode the number of windows (default: all)")
    parser.add_argument("--duration", type=_positive_float, metavar="S",
                        help="stop sending after S seconds (stream, no-wait)")
    parser.add_argument("--batch", type=_positive_int, metavar="B",
                        help=f"windows per message (overrides the config's batch; bulk default {DEFAULT_BULK_BATCH})")
    parser.add_argument("--quiet", action="store_true",
                        help="print no per-answer lines and no log messages, only the summary")
    parser.add_argument("--summary-json", type=Path, metavar="PATH",
                        help="also write the summary as a JSON object to PATH")
    parser.add_argument("--time-unit", choices=("auto", "s", "ms", "us", "ns"),
                        help="unit of numeric reading_time values in a BTS file (overrides the config's "
                        "time_unit; default auto: detected from their magnitude)")
    parser.add_argument("--data-format", choices=("auto", "bts", "tutorial"),
                        help="the data file's format (overrides the config's data_format; default auto: from "
                        "its header): BTS readings, or the tutorial's pre-windowed norm_value, norm_1..norm_N")
    return parser


@dataclass(frozen=True)
class CliArgs:
    config: Path
    mode: Mode
    rate: float | None
    count: int | None
    duration: float | None
    batch: int | None
    quiet: bool
    summary_json: Path | None
    time_unit: str | None = None
    data_format: str | None = None


def parse_args(argv: list[str] | None = None) -> CliArgs:
    ns = build_parser().parse_args(argv)
    return CliArgs(ns.config, ns.mode, ns.rate, ns.count, ns.duration, ns.batch, ns.quiet, ns.summary_json,
                   ns.time_unit, ns.data_format)


def resolve(args: CliArgs) -> tuple[TenantClientConfig, RunOptions]:
    """The validated config (with command-line overrides) and the run options."""
    config = load_client_config(args.config)
    if args.mode == "bulk" and config.format == "tutorial":
        raise ClientConfigError(
            f"{args.config}: bulk mode needs format oip (the tutorial format has one window per message)"
        )
    batch = args.batch if args.batch is not None else (DEFAULT_BULK_BATCH if args.mode == "bulk" else None)
    config = with_overrides(config, rate=args.rate, batch=batch, time_unit=args.time_unit,
                            data_format=args.data_format)
    # bulk is as fast as possible unless --rate says otherwise
    rate = (args.rate or None) if args.mode == "bulk" else config.messages_per_s
    options = RunOptions(
        mode=args.mode,
        count=args.count,
        duration_s=args.duration,
        rate=rate,
        batch=config.batch,
        quiet=args.quiet,
    )
    return config, options


@contextmanager
def stop_on_signals(stop: StopSignal) -> Iterator[None]:
    """SIGINT/SIGTERM only set the stop flag while the run lasts."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.request()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def describe(config: TenantClientConfig, windows: Windows) -> str:
    """The first line of a run: what is sent, from where."""
    station = f" from station {windows.station}" if windows.station is not None else ""
    if windows.normalized:
        ignored = [key for key in ("resample_s", "normalization") if getattr(config, key) is not None]
        return (
            f"{config.tenant}/{config.model}: {len(windows)} pre-windowed rows of {config.window} (normalised, "
            f"scored against norm_value){station} in {config.data}"
            + (f"; {' and '.join(ignored)} ignored (it does not apply to pre-windowed rows)" if ignored else "")
        )
    return (
        f"{config.tenant}/{config.model}: {len(windows)} windows of {config.window}{station} in {config.data}"
        + (f" (resampled every {config.resample_s:g} s)" if config.resample_s else "")
    )


def run(
    config: TenantClientConfig,
    options: RunOptions,
    *,
    stop: StopSignal | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    summary_json: Path | None = None,
) -> RunResult | int:
    """Load the windows, connect, run the mode, print the summary. A RunResult, or an exit
    code when the run could not start (data or broker problems, already reported on `err`)."""
    from client_app.modes import run_mode

    out = out or sys.stdout
    err = err or sys.stderr
    stop = stop or StopSignal()
    try:
        windows = load_windows(
            config.data,
            station=config.station,
            parameter=config.parameter,
            window=config.window,
            resample_s=config.resample_s,
            time_unit=config.time_unit,
            data_format=config.data_format,
        )
        if config.format == "tutorial" and not windows.normalized and config.normalization is None:
            raise DataError(
                f"{config.data} holds raw readings: format tutorial sends normalised values and needs the "
                "config's normalization (offset and scale from the model's metadata.json)"
            )
    except DataError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    if not options.quiet:
        print(describe(config, windows), file=err)
    answers: queue.Queue[Answer] = queue.Queue()
    client = TenantClient(config, answers=answers, normalized=windows.normalized)
    try:
        client.connect(timeout=min(10.0, config.request_timeout_s + 5.0))
    except ClientConnectError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_BROKER
    try:
        result = run_mode(config, options, windows, client, answers, stop, out)
    finally:
        client.close()
    for note in result.notes:
        print(f"note: {note}", file=err)
    if client.uncorrelated_errors:
        for _, text in client.uncorrelated_errors[-5:]:
            print(f"warning: error without a request id from the service: {text}", file=err)
    print(result.summary.text(), file=err)
    print(result.summary.json_line(), file=err, flush=True)
    if summary_json is not None:
        import orjson

        summary_json.write_bytes(orjson.dumps(result.summary.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, options = resolve(args)
    except ClientConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = StopSignal()
    with stop_on_signals(stop):
        result = run(config, options, stop=stop, summary_json=args.summary_json)
    return result if isinstance(result, int) else result.exit_code
