"""The latency-vs-throughput plot of a benchmark report (one panel per QoS level and payload)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report_summary import find_payload

__all__ = ["PLOT_NAME", "plot"]

PLOT_NAME = "latency_vs_throughput.png"


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
    colors = {"echo": "tab:gray", "worker": "tab:blue"}
    for r, qos in enumerate(qos_levels):
        for c, name in enumerate(names):
            ax = axes[r][c]
            windows = 1
            for target in ("echo", "worker"):
                payload = find_payload(report, target, qos, name)
                if payload is None:
                    continue
                windows = payload["windows"]
                open_steps = sorted(
                    (
                        s
                        for s in payload["steps"]
                        if s["mode"] == "open" and s["latency_ms"]["p99"] is not None and not s.get("superseded")
                    ),
                    key=lambda s: s["rate"],
                )
                closed = [s for s in payload["steps"] if s["mode"] == "closed" and s["latency_ms"]["p99"] is not None]
                color = colors[target]
                kept = [s for s in open_steps if s.get("sustained")]
                over = [s for s in open_steps if not s.get("sustained")]
                xs = [s["throughput"] for s in kept]
                ax.plot(xs, [s["latency_ms"]["p99"] for s in kept], "o-", color=color,
                        label=f"{target} p99 (open loop, sustained)")
                ax.plot(xs, [s["latency_ms"]["p50"] for s in kept], "o--", color=color, alpha=0.6,
                        label=f"{target} p50 (open loop, sustained)")
                ax.plot([s["throughput"] for s in over], [s["latency_ms"]["p99"] for s in over], "o", color=color,
                        markerfacecolor="none", label=f"{target} p99 (open loop, not sustained)")
                ax.plot([s["throughput"] for s in closed], [s["latency_ms"]["p99"] for s in closed], "x",
                        color=color, markersize=9, label=f"{target} p99 (closed loop)")
            ax.set_yscale("log")
            ax.set_title(f"QoS {qos}, {windows} window{'s' if windows > 1 else ''} per message")
            ax.set_xlabel("answers/s" + (f" (x{windows} forecasts)" if windows > 1 else ""))
            ax.set_ylabel("latency (ms, log)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    meta = report.get("meta", {})
    fig.suptitle(f"Latency vs throughput, worker vs echo ({meta.get('started_at', '')}, {meta.get('host', '')})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
