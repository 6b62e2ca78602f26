"""Latency histograms (HDR): recorded in the workers, shipped encoded, merged in the main process.

HDR histograms keep every percentile exact to 3 significant digits at a fixed, small size, and
merge losslessly, so the p99.9 of a run is the p99.9 of all its messages, not an average of the
workers' percentiles. Values are microseconds.
"""
from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

#: 1 us .. 10 min: anything slower than that is a hung run, not a latency.
LOWEST_US = 1
HIGHEST_US = 600_000_000
DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record_ns(hist: HdrHistogram, nanoseconds: int) -> None:
    hist.record_value(min(max(nanoseconds // 1000, LOWEST_US), HIGHEST_US))


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def merge(encoded: Iterable[str]) -> HdrHistogram:
    total = new()
    for item in encoded:
        if item:
            total.add(HdrHistogram.decode(item.encode("ascii")))
    return total


def summary(hist: HdrHistogram) -> dict:
    """Count, mean, max and the standard percentiles, in milliseconds (what people read), plus
    the encoded histogram so that any other percentile can be recomputed from the JSON."""
    count = hist.get_total_count()
    out = {"count": count}
    if count:
        out["mean_ms"] = round(hist.get_mean_value() / 1000, 3)
        out["max_ms"] = round(hist.get_max_value() / 1000, 3)
        for p in PERCENTILES:
            out[f"p{_label(p)}_ms"] = round(hist.get_value_at_percentile(p) / 1000, 3)
    out["hdr"] = encode(hist)
    return out


def cdf(hist: HdrHistogram) -> tuple[list[float], list[float]]:
    """(latency ms, fraction at or below it) at every recorded value, for CDF plots."""
    xs, ys = [], []
    total = hist.get_total_count()
    seen = 0
    for item in hist.get_recorded_iterator():
        seen += item.count_at_value_iterated_to
        xs.append(item.value_iterated_to / 1000)
        ys.append(seen / total)
    return xs, ys


def _label(p: float) -> str:
    return str(int(p)) if p == int(p) else str(p)
