"""Fixtures of the security suite.

- ``secured``: a server config, a passwords file and the files ``python -m provisioning.broker_auth``
  generates from them, and a Mosquitto started with the mosquitto.conf lines it generates
  (``mosquitto-auth.conf``: ``allow_anonymous false``, the dynamic-security plugin with the
  generated ``mosquitto-dynsec.json``, no password_file/acl_file); see
  :class:`~tests.support.brokers.Secured`.
- ``repository`` comes from tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import WORKER_USER, Secured, secured_mosquitto

__all__ = ["TENANTS", "WORKER_USER", "Secured"]

TENANTS: dict[str, Any] = {
    "acme": {"models": ["lstm", "ann"]},
    "beta": {"models": ["ann"]},
    "course": {"models": ["lstm"], "format": "tutorial", "in_queue": "inqueue/lstm", "out_queue": "outqueue/lstm"},
}


@pytest.fixture
def secured(tmp_path: Path, repository: Path) -> Iterator[Secured]:
    with secured_mosquitto(tmp_path, repository, tenants=TENANTS) as setup:
        yield setup
