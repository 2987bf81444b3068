"""benchmarks.lstm_invoke: runs on the shipped files, writes its table, imports neither TensorFlow nor server_app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lstm_invoke_table(tmp_path: Path) -> None:
    out = tmp_path / "lstm_invoke.md"
    probe = (
        "import sys; from benchmarks.lstm_invoke import main; "
        f"code = main(['--rounds', '2', '--per-round', '3', '--out', {str(out)!r}]); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'server_app')); "
        "print('IMPORTED', bad); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IMPORTED []" in done.stdout
    text = out.read_text(encoding="utf-8")
    for label in ("old", "new"):
        for batch in (1, 8, 64):
            assert any(line.startswith(f"| {label} |") and f"| {batch} |" in line for line in text.splitlines())


def test_lstm_invoke_missing_file(tmp_path: Path) -> None:
    from benchmarks.lstm_invoke import main

    assert main(["--new", str(tmp_path / "nope.tflite"), "--no-write"]) == 2
