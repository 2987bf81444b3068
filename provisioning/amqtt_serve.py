"""Running amqtt in this process until told to stop: its logging, the port check before it starts
(a one-line reason instead of amqtt's traceback), and the entry point of the broker process that
:class:`provisioning.amqtt_broker.EmbeddedBroker` spawns (it reports over a pipe)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
import sys
import warnings
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["child_main", "configure_logging", "port_in_use", "serve"]

# The name the embedded broker has always logged under.
_log = logging.getLogger("provisioning.embedded_broker")


def configure_logging(level: int) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s amqtt[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in ("amqtt", "transitions", "websockets"):
        logging.getLogger(name).setLevel(level)
    # amqtt 0.12 warns about its own deprecated config keys (for example "acl")
    # and about psutil; none of that is actionable at run time.
    warnings.simplefilter("ignore", DeprecationWarning)


def _listening_port(broker: Any, fallback: int) -> int:
    """The port the broker's default TCP listener is bound to (resolves port 0)."""
    servers = getattr(broker, "_servers", {})
    server = servers.get("default")
    sockets = getattr(getattr(server, "instance", None), "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    return fallback


async def serve(
    config: dict[str, Any],
    *,
    stop: asyncio.Event,
    on_ready: Any,
    shutdown_timeout: float = 10.0,
) -> None:
    """Run an amqtt broker until ``stop`` is set; call ``on_ready(port)`` once it listens."""
    broker_cls = importlib.import_module("amqtt.broker").Broker
    broker = broker_cls(config)
    await broker.start()
    try:
        on_ready(_listening_port(broker, int(config["listeners"]["default"]["bind"].rsplit(":", 1)[1])))
        await stop.wait()
    finally:
        try:
            await asyncio.wait_for(broker.shutdown(), shutdown_timeout)
        except Exception as exc:  # a failed shutdown must not hide the real exit reason
            _log.warning("amqtt shutdown did not complete cleanly: %r", exc)


async def _child_async(config: dict[str, Any], conn: Connection) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_parent_message() -> None:
        # The parent sends "stop", or dies (EOF): either way we stop.
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = "stop"
        if message == "stop":
            loop.remove_reader(conn.fileno())
            stop.set()

    loop.add_reader(conn.fileno(), on_parent_message)

    def on_ready(port: int) -> None:
        conn.send(("ready", port))

    try:
        await serve(config, stop=stop, on_ready=on_ready)
    except Exception as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ and str(exc.__cause__) not in str(exc) else ""
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}{cause}"))
        return 1
    return 0


def port_in_use(bind: str) -> str | None:
    """A one-line reason when ``host:port`` (amqtt's ``bind`` form) cannot be bound, else None.

    Checked before amqtt starts, because amqtt logs a long traceback of its own for a
    port that is taken before reporting it. Same socket options as asyncio's server
    (SO_REUSEADDR), so a port in TIME_WAIT is not reported. Port 0 is always free.
    """
    host, _, port_text = bind.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def child_main(config: dict[str, Any], log_level: int, conn: Connection) -> None:
    """Entry point of the spawned broker process."""
    configure_logging(log_level)
    taken = port_in_use(config["listeners"]["default"]["bind"])
    if taken is not None:
        with contextlib.suppress(OSError):
            conn.send(("port_unavailable", taken))
        conn.close()
        sys.exit(1)
    code = asyncio.run(_child_async(config, conn))
    conn.close()
    sys.exit(code)
