"""Drawing the dashboard's panels with matplotlib, as Grafana lays them out (for render_dashboard)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from benchmarks.render_dashboard import RunResult

SCRAPE_S = 1
STEP_S = 1
RATE_INTERVAL = f"{max(STEP_S + SCRAPE_S, 4 * SCRAPE_S)}s"  # Grafana's $__rate_interval



def _si(value: float, suffix: str = "", base: float = 1000.0, units: tuple[str, ...] = ("", "K", "M", "G")) -> str:
    magnitude = abs(value)
    index = 0
    while magnitude >= base and index < len(units) - 1:
        magnitude /= base
        value /= base
        index += 1
    text = f"{value:.3g}"
    return f"{text} {units[index]}{suffix}".rstrip() if units[index] or suffix else text


def format_value(unit: str, value: float) -> str:
    """Grafana's unit formats, as far as this dashboard uses them."""
    if value == 0:
        return {"percentunit": "0%", "s": "0 s", "reqps": "0 req/s", "bytes": "0 B"}.get(unit, "0")
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value / 1e-9:.3g} ns"
    if unit == "reqps":
        return _si(value, " req/s" if abs(value) < 1000 else "req/s")
    if unit == "bytes":
        return _si(value, "B", 1024.0, ("", "Ki", "Mi", "Gi"))
    if unit == "short":
        return _si(value)
    return f"{value:.3g}"


def tick_locator(span_s: float, most: int) -> Any:
    """Clock ticks every 5, 10, 15, 20, 30 s or whole minutes: at most `most` over the span."""
    import matplotlib.dates as mdates

    for step in (5, 10, 15, 20, 30):
        if span_s / step <= most:
            return mdates.SecondLocator(bysecond=range(0, 60, step))
    minutes = max(1, math.ceil(span_s / 60 / most))
    return mdates.MinuteLocator(interval=minutes)


PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ff780a", "#96d98d",
           "#fade2a", "#3274d9", "#e02f44"]
THRESHOLD_COLOURS = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "yellow": "#fade2a"}


def draw(panels: list[dict[str, Any]], result: RunResult, title: str, out: Path) -> list[int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    unit_px, width_px, header_px = 34, 1800, 160
    grid_h = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height_px = header_px + grid_h * unit_px + 10
    dpi = 100
    fig = plt.figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="#f4f5f5")

    def box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Pixels from the top left -> figure fraction (left, bottom, width, height)."""
        return x / width_px, 1 - (y + h) / height_px, w / width_px, h / height_px

    run = datetime.fromtimestamp(result.start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    fig.text(10 / width_px, 1 - 26 / height_px, title, fontsize=17, weight="bold", va="center")
    fig.text(10 / width_px, 1 - 56 / height_px,
             "Not a Grafana screenshot: each panel of the dashboard JSON drawn from its own PromQL, evaluated by a "
             f"real Prometheus (query_range, step {STEP_S} s, \\$__rate_interval = {RATE_INTERVAL}, \\$tenant = All) "
             f"that scraped a real worker every {SCRAPE_S} s", fontsize=10.5, va="center", color="#333")
    fig.text(10 / width_px, 1 - 76 / height_px,
             f"under two tenants driven by client_app through Mosquitto ({run}; "
             "python -m benchmarks.render_dashboard). Schedule, seconds after the first client:",
             fontsize=10.5, va="center", color="#333")
    t_first = result.events[0][0] if result.events else result.start
    seen: list[str] = []
    for at, label in result.events:
        seen.append(f"+{at - t_first:.0f} {label}")
    half = (len(seen) + 1) // 2
    alarms = [f"+{at - t_first:.0f} {label}" for at, label in result.alarms]
    notes = [";  ".join(seen[:half]), ";  ".join(seen[half:]),
             "The worker logged quality alarms: " + (";  ".join(alarms) if alarms else "none")
             + " (a labelled counter's series starts at its first alarm, so increase() cannot count that one)"]
    for row, text in enumerate(notes):
        fig.text(10 / width_px, 1 - (98 + 18 * row) / height_px, text, fontsize=9.5, va="center", color="#555")

    col_px = (width_px - 20) / 24
    empty: list[int] = []
    start_num = mdates.date2num(datetime.fromtimestamp(result.start, UTC))
    end_num = mdates.date2num(datetime.fromtimestamp(result.end, UTC))
    for panel in panels:
        pos = panel["gridPos"]
        x, y = 10 + pos["x"] * col_px, header_px + pos["y"] * unit_px
        w, h = pos["w"] * col_px, pos["h"] * unit_px
        if panel["type"] == "row":
            fig.text((x + 4) / width_px, 1 - (y + h / 2 + 4) / height_px, panel["title"], fontsize=13, weight="bold",
                     va="center")
            continue
        frame = fig.add_axes(box(x + 3, y + 3, w - 6, h - 6))
        frame.set_axis_off()
        frame.add_patch(Rectangle((0, 0), 1, 1, transform=frame.transAxes, facecolor="white", edgecolor="#d8d9da"))
        frame.text(0.01, 0.965, panel["title"], transform=frame.transAxes, fontsize=10.5, weight="bold", va="top")

        lines = result.series.get(panel["id"], [])
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit", "short")
        legend_rows = 0 if not lines else math.ceil(len(lines) / max(1, int(w // 260)))
        legend_px = 8 + 16 * legend_rows
        ax = fig.add_axes(box(x + 78, y + 34, w - 96, h - 34 - 30 - legend_px))
        ax.set_facecolor("white")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(True, color="#eeeeee", linewidth=0.8)
        ax.tick_params(labelsize=8.5, colors="#444")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos, u=unit: format_value(u, v)))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_locator(tick_locator(result.end - result.start, max(4, int(w // 120))))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.set_xlim(start_num, end_num)
        stacked = defaults.get("custom", {}).get("stacking", {}).get("mode", "none") == "normal"
        fill = defaults.get("custom", {}).get("fillOpacity", 0) / 100
        if not lines or all(np.all(np.isnan(values)) for _, _, values in lines):
            empty.append(panel["id"])
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", fontsize=12, color="#888")
            ax.set_yticks([])
        grid = np.arange(result.start, result.end + STEP_S, STEP_S)
        base = np.zeros(len(grid))
        for index, (name, times, values) in enumerate(lines):
            colour = PALETTE[index % len(PALETTE)]
            dense = np.full(len(grid), np.nan)
            slots = np.clip(np.round((times - result.start) / STEP_S).astype(int), 0, len(grid) - 1)
            dense[slots] = values
            dates = mdates.date2num([datetime.fromtimestamp(t, UTC) for t in grid])
            if stacked:
                top = base + np.nan_to_num(dense)
                shown = np.where(np.isnan(dense), np.nan, top)
                ax.fill_between(dates, base, top, where=~np.isnan(dense), color=colour, alpha=fill, linewidth=0)
                ax.plot(dates, shown, color=colour, linewidth=1.2, label=name)
                base = top
            else:
                ax.plot(dates, dense, color=colour, linewidth=1.2, label=name)
                ax.fill_between(dates, 0, dense, where=~np.isnan(dense), color=colour, alpha=fill, linewidth=0)
        if "min" in defaults or "max" in defaults:
            low, high = ax.get_ylim()
            ax.set_ylim(defaults.get("min", low), defaults.get("max", high))
        elif lines and panel["id"] not in empty:
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        thresholds = defaults.get("thresholds", {}).get("steps", [])
        if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") == "line":
            for step in thresholds:
                if step.get("value") is not None:
                    ax.axhline(step["value"], color=THRESHOLD_COLOURS.get(step["color"], step["color"]),
                               linestyle="--", linewidth=1)
        if lines:
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.1), ncol=max(1, int(w // 260)), fontsize=8.5,
                      frameon=False, handlelength=1.2, columnspacing=1.2, borderaxespad=0.2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor=fig.get_facecolor())
    plt.close(fig)
    return empty


