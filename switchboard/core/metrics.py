"""What a component tells /metrics: each one names and documents its own numbers, and the
gateway's collector turns whatever it is given into metric families at scrape time (no
component's name lives anywhere else)."""
from __future__ import annotations

from typing import NamedTuple


class Metric(NamedTuple):
    name: str       # without the process-wide prefix (switchboard_)
    kind: str       # "counter" or "gauge"
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()  # (name, value) pairs; one family per metric name


def counter(name: str, help: str, value: float,
            labels: tuple[tuple[str, str], ...] = ()) -> Metric:
    return Metric(name, "counter", help, value, labels)


def gauge(name: str, help: str, value: float,
          labels: tuple[tuple[str, str], ...] = ()) -> Metric:
    return Metric(name, "gauge", help, value, labels)
