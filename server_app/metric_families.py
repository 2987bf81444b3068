"""Counter and histogram families written on every answer: prometheus_client's exposition
(a custom collector: same names, labels, HELP/TYPE and buckets as its own families), without
its per-observation lock and bucket walk. One writer, the serving thread."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class CounterChild:
    """One labelled counter value, written by the serving thread alone (no lock: one writer; a
    scrape reads a float, atomically under the GIL)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One labelled histogram: a count per bucket (not cumulative) and the sum. One writer."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self._bounds, amount)] += 1  # le is inclusive: the first bound >= amount
        self.sum += amount


class PerAnswer:
    """A counter or histogram family updated on every answer, exported exactly like
    prometheus_client's (same names, labels, HELP/TYPE, buckets) by a custom collector.

    Why: prometheus_client's observe() takes a lock per value and walks the buckets in Python
    (three histograms and two counters per answer were ~4 % of the single-window serving loop);
    here an observation is a bisect and two additions. Written by the serving thread only; a
    scrape copies the counts (a consistent copy under the GIL) and may miss an observation in
    flight, as prometheus_client's may.
    """

    def __init__(
        self, kind: str, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry,
        buckets: Sequence[float] = (),
    ) -> None:
        self._kind = kind
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: labels {self._labelnames}, got {values}")
            child = HistogramChild(self._bounds) if self._kind == "histogram" else CounterChild()
            self._children = {**self._children, values: child}  # copy on write: a scrape iterates a snapshot
        return child

    def _family(self) -> Metric:
        if self._kind == "histogram":
            return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, child in self._children.items():
            if isinstance(child, HistogramChild):
                counts, total_sum = list(child.counts), child.sum
                cumulative, running = [], 0
                for le, count in zip(self._les, counts, strict=True):
                    running += count
                    cumulative.append((le, float(running)))
                assert isinstance(family, HistogramMetricFamily)
                family.add_metric(list(values), cumulative, total_sum)
            else:
                assert isinstance(family, CounterMetricFamily)
                family.add_metric(list(values), child.value)
        return [family]
