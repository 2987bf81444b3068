"""Benchmark report: summary figures, JSON, a markdown table and a latency-vs-throughput plot.

`python -m benchmarks.report results/latest.json` re-renders report.md and the PNG from a
saved JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.report_markdown import render_markdown
from benchmarks.report_plot import PLOT_NAME, plot
from benchmarks.report_summary import summarize

__all__ = ["JSON_NAME", "MARKDOWN_NAME", "PLOT_NAME", "main", "plot", "render_markdown", "summarize", "write_report"]

JSON_NAME = "latest.json"
MARKDOWN_NAME = "report.md"


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """latest.json, report.md and the PNG in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if "summary" not in report:
        report["summary"] = summarize(report)
    json_path = out / JSON_NAME
    json_path.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    markdown_path = out / MARKDOWN_NAME
    markdown_path.write_text(render_markdown(report))
    png_path = plot(report, out / PLOT_NAME)
    return {"json": json_path, "markdown": markdown_path, "plot": png_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="a saved latest.json")
    parser.add_argument("--out", type=Path, help="default: the JSON's folder")
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text())
    report["summary"] = summarize(report)
    paths = write_report(report, args.out or args.json.parent)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
