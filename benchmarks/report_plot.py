"""The latency-vs-throughput plot of a benchmark report (one panel per QoS level and payload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report_summary import payload_encoding, payload_model

__all__ = ["PLOT_NAME", "plot"]

PLOT_NAME = "latency_vs_throughput.png"


def _series(report: dict[str, Any], qos: int, name: str) -> list[tuple[str, dict[str, Any]]]:
    """(target, sweep) of one panel: the echo's sweeps first (one per encoding), then the worker's."""
    found: list[tuple[str, dict[str, Any]]] = []
    for target in ("echo", "worker"):
        for block in report.get("blocks", []):
            if block["target"] == target and block["qos"] == qos:
                found += [(target, p) for p in block.get("payloads", []) if p["name"] == name]
    return found


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = report.get("blocks", [])
    qos_levels = sorted({b["qos"] for b in blocks}, reverse=True) or [1]
    names: list[str] = []
    for block in blocks:
        for payload in block.get("payloads", []):
            if payload["name"] not in names:
                names.append(payload["name"])
    names = names or ["single"]
    fig, axes = plt.subplots(
        len(qos_levels), len(names), figsize=(6.5 * len(names), 4.2 * len(qos_levels)), squeeze=False
    )
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for r, qos in enumerate(qos_levels):
        for c, name in enumerate(names):
            ax = axes[r][c]
            windows = 1
            seen = {"echo": 0, "worker": 0}
            for target, payload in _series(report, qos, name):
                windows = payload["windows"]
                encoding = payload_encoding(payload)
                label = target if target == "echo" else f"{target} {payload_model(payload)}"
                label += f" {encoding}"
                index = seen[target]
                seen[target] += 1
                first = index == 0  # p50 and closed-loop points for the first echo and worker series only
                open_steps = sorted(
                    (
                        s
                        for s in payload["steps"]
                        if s["mode"] == "open" and s["latency_ms"]["p99"] is not None and not s.get("superseded")
                    ),
                    key=lambda s: s["rate"],
                )
                closed = [s for s in payload["steps"] if s["mode"] == "closed" and s["latency_ms"]["p99"] is not None]
                color = "tab:gray" if target == "echo" else palette[index % len(palette)]
                style = "-" if encoding == "json" else ":"
                kept = [s for s in open_steps if s.get("sustained")]
                over = [s for s in open_steps if not s.get("sustained")]
                xs = [s["throughput"] for s in kept]
                ax.plot(xs, [s["latency_ms"]["p99"] for s in kept], "o" + style, color=color,
                        label=f"{label} p99 (open loop, sustained)")
                if first:
                    ax.plot(xs, [s["latency_ms"]["p50"] for s in kept], "o--", color=color, alpha=0.6,
                            label=f"{label} p50 (open loop, sustained)")
                ax.plot([s["throughput"] for s in over], [s["latency_ms"]["p99"] for s in over], "o", color=color,
                        markerfacecolor="none", label=f"{label} p99 (open loop, not sustained)")
                if first:
                    ax.plot([s["throughput"] for s in closed], [s["latency_ms"]["p99"] for s in closed], "x",
                            color=color, markersize=9, label=f"{label} p99 (closed loop)")
            ax.set_yscale("log")
            ax.set_title(f"QoS {qos}, {windows} window{'s' if windows > 1 else ''} per message")
            ax.set_xlabel("answers/s" + (f" (x{windows} forecasts)" if windows > 1 else ""))
            ax.set_ylabel("latency (ms, log)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
    meta = report.get("meta", {})
    fig.suptitle(f"Latency vs throughput, worker vs echo ({meta.get('started_at', '')}, {meta.get('host', '')})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
