"""TenantClient and the run modes against a real Mosquitto and an echo responder.

The echo responder (tests/client/conftest.py) answers forecast = last reading of each window,
so every expected forecast is known exactly.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client_app.client import Answer, ClientConnectError, RequestTimeout, TenantClient
from client_app.config import TenantClientConfig
from client_app.data import load_windows
from client_app.modes import RunOptions, RunResult, StopSignal, run_mode
from provisioning.embedded_broker import EmbeddedBroker
from tests.client.conftest import EchoResponder
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.probe import MqttProbe

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., TenantClientConfig]


def run(
    config: TenantClientConfig, options: RunOptions, stop: StopSignal | None = None
) -> tuple[RunResult, str, TenantClient]:
    windows = load_windows(
        config.data, station=config.station, parameter=config.parameter, window=config.window,
        resample_s=config.resample_s,
    )
    answers: queue.Queue[Answer] = queue.Queue()
    out = io.StringIO()
    with TenantClient(config, answers=answers) as client:
        result = run_mode(config, options, windows, client, answers, stop or StopSignal(), out)
    return result, out.getvalue(), client


def test_round_trip_correlates_by_id(mosquitto: MosquittoBroker, echo: EchoResponder, make_config: MakeConfig) -> None:
    config = make_config(mosquitto.host, mosquitto.port)
    rng = np.random.default_rng(3)
    with TenantClient(config) as client:
        assert client.protocol_version == "5"  # auto: Mosquitto speaks v5
        batches = [rng.uniform(6, 25, size=(int(rng.integers(1, 5)), 6)).round(2) for _ in range(100)]
        futures = [client.submit(batch) for batch in batches]
        answers = [future.result(10) for future in futures]
        for batch, answer in zip(batches, answers, strict=True):
            assert answer.ok and answer.model_version == "7" and answer.model_name == "lstm"
            assert answer.windows == len(batch)
            assert answer.forecasts == pytest.approx(batch[:, -1].tolist())
            assert 0 < answer.latency_ms < 5000
        assert len({a.id for a in answers}) == 100
        single = client.request([[1, 2, 3, 4, 5, 6]])
        assert single.forecasts == (6.0,)
        assert client.outstanding == 0
        assert (client.late, client.duplicates, client.malformed) == (0, 0, 0)


def test_two_clients_of_one_tenant_see_only_their_own_answers(
    mosquitto: MosquittoBroker, echo: EchoResponder, make_config: MakeConfig
) -> None:
    config = make_config(mosquitto.host, mosquitto.port)
    with TenantClient(config) as one, TenantClient(config) as two:
        f1 = [one.submit([[i] * 6]) for i in range(20)]
        f2 = [two.submit([[100 + i] * 6]) for i in range(20)]
        assert [f.result(10).forecasts for f in f1] == [(float(i),) for i in range(20)]
        assert [f.result(10).forecasts for f in f2] == [(100.0 + i,) for i in range(20)]
        deadline = time.monotonic() + 5
        while (one.foreign, two.foreign) != (20, 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (one.foreign, two.foreign) == (20, 20)  # each saw the other's answers and ignored them
        assert one.duplicates == two.duplicates == 0


def test_stream_reports_latency_and_mae(mosquitto: MosquittoBroker, echo: EchoResponder, make_config: MakeConfig,
                                       sample_csv: Path) -> None:
    config = make_config(mosquitto.host, mosquitto.port)
    result, out, _ = run(config, RunOptions(mode="stream", count=40, rate=200, batch=1))
    summary = result.summary
    assert (summary.sent, summary.answered, summary.unanswered, summary.errors) == (40, 40, 0, 0)
    assert result.exit_code == 0 and not summary.stopped_early
    assert summary.p50_ms is not None and summary.p99_ms is not None and 0 < summary.p50_ms <= summary.p99_ms
    # echo forecast = last reading of the window: MAE = mean |x[i][-1] - y[i]|
    windows = load_windows(sample_csv, station=config.station, parameter=122, window=6, resample_s=None)
    expected = float(np.mean(np.abs(windows.x[:40, -1] - windows.y[:40])))
    assert summary.mae == pytest.approx(expected)
    lines = out.splitlines()
    assert len(lines) == 40
    first = lines[0]
    assert first.startswith("acme lstm v7 id=acme-") and " forecast " in first and " actual " in first
    assert first.endswith(" ms)")
    assert summary.duration_s >= 39 / 200


def test_batches_and_the_last_short_message(mosquitto: MosquittoBroker, echo: EchoResponder,
                                            make_config: MakeConfig) -> None:
    config = make_config(mosquitto.host, mosquitto.port)
    result, _, _ = run(config, RunOptions(mode="bulk", count=150, rate=None, batch=64, quiet=True))
    summary = result.summary
    assert (summary.sent, summary.windows_sent, summary.forecasts) == (3, 150, 150)
    assert result.forecasts is not None and len(result.forecasts) == 150
    windows = load_windows(config.data, station=config.station, parameter=122, window=6, resample_s=None)
    assert result.forecasts == pytest.approx(windows.x[:150, -1].tolist())


def test_errors_count_as_answers_by_code(mosquitto: MosquittoBroker, echo: EchoResponder,
                                        make_config: MakeConfig) -> None:
    def rule(request_id: str, seq: int) -> Any:
        if seq % 5 == 0:
            return ("error", "invalid_window")
        if seq % 7 == 0:
            return ("error", "rate_limited")
        return None

    echo.rule = rule
    config = make_config(mosquitto.host, mosquitto.port)
    result, out, _ = run(config, RunOptions(mode="no-wait", count=35, rate=None))
    summary = result.summary
    assert summary.errors_by_code == {"invalid_window": 7, "rate_limited": 4}
    assert (summary.sent, summary.answered, summary.unanswered, summary.errors) == (35, 35, 0, 11)
    assert summary.forecasts == 24
    assert result.exit_code == 0
    assert out.count(" error invalid_window: test error invalid_window") == 7


def test_unanswered_requests_are_counted_and_fail_the_run(mosquitto: MosquittoBroker, echo: EchoResponder,
                                                          make_config: MakeConfig) -> None:
    dropped: set[str] = set()

    def rule(request_id: str, seq: int) -> Any:
        if seq in (3, 10, 11):
            dropped.add(request_id)
            return "drop"
        return None

    echo.rule = rule
    config = make_config(mosquitto.host, mosquitto.port, request_timeout_s=1)
    started = time.monotonic()
    result, out, _ = run(config, RunOptions(mode="no-wait", count=20, rate=None))
    assert time.monotonic() - started < 5
    summary = result.summary
    assert (summary.sent, summary.answered, summary.unanswered) == (20, 17, 3)
    assert result.exit_code == 1
    for request_id in dropped:
        assert f"id={request_id} unanswered" in out


def test_late_and_duplicate_answers_are_ignored(mosquitto: MosquittoBroker, echo: EchoResponder,
                                                make_config: MakeConfig) -> None:
    echo.rule = lambda request_id, seq: ("delay", 1.0) if seq == 0 else ("twice", 0) if seq == 1 else None
    config = make_config(mosquitto.host, mosquitto.port, request_timeout_s=0.3)
    with TenantClient(config) as client:
        late = client.submit([[1] * 6])
        twice = client.submit([[2] * 6])
        assert twice.result(5).forecasts == (2.0,)
        time.sleep(0.4)
        assert len(client.expire()) == 1
        with pytest.raises(RequestTimeout, match=r"no answer within 0.3 s"):
            late.result(0)
        deadline = time.monotonic() + 5
        while (client.late, client.duplicates) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (client.late, client.duplicates) == (1, 1)
        assert client.outstanding == 0


def test_stop_request_stops_sending_and_drains(mosquitto: MosquittoBroker, echo: EchoResponder,
                                               make_config: MakeConfig) -> None:
    config = make_config(mosquitto.host, mosquitto.port)
    stop = StopSignal()
    threading.Timer(0.5, stop.request).start()
    started = time.monotonic()
    result, _, _ = run(config, RunOptions(mode="stream", rate=40, quiet=True), stop)
    elapsed = time.monotonic() - started
    summary = result.summary
    assert summary.stopped_early
    assert 10 <= summary.sent <= 40, summary  # ~20 in 0.5 s at 40/s; the data has 194 windows
    assert summary.answered == summary.sent and result.exit_code == 0
    assert elapsed < 3


def test_stop_request_bounds_the_wait_for_missing_answers(mosquitto: MosquittoBroker, echo: EchoResponder,
                                                          make_config: MakeConfig) -> None:
    echo.rule = lambda request_id, seq: "drop"
    config = make_config(mosquitto.host, mosquitto.port, request_timeout_s=30)
    stop = StopSignal()
    threading.Timer(0.3, stop.request).start()
    started = time.monotonic()
    result, _, _ = run(config, RunOptions(mode="stream", rate=50, quiet=True, drain_on_stop_s=0.5), stop)
    assert time.monotonic() - started < 3  # not request_timeout_s
    assert result.summary.answered == 0 and result.summary.unanswered == result.summary.sent > 0
    assert result.exit_code == 1


def test_duration_limits_a_stream(mosquitto: MosquittoBroker, echo: EchoResponder, make_config: MakeConfig) -> None:
    config = make_config(mosquitto.host, mosquitto.port)
    result, _, _ = run(config, RunOptions(mode="stream", rate=20, duration_s=0.5, quiet=True))
    assert 9 <= result.summary.sent <= 11
    assert result.summary.answered == result.summary.sent
    assert not result.summary.stopped_early


def test_wait_mode_exit_code(mosquitto: MosquittoBroker, echo: EchoResponder, make_config: MakeConfig) -> None:
    config = make_config(mosquitto.host, mosquitto.port, request_timeout_s=0.5)
    ok, out, _ = run(config, RunOptions(mode="wait"))
    assert ok.exit_code == 0 and ok.summary.sent == ok.summary.answered == 1
    assert len(out.splitlines()) == 1
    echo.rule = lambda request_id, seq: ("error", "unknown_model")
    failed, out, _ = run(config, RunOptions(mode="wait"))
    assert failed.exit_code == 1 and failed.summary.errors == 1 and "error unknown_model" in out
    echo.rule = lambda request_id, seq: "drop"
    timed_out, out, _ = run(config, RunOptions(mode="wait"))
    assert timed_out.exit_code == 1 and timed_out.summary.unanswered == 1 and "no answer within 0.5 s" in out


def test_tutorial_format_correlates_fifo(mosquitto: MosquittoBroker, echo: EchoResponder, make_config: MakeConfig,
                                         sample_csv: Path) -> None:
    config = make_config(
        mosquitto.host, mosquitto.port, tenant="course", format="tutorial", in_queue="inqueue/lstm",
        out_queue="outqueue/lstm", normalization={"offset": 15.0, "scale": 10.0},
    )
    result, out, _ = run(config, RunOptions(mode="stream", count=30, rate=300))
    summary = result.summary
    assert (summary.sent, summary.answered, summary.errors) == (30, 30, 0)
    windows = load_windows(sample_csv, station=config.station, parameter=122, window=6, resample_s=None)
    # the echo returns norm_1 (the newest reading, normalised): denormalised, the last raw value
    expected = float(np.mean(np.abs(windows.x[:30, -1] - windows.y[:30])))
    assert summary.mae == pytest.approx(expected)
    assert out.splitlines()[0].startswith("course lstm id=course-")
    echo.rule = lambda request_id, seq: ("error", "invalid_window")
    result, out, _ = run(config, RunOptions(mode="wait"))
    assert result.summary.errors_by_code == {"invalid_window": 1} and result.exit_code == 1


def test_connect_errors_are_clear(make_config: MakeConfig, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ClientConnectError, match=rf"cannot reach the broker at 127.0.0.1:{port}"):
        TenantClient(make_config("127.0.0.1", port)).connect(timeout=2)
    acl = "user acme\ntopic write tenants/acme/models/+/requests\ntopic read tenants/acme/models/+/responses\n"
    with MosquittoBroker(tmp_path / "auth", users={"acme": "right"}, acl_text=acl) as broker:
        bad = make_config(broker.host, broker.port, broker={"username": "acme", "password": "wrong"})
        with pytest.raises(ClientConnectError, match=r"refused the connection: .*check broker.username"):
            TenantClient(bad).connect(timeout=5)
        good = make_config(broker.host, broker.port, broker={"username": "acme", "password": "right"})
        TenantClient(good).connect(timeout=5).close()  # Mosquitto grants SUBSCRIBE even where reading is denied


def test_auto_protocol_falls_back_to_311_on_the_embedded_broker(make_config: MakeConfig) -> None:
    with EmbeddedBroker(port=0) as broker:
        config = make_config("127.0.0.1", broker.port)
        with TenantClient(config) as client:
            assert client.protocol_version == "3.1.1"
        v5 = make_config("127.0.0.1", broker.port, broker={"protocol": "5"})
        with pytest.raises(ClientConnectError, match=r"no CONNACK .* within 2 s .*try broker.protocol \"3.1.1\""):
            TenantClient(v5).connect(timeout=2)


def test_refused_subscription_is_clear(make_config: MakeConfig) -> None:
    acl = {"acme": ["tenants/acme/models/+/requests", "tenants/acme/models/+/responses"]}
    with EmbeddedBroker(port=0, users={"acme": "pw"}, topic_acl=acl) as broker:
        config = make_config("127.0.0.1", broker.port, broker={"username": "acme", "password": "pw"})
        with pytest.raises(
            ClientConnectError, match=r"refused the subscription\(s\) \{'tenants/acme/errors': .*user 'acme'"
        ):
            TenantClient(config).connect(timeout=5)


def test_mqtt5_session_keeps_answers_across_a_broker_restart(make_config: MakeConfig, tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path / "restart") as broker:
        responder = EchoResponder(broker.host, broker.port, persistent=True).start()
        try:
            config = make_config(broker.host, broker.port, broker={"protocol": "5", "reconnect_max_delay_s": 1},
                                 request_timeout_s=20)
            results: list[tuple[RunResult, str, TenantClient]] = []
            runner = threading.Thread(
                target=lambda: results.append(run(config, RunOptions(mode="stream", count=60, rate=30, quiet=True)))
            )
            runner.start()
            time.sleep(0.7)
            broker.restart()  # SIGTERM: persistence keeps both sessions and queued messages
            runner.join(60)
            assert not runner.is_alive()
        finally:
            responder.stop()
        assert not responder.callback_errors
    result, _, client = results[0]
    assert client.disconnects >= 1  # the restart did cut the connection
    summary = result.summary
    assert (summary.sent, summary.answered, summary.unanswered) == (60, 60, 0), summary
    assert summary.errors == 0


def test_close_ends_the_mqtt5_session(mosquitto: MosquittoBroker, make_config: MakeConfig) -> None:
    config = make_config(mosquitto.host, mosquitto.port, client_id="acme-fixed", broker={"protocol": "5"})
    TenantClient(config).connect().close()
    with MqttProbe(mosquitto.host, mosquitto.port, protocol="5", client_id="acme-fixed", clean_session=False,
                   session_expiry_s=60) as probe:
        assert probe.session_present is False


def test_requests_without_a_subscribed_worker_are_published_again(
    mosquitto: MosquittoBroker, make_config: MakeConfig
) -> None:
    """MQTT 5 PUBACK 0x10 (no matching subscribers): e.g. a broker restarted before the workers
    resubscribed. The client publishes such requests again until a worker takes them."""
    config = make_config(mosquitto.host, mosquitto.port)
    with TenantClient(config) as client:
        future = client.submit([[1, 2, 3, 4, 5, 6]])
        time.sleep(0.5)  # nobody subscribed yet: the broker acknowledges and drops
        assert client.republished >= 1
        echo = EchoResponder(mosquitto.host, mosquitto.port).start()
        try:
            answer = future.result(10)
        finally:
            echo.stop()
        assert answer.ok and answer.forecasts == (6.0,)
