"""What reading a request and writing its answer costs per message: JSON against binary tensors.

`python -m benchmarks.codec_cost [--rounds 5] [--calls 2000] [--out benchmarks/results/codec_cost.md]`

Per message, the worker decodes the request (`contract.oip.decode_request`, which also reads the
binary tensor extension) and encodes the answer (`contract.oip.encode_response`, or
`contract.oip.encode_binary_response` when the request asked for a binary answer): this times
exactly those two calls, on the requests the load generator sends (benchmarks/loadgen.py: one
window or 64 windows of BTS-like readings, JSON or JSON header + NUL + float32 bytes asking for a
binary answer) and an answer with the worker's parameters. Rounds alternate the cases; the
figures are p50 and p90 of every timed call, in µs. Prints a markdown table and writes it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.loadgen import request_bodies

__all__ = ["CASES", "codec_case", "main", "measure"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "codec_cost.md"
CASES = [(1, "json"), (1, "binary"), (64, "json"), (64, "binary")]
MAX_BYTES = 1_048_576  # the worker's defaults (server_app config: worker.max_message_bytes, max_windows_per_message)
MAX_WINDOWS = 4096
WINDOW_LENGTH, FEATURES = 6, 1
REQUEST_ID = "lg1a2b3c4d-123456"


def codec_case(windows: int, encoding: str) -> tuple[bytes, Callable[[bytes], Any], Callable[[Any], bytes]]:
    """(request payload, decode, encode): the worker's two calls for one message of this case."""
    from contract import oip

    payload = b'{"id":"' + REQUEST_ID.encode() + request_bodies(windows, WINDOW_LENGTH, FEATURES, encoding=encoding)[0]
    forecasts = np.linspace(10.0, 20.0, windows, dtype=np.float32).reshape(windows, 1)
    parameters = {"tenant": "bench", "served_at": 1_795_000_000.123456, "worker": "bench-worker-1",
                  "queue_ms": 0.412, "compute_ms": 0.187}

    def decode(data: bytes) -> Any:
        return oip.decode_request(data, max_bytes=MAX_BYTES, max_windows=MAX_WINDOWS)

    def encode(request: Any) -> bytes:
        form = getattr(request, "binary_answer", None)
        if form is None:
            return oip.encode_response(request.id, "lstm", 1, forecasts, parameters)
        answer, _header_length = oip.encode_binary_response(request.id, "lstm", 1, forecasts, parameters, form)
        return answer

    request = decode(payload)
    if encoding == "binary" and getattr(request, "binary_answer", None) is None:
        raise RuntimeError("the binary request did not ask for a binary answer")
    return payload, decode, encode


def measure(rounds: int = 5, calls: int = 2000) -> list[dict[str, Any]]:
    """Per case: request and answer sizes, decode / encode / both, p50 and p90 in µs."""
    cases = {case: codec_case(*case) for case in CASES}
    samples: dict[tuple[int, str], dict[str, list[float]]] = {
        case: {"decode": [], "encode": [], "total": []} for case in CASES
    }
    clock = time.perf_counter
    for round_index in range(rounds):
        order = CASES if round_index % 2 == 0 else list(reversed(CASES))
        for case in order:
            payload, decode, encode = cases[case]
            found = samples[case]
            for _ in range(calls):
                t0 = clock()
                request = decode(payload)
                t1 = clock()
                encode(request)
                t2 = clock()
                found["decode"].append(t1 - t0)
                found["encode"].append(t2 - t1)
                found["total"].append(t2 - t0)
    results = []
    for case in CASES:
        payload, decode, encode = cases[case]
        row: dict[str, Any] = {
            "windows": case[0], "encoding": case[1], "request_bytes": len(payload),
            "answer_bytes": len(encode(decode(payload))),
        }
        for part, values in samples[case].items():
            p50, p90 = np.percentile(np.asarray(values) * 1e6, [50, 90]).tolist()
            row[f"{part}_p50_us"], row[f"{part}_p90_us"] = round(p50, 2), round(p90, 2)
        results.append(row)
    return results


def render(results: list[dict[str, Any]], rounds: int, calls: int) -> str:
    lines = [
        "# Codec cost per message: JSON vs binary tensors",
        "",
        f"`python -m benchmarks.codec_cost`, {time.strftime('%Y-%m-%d %H:%M')}: `contract.oip.decode_request` + "
        "`encode_response` (JSON) or `encode_binary_response` (binary answer, NUL form) per message, the load "
        f"generator's requests; {rounds} alternated rounds of {calls} calls per case, µs.",
        "",
        "| windows/msg | encoding | request bytes | answer bytes | decode p50 / p90 | encode p50 / p90 | "
        "decode + encode p50 / p90 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        lines.append(
            f"| {row['windows']} | {row['encoding']} | {row['request_bytes']:,} | {row['answer_bytes']:,} | "
            f"{row['decode_p50_us']:.1f} / {row['decode_p90_us']:.1f} | "
            f"{row['encode_p50_us']:.1f} / {row['encode_p90_us']:.1f} | "
            f"**{row['total_p50_us']:.1f}** / {row['total_p90_us']:.1f} |"
        )
    by_case = {(r["windows"], r["encoding"]): r for r in results}
    lines.append("")
    for windows in sorted({r["windows"] for r in results}):
        json_row, binary_row = by_case.get((windows, "json")), by_case.get((windows, "binary"))
        if json_row and binary_row:
            lines.append(
                f"- {windows} window(s): binary costs {binary_row['total_p50_us'] / json_row['total_p50_us']:.2f}x "
                f"JSON's decode + encode ({binary_row['total_p50_us'] - json_row['total_p50_us']:+.1f} µs/msg)."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codec_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    results = measure(args.rounds, args.calls)
    text = render(results, args.rounds, args.calls)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
