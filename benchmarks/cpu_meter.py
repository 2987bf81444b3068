"""CPU used per interval by the benchmark's own processes (target, broker, load generator) and by
everything else on the machine (these machines are shared)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psutil

__all__ = ["CpuMeter"]


class CpuMeter:
    """CPU seconds of named processes and of everything else on the machine, per interval."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _sample(self) -> tuple[float, dict[str, float], float]:
        own: dict[str, float] = {}
        for name, proc in self._procs.items():
            try:
                times = proc.cpu_times()
                own[name] = times.user + times.system
            except psutil.Error:
                own[name] = 0.0
        total = psutil.cpu_times()
        busy = total.user + total.system + total.nice + getattr(total, "irq", 0.0) + getattr(total, "softirq", 0.0)
        return time.perf_counter(), own, busy

    def others_now(self, interval: float = 0.5) -> float:
        """Cores used by processes other than ours over the next `interval` seconds."""
        usage: dict[str, Any] = {}
        with self.measure(usage):
            time.sleep(interval)
        return float(usage["cpu_cores"]["others"])

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        t0, own0, busy0 = self._sample()
        yield
        t1, own1, busy1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        used = {name: (own1[name] - own0[name]) / wall for name in own0}
        others = max(0.0, (busy1 - busy0) / wall - sum(used.values()))
        into["cpu_cores"] = {**{k: round(v, 3) for k, v in used.items()}, "others": round(others, 3)}
