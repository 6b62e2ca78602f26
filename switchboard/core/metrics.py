"""What a component tells /metrics: each one names and documents its own numbers, and the
gateway's collector turns whatever it is given into metric families at scrape time (no
component's name lives anywhere else)."""
from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple


class Metric(NamedTuple):
    name: str       # without the process-wide prefix (switchboard_)
    kind: str       # "counter", "gauge" or "histogram" (value: a Histogram)
    help: str
    value: float | Histogram
    labels: tuple[tuple[str, str], ...] = ()  # metrics of one name differ by their labels


def counter(name: str, help: str, value: float, **labels: str) -> Metric:
    return Metric(name, "counter", help, value, tuple(labels.items()))


def gauge(name: str, help: str, value: float, **labels: str) -> Metric:
    return Metric(name, "gauge", help, value, tuple(labels.items()))


def histogram(name: str, help: str, value: Histogram) -> Metric:
    return Metric(name, "histogram", help, value)


class Histogram:
    """Cumulative-on-export bucket counts; observe() is a bisect and two additions (no lock:
    observed and exported on one event loop)."""
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), +Inf last."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            buckets.append((bound, running))
        return buckets
