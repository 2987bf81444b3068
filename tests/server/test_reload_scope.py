"""Every setting either takes effect on reload or is logged as needing a restart, and the
README's configuration reference says which (issue 10, bug 2)."""

from __future__ import annotations

import logging
import re
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from server_app.config import ServerConfig, load_config
from server_app.reload import RESTART_ONLY, Reloader, needs_restart, restart_only_changes
from server_app.state import ServingState
from tests.support.configs import REPO_ROOT, copy_model_repository, server_config_dict, write_config
from tests.support.mosquitto import MosquittoBroker
from tests.support.workers import running_worker

# Keys of these mappings are names chosen by the operator; the README writes them so.
PLACEHOLDERS = {"models": "<name>", "tenants": "<id>"}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def settings_of(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of the server config, dotted: sections are walked, optional sub-objects
    (`broker.tls`) and plain values are leaves."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        section = _model_of(annotation)
        if section is not None:
            keys |= settings_of(section, key + ".")
            continue
        if typing.get_origin(annotation) is dict and name in PLACEHOLDERS:
            value = _model_of(typing.get_args(annotation)[1])
            assert value is not None
            keys |= settings_of(value, f"{key}.{PLACEHOLDERS[name]}.")
            continue
        keys.add(key)  # a value, or an optional sub-object documented as one key (`broker.tls`)
    return keys


def readme_settings() -> dict[str, str]:
    """{dotted key: 'reload' | 'restart'} from the README's server configuration table."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Server configuration reference", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert "applied" in header, f"the configuration table needs an 'applied' column: {header}"
    column = header.index("applied")
    found: dict[str, str] = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        assert names, row
        first = names[0]
        parent = first.rsplit(".", 1)[0] + "." if "." in first else ""
        scope = cells[column]
        for name in names:
            key = name if "." in name or not parent else parent + name
            assert key not in found, f"{key} listed twice in the README"
            found[key] = scope
    return found


def test_readme_says_for_every_setting_whether_a_reload_applies_it() -> None:
    documented = readme_settings()
    expected = {key: "restart" if needs_restart(key) else "reload" for key in settings_of(ServerConfig)}
    missing = sorted(set(expected) - set(documented))
    unknown = sorted(set(documented) - set(expected))
    assert not missing, f"settings missing from the README configuration table: {missing}"
    assert not unknown, f"README lists settings the config does not have: {unknown}"
    wrong = {key: (documented[key], expected[key]) for key in expected if documented[key] != expected[key]}
    assert not wrong, f"README 'applied' column disagrees with server_app.reload.RESTART_ONLY: {wrong}"


def test_restart_only_table_names_real_settings() -> None:
    settings = settings_of(ServerConfig)
    for key in RESTART_ONLY:
        assert any(s == key or s.startswith(key + ".") for s in settings), key


# --------------------------------------------------------------------------- the reloader


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    repository = copy_model_repository(tmp_path / "models", ("lstm",))
    config = server_config_dict(
        "127.0.0.1", 1883, repository,
        models={"lstm": {"repository": str(repository / "lstm")}}, tenants={"acme": {"models": ["lstm"]}},
    )  # fmt: skip
    return write_config(tmp_path / "server.yaml", config), config


def _reloader(path: Path) -> tuple[Reloader, list[ServingState]]:
    published: list[ServingState] = []
    reloader = Reloader(load_config(path), path, published.append)
    assert reloader.poll_once()
    return reloader, published


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "server_app.reload" and r.levelno >= logging.WARNING]


def test_reload_changing_restart_only_settings_logs_one_warning_naming_them(
    setup: tuple[Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    path, config = setup
    reloader, published = _reloader(path)
    config["broker"]["port"] = 1884
    config["health"] = {"port": 9090}
    config["worker"] = {"max_inflight": 50, "max_batch": 8}
    write_config(path, config)
    with caplog.at_level(logging.INFO, logger="server_app.reload"):
        assert reloader.poll_once()
    (warning,) = _warnings(caplog)
    assert "broker.port, health.port, worker.max_inflight changed" in warning and "restart" in warning
    assert "max_batch" not in warning
    assert published[-1].policy.worker.max_batch == 8  # the reloadable part is applied


def test_reload_of_settings_a_worker_applies_logs_no_warning(
    setup: tuple[Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    path, config = setup
    reloader, published = _reloader(path)
    before = load_config(path)
    config["worker"] = {
        "dedup_window_s": 5, "dedup_max_entries": 10, "shutdown_grace_s": 3, "max_delay_ms": 2, "queue_size": 50,
    }
    config["reload"] = {"poll_interval_s": 0.5}
    config["tenants"]["beta"] = {"models": ["lstm"]}
    write_config(path, config)
    with caplog.at_level(logging.INFO, logger="server_app.reload"):
        assert reloader.poll_once()
    assert not _warnings(caplog)
    worker = published[-1].policy.worker
    assert (worker.dedup_window_s, worker.dedup_max_entries, worker.shutdown_grace_s) == (5, 10, 3)
    assert restart_only_changes(load_config(path), before) == []


def test_first_poll_adopts_an_edit_made_after_the_config_was_read(setup: tuple[Path, dict[str, Any]]) -> None:
    """A worker process reads its file, then its reloader starts: an edit in between is not lost
    (the reloader used to take the file's digest at that moment as already applied)."""
    path, config = setup
    loaded = load_config(path)
    config["tenants"]["beta"] = {"models": ["lstm"]}
    write_config(path, config)
    published: list[ServingState] = []
    reloader = Reloader(loaded, path, published.append)
    assert reloader.poll_once()
    assert ("beta", "lstm") in published[-1].routes
    assert not reloader.poll_once()  # nothing new after that


# --------------------------------------------------------------------------- the worker


@pytest.mark.integration
def test_worker_applies_reloaded_dedup_settings(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    repository = copy_model_repository(tmp_path / "models", ("lstm",))
    config = server_config_dict(
        mosquitto.connect_host, mosquitto.port, repository, shared_group="inference",
        models={"lstm": {"repository": str(repository / "lstm")}}, tenants={"acme": {"models": ["lstm"]}},
    )  # fmt: skip
    path = write_config(tmp_path / "server.yaml", config)
    with running_worker(config, path) as worker:
        config["worker"] = {"dedup_window_s": 7.0, "dedup_max_entries": 11, "shutdown_grace_s": 3.0}
        write_config(path, config)
        worker.reload_now()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = worker._state
            if state is not None and state.policy.worker.dedup_max_entries == 11:
                break
            time.sleep(0.05)
        assert worker._state is not None and worker._state.policy.worker.dedup_max_entries == 11
        answered = worker._answered
        assert (answered._window_s, answered._max_entries) == (7.0, 11)
