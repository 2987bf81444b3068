"""The tutorial's pre-windowed CSV (norm_value, norm_1..norm_6, other columns) and time_unit:
detected, read, streamed for a tutorial-format tenant and scored against norm_value."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client_app.cli import parse_args, resolve, run
from client_app.config import ClientConfigError, TenantClientConfig, parse_client_config
from client_app.data import DataError, detect_format, load_windows
from client_app.modes import RunOptions, RunResult
from tests.client.conftest import STATION, EchoResponder, series_rows, tenant_json, write_csv

OFFSET, SCALE = 15.0, 10.0


def normalised_series(count: int) -> np.ndarray:
    return (np.array([6 + (i * 7) % 20 for i in range(count)], dtype=np.float64) - OFFSET) / SCALE


def tutorial_csv(path: Path, count: int = 60, station: int = STATION, extra_rows: str = "") -> Path:
    """Like the tutorial's file: a pandas index column, station, norm_value, norm_1 (newest)..norm_6."""
    norm = normalised_series(count + 6).tolist()
    lines = [",station_id,norm_value," + ",".join(f"norm_{k}" for k in range(1, 7)) + ",reading_time"]
    for i in range(count):
        newest_first = [norm[i + 6 - k] for k in range(1, 7)]
        lines.append(f"{i},{station},{norm[i + 6]!r}," + ",".join(repr(v) for v in newest_first) + f",{1000 + i}")
    path.write_text("\n".join(lines) + "\n" + extra_rows, encoding="utf-8")
    return path


def load(path: Path, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"station": None, "parameter": 122, "window": 6, "resample_s": None, **kwargs}
    return load_windows(path, **options)


def test_the_header_says_which_format(tmp_path: Path, sample_csv: Path) -> None:
    assert detect_format(tutorial_csv(tmp_path / "t.csv"), 6) == "tutorial"
    assert detect_format(sample_csv, 6) == "bts"
    other = tmp_path / "other.csv"
    other.write_text("time,load\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load(other)
    message = str(info.value)
    assert message.startswith(f"{other}: header has time, load; expected the BTS columns station_id, parameter_id, "
                              "reading_time, value, or the tutorial's pre-windowed columns norm_value, norm_1..norm_6")


def test_pre_windowed_rows_become_windows_oldest_first(tmp_path: Path) -> None:
    windows = load(tutorial_csv(tmp_path / "t.csv", count=60))
    norm = normalised_series(66)
    assert windows.normalized and len(windows) == 60 and windows.station == STATION
    np.testing.assert_array_equal(windows.x[0], norm[0:6])  # norm_6 .. norm_1: oldest first
    np.testing.assert_array_equal(windows.y, norm[6:66])
    assert windows.follows is not None and windows.follows[:-1].all() and not windows.follows[-1]
    assert windows.actuals(58, 2, horizon=2) == [(norm[64], norm[65]), (norm[65], None)]


def test_rows_that_do_not_continue_each_other_have_no_later_actuals(tmp_path: Path) -> None:
    path = tutorial_csv(tmp_path / "t.csv", count=10)
    lines = path.read_text().splitlines()
    lines.insert(6, lines[2].replace("1,", "99,", 1))  # a repeated window after row 4
    path.write_text("\n".join(lines) + "\n")
    windows = load(path)
    assert windows.follows is not None
    assert windows.follows.tolist()[3:7] == [True, False, False, True]
    assert windows.actuals(3, 1, horizon=2) == [(windows.y[3], windows.y[4])]
    assert windows.actuals(4, 1, horizon=2) == [(windows.y[4], None)]


@pytest.mark.parametrize(
    ("content", "options", "expected"),
    [
        ("norm_value,norm_1,norm_2\n1,2,3\n", {}, "needs columns norm_value, norm_1..norm_6 (window 6); missing "
         "norm_3, norm_4, norm_5, norm_6 (header has: norm_value, norm_1, norm_2)"),
        ("norm_value," + ",".join(f"norm_{k}" for k in range(1, 7)) + "\n0.1,0.2,x,0,0,0,0\n", {},
         "line 2: column 'norm_2': not a finite number: 'x'"),
        ("station_id,parameter_id,reading_time,value\n1,122,1,5\n", {"data_format": "tutorial"},
         "missing norm_value, norm_1, norm_2, norm_3, norm_4, norm_5, norm_6"),
    ],
)
def test_clear_errors(tmp_path: Path, content: str, options: dict[str, Any], expected: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=None) as info:
        load(path, **options)
    assert expected in str(info.value)


def test_station_rows_are_selected(tmp_path: Path) -> None:
    path = tutorial_csv(tmp_path / "t.csv", count=10)
    other = tutorial_csv(tmp_path / "o.csv", count=3, station=7).read_text().splitlines()[1:]
    path.write_text(path.read_text() + "\n".join(other) + "\n")
    assert len(load(path)) == 10 and len(load(path, station=7)) == 3
    with pytest.raises(DataError, match=r"station 8 not found \(stations present: 7, 1161114002\)"):
        load(path, station=8)


def test_time_unit_reaches_the_bts_reader(tmp_path: Path) -> None:
    """Milliseconds small enough to pass for seconds: only the option says which."""
    rows = [(STATION, 122, 1_000_000 + 60_000 * i, v) for i, (_, _, _, v) in enumerate(series_rows(20))]
    path = write_csv(tmp_path / "ms.csv", rows)
    seconds = load(path)
    millis = load(path, time_unit="ms")
    assert seconds.target_times[0] == 1_000_000 + 6 * 60_000
    assert millis.target_times[0] == pytest.approx(1_000 + 6 * 60)
    resampled = load(path, time_unit="ms", resample_s=120)
    assert len(resampled) == 9 - 6 and resampled.target_times[0] == pytest.approx(1_080 + 6 * 120)


def test_time_unit_and_data_format_from_config_and_command_line(tmp_path: Path, sample_csv: Path) -> None:
    base = {"tenant": "acme", "model": "lstm", "data": str(sample_csv)}
    config = parse_client_config(json.dumps({**base, "time_unit": "ns", "data_format": "bts"}))
    assert (config.time_unit, config.data_format) == ("ns", "bts")
    assert parse_client_config(json.dumps(base)).time_unit == "auto"
    with pytest.raises(ClientConfigError, match=r"time_unit: Input should be 'auto', 's', 'ms', 'us' or 'ns'"):
        parse_client_config(json.dumps({**base, "time_unit": "h"}))
    path = tenant_json(tmp_path / "acme.json", **base)
    config, _ = resolve(parse_args(["--config", str(path), "--time-unit", "ms", "--data-format", "tutorial"]))
    assert (config.time_unit, config.data_format) == ("ms", "tutorial")


def test_run_passes_time_unit_to_the_reader(tmp_path: Path, sample_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_load(path: Path, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise DataError("stop here")

    monkeypatch.setattr("client_app.cli.load_windows", fake_load)
    config = parse_client_config(json.dumps({"tenant": "acme", "model": "lstm", "data": str(sample_csv),
                                             "time_unit": "us"}))
    err = io.StringIO()
    assert run(config, RunOptions(mode="wait"), err=err) == 2
    assert seen["time_unit"] == "us" and seen["data_format"] == "auto" and "stop here" in err.getvalue()


def test_tutorial_tenant_with_raw_data_needs_normalization(sample_csv: Path) -> None:
    config = parse_client_config(json.dumps({"tenant": "course", "model": "lstm", "data": str(sample_csv),
                                             "format": "tutorial", "in_queue": "i", "out_queue": "o"}))
    err = io.StringIO()
    assert run(config, RunOptions(mode="wait"), err=err) == 2
    assert "holds raw readings: format tutorial sends normalised values and needs the config's normalization" in (
        err.getvalue()
    )
    with pytest.raises(ClientConfigError, match="format tutorial needs normalization"):
        parse_client_config(json.dumps({"tenant": "course", "model": "lstm", "data": "x.csv", "format": "tutorial",
                                        "in_queue": "i", "out_queue": "o", "data_format": "bts"}))


# --------------------------------------------------------------------------- over a broker


def _stream(config: TenantClientConfig, count: int) -> tuple[RunResult, str, str]:
    out, err = io.StringIO(), io.StringIO()
    result = run(config, RunOptions(mode="stream", count=count, rate=None), out=out, err=err)
    assert isinstance(result, RunResult), err.getvalue()
    return result, out.getvalue(), err.getvalue()


@pytest.mark.integration
def test_tutorial_tenant_streams_the_pre_windowed_file(
    mosquitto: Any, echo: EchoResponder, make_config: Callable[..., TenantClientConfig], tmp_path: Path
) -> None:
    data = tutorial_csv(tmp_path / "tutorial.csv", count=40)
    # the tutorial's own client knew no normalisation: none is needed for pre-windowed data
    config = make_config(mosquitto.host, mosquitto.port, tenant="course", format="tutorial", data=str(data),
                         in_queue="inqueue/lstm", out_queue="outqueue/lstm", station=None, resample_s=300)
    result, out, err = _stream(config, 30)
    summary = result.summary
    assert (summary.sent, summary.answered, summary.errors) == (30, 30, 0)
    norm = normalised_series(46)
    # each message is the row's norm_1..norm_6 as they are in the file
    rows = [body for body in echo.bodies if "norm_1" in body]
    assert rows[0] == {f"norm_{k}": norm[6 - k] for k in range(1, 7)}
    # the echo answers norm_1: scored against norm_value, in normalised units
    expected = float(np.mean(np.abs(norm[5:35] - norm[6:36])))
    assert summary.mae == pytest.approx(expected) and summary.units == "normalised units"
    assert "40 pre-windowed rows of 6 (normalised, scored against norm_value) from station 1161114002" in err
    assert "resample_s ignored (it does not apply to pre-windowed rows)" in err and "(normalised units)" in err
    assert f" forecast {norm[5]:.4f} actual {norm[6]:.4f} (" in out.splitlines()[0]


@pytest.mark.integration
def test_oip_tenant_sends_pre_windowed_rows_as_normalised(
    mosquitto: Any, echo: EchoResponder, make_config: Callable[..., TenantClientConfig], tmp_path: Path
) -> None:
    data = tutorial_csv(tmp_path / "tutorial.csv", count=20)
    config = make_config(mosquitto.host, mosquitto.port, data=str(data), station=None)
    result, _, _ = _stream(config, 10)
    assert result.summary.answered == 10 and result.summary.errors == 0
    request = next(body for body in echo.bodies if "inputs" in body)
    assert request["parameters"]["normalized"] is True
    norm = normalised_series(26)
    assert request["inputs"][0]["data"] == pytest.approx(norm[0:6].tolist())
    assert result.summary.mae == pytest.approx(float(np.mean(np.abs(norm[5:15] - norm[6:16]))))
