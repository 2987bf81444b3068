"""The command line in a real process: exit code, progress, the result table, --quiet, --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ml_training.cli import build_parser

TRAIN = [sys.executable, "-m", "ml_training"]
TINY = ["--resample", "300", "--epochs", "2"]


def test_train_in_a_subprocess_prints_progress_table_and_path(tiny_csv: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    proc = subprocess.run(
        [
            *TRAIN,
            "--data",
            str(tiny_csv),
            "--model",
            "ann",
            "--repository",
            str(repository),
            *TINY,
            "--name",
            "tiny-ann",
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert re.search(r"^epoch 1/2  loss \d+\.\d+  val_loss \d+\.\d+", out, re.M)
    assert re.search(r"^epoch 2/2 ", out, re.M)
    assert re.search(r"^  forecast\s+MAE\s+RMSE$", out, re.M)
    assert re.search(r"^  tiny-ann\s+\d+\.\d{4}\s+\d+\.\d{4}$", out, re.M)
    assert re.search(r"^  persistence\s+\d+\.\d{4}\s+\d+\.\d{4}$", out, re.M)
    last = out.rstrip("\n").splitlines()[-1]
    assert Path(last) == repository / "tiny-ann" / "1"
    assert (Path(last) / "model.tflite").is_file()


def test_quiet_prints_only_the_path(tiny_csv: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    proc = subprocess.run(
        [*TRAIN, "--data", str(tiny_csv), "--model", "ann", "--repository", str(repository), *TINY, "--quiet"],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{repository / 'ann' / '1'}\n"
    assert proc.stderr == ""


def test_help_documents_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, action.dest
    wanted = ["--data", "--model", "--repository", "--name", "--station", "--parameter", "--window"]
    wanted += ["--epochs", "--seed", "--normalization", "--resample", "--quiet"]
    for option in wanted:
        assert option in text


def test_importing_the_cli_does_not_import_tensorflow() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, ml_training.cli, ml_training.data; print('tensorflow' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "False", proc.stderr
    proc = subprocess.run([*TRAIN, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "usage: python -m ml_training" in proc.stdout
