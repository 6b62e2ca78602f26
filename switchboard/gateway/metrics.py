"""Prometheus metrics of one gateway, collected at scrape time.

The hot path only bumps plain integers it already keeps (Gateway.stats, the writer's counters,
the hub's connection count); a custom Collector turns them into metric families when
Prometheus scrapes. The few distributions (writer batch size and commit time, send -> durable
latency, event-loop lag) are kept in `Histogram`, a bucket array bumped from the event loop
without locks, for the same reason: prometheus_client's own Histogram takes a lock per
observation, which is wasted in a single-threaded process that observes per message.

Scrapes are served from the event loop too (status.py), so the collector reads the counters on
the thread that writes them.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from switchboard.buildinfo import build_info
from switchboard.core.metrics import Histogram as Buckets
from switchboard.core.metrics import Metric
from switchboard.core.model import Batch

if TYPE_CHECKING:
    from .server import Gateway

LAG_INTERVAL = 0.5
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Histogram(Buckets):
    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        return _histogram_family(self, name, documentation)


def _histogram_family(histogram: Buckets, name: str, documentation: str) -> HistogramMetricFamily:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), count)
               for bound, count in histogram.cumulative()]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


class LoopLag:
    """Event-loop lag: how late a callback scheduled every LAG_INTERVAL actually runs. A loop
    blocked by a slow callback (a disk call, a huge fan-out) shows here first."""

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.interval = interval
        self.histogram = Histogram(SECONDS_BUCKETS)
        self.last = 0.0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arm(time.monotonic())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, now: float) -> None:
        self._due = now + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self.last = max(0.0, now - self._due)
        self.histogram.observe(self.last)
        self._arm(now)


class GatewayMetrics:
    """The gateway's registry: its collector, the process collector (fds, RSS, CPU) and the
    histograms fed by the writer's on_flush hook and the loop-lag monitor."""

    def __init__(self) -> None:
        self.batch_rows = Histogram(ROWS_BUCKETS)
        self.flush_seconds = Histogram(SECONDS_BUCKETS)
        self.send_durable_seconds = Histogram(SECONDS_BUCKETS)
        self.loop_lag = LoopLag()
        self.sources: list[Callable[[], list[Metric]]] = []  # components beside the router
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)

    def collect(self, gateway: Gateway) -> None:
        """Export the gateway's own counters too (the gateway calls this once it exists)."""
        self.registry.register(_GatewayCollector(gateway, self))

    def observe_flush(self, batch: Batch, seconds: float) -> None:
        """Writer hook: one committed batch. A message's send -> durable time runs from when the
        send was accepted (its created_at, ms) to now."""
        self.batch_rows.observe(len(batch))
        self.flush_seconds.observe(seconds)
        now_ms = time.time_ns() / 1_000_000
        durable = self.send_durable_seconds
        for message in batch.messages:
            durable.observe(max(0.0, now_ms - message.created_at_ms) / 1000)


class _GatewayCollector(Collector):
    def __init__(self, gateway: Gateway, metrics: GatewayMetrics) -> None:
        self._gw = gateway
        self._metrics = metrics

    def collect(self) -> Iterator:
        gw, stats, m = self._gw, self._gw.stats, self._metrics
        sessions = gw.session_stats
        writer = gw.services.messages.writer
        build = build_info()
        info = GaugeMetricFamily("switchboard_build_info", "The running build; always 1",
                                 labels=["version", "commit", "python"])
        info.add_metric([build["version"], build["commit"], build["python"]], 1)
        yield info

        # Admitting (a new device's first store round trip) is the rest of the live ones.
        live = stats.connects - stats.disconnects
        states = {"await_auth": gw.pending_auth, "open": gw.hub.connections,
                  "closing": stats.closing}
        states["admitting"] = max(0, live - sum(states.values()))
        connections = GaugeMetricFamily("switchboard_connections",
                                        "WebSocket connections by protocol state", labels=["state"])
        for state, count in states.items():
            connections.add_metric([state], count)
        yield connections
        yield _counter("switchboard_connections_accepted", "WebSocket connections accepted",
                       stats.connects)
        yield _counter("switchboard_upgrades_refused",
                       "HTTP upgrades refused (bad token, too many unauthenticated)",
                       stats.refused_upgrades)
        yield _counter("switchboard_slow_consumers",
                       "connections closed 4008 for not reading", sessions.slow_consumers)

        frames = CounterMetricFamily("switchboard_frames", "protocol frames",
                                     labels=["direction"])
        frames.add_metric(["in"], sessions.frames_in)
        frames.add_metric(["out"], sessions.frames_out)
        yield frames
        payload = CounterMetricFamily("switchboard_frame_bytes", "protocol frame bytes (out: with WebSocket headers)",
                                      labels=["direction"])
        payload.add_metric(["in"], sessions.bytes_in)
        payload.add_metric(["out"], sessions.bytes_out)
        yield payload

        yield _counter("switchboard_sends", "sends acknowledged (durable)", sessions.sends)
        yield _counter("switchboard_deliveries", "messages sent to devices (first sends and "
                       "retransmits)", sessions.deliveries)
        yield _counter("switchboard_acks", "Ack frames received from devices", sessions.acks)
        yield _counter("switchboard_retransmits", "messages rewound for retransmission",
                       sessions.retransmits)
        yield _counter("switchboard_sync_pages", "pages of messages read from the store for "
                       "sync, backlog and retransmit", sessions.sync_pages)

        yield _counter("switchboard_writer_batches", "store commits by the coalescing writer",
                       writer.batches)
        yield _counter("switchboard_writer_rows", "messages committed", writer.rows)
        yield GaugeMetricFamily("switchboard_writer_pending",
                                "messages accepted and not yet durable", value=writer.pending)
        yield _counter("switchboard_store_errors", "store commits that failed, wholly or for "
                       "some of their chats (outcome unknown)", writer.failures)
        yield _counter("switchboard_store_failed_chats", "chats whose messages a commit failed "
                       "(their senders retry)", writer.failed_chats)
        store_stats = getattr(gw.services.store, "stats", None)
        if store_stats is not None:  # a store that counts its requests (the ScyllaDB one)
            requests = CounterMetricFamily("switchboard_store_requests", "requests sent to the "
                                           "database, by kind (conditional: a Paxos round)",
                                           labels=["kind"])
            for kind in ("reads", "writes", "conditional"):
                requests.add_metric([kind], getattr(store_stats, kind))
            yield requests
            yield _counter("switchboard_store_conditional_lost", "conditional batches lost to "
                           "another writer of the chat (retried)", store_stats.conditional_lost)
        yield m.batch_rows.family("switchboard_writer_batch_rows",
                                  "rows (messages, cursors, receipts) per committed batch")
        yield m.flush_seconds.family("switchboard_writer_flush_seconds",
                                     "time of one store commit")
        yield m.send_durable_seconds.family("switchboard_send_durable_seconds",
                                            "from a send accepted to its row durable")
        yield m.loop_lag.histogram.family("switchboard_event_loop_lag_seconds",
                                          "how late a periodic loop callback ran")
        yield GaugeMetricFamily("switchboard_draining", "1 while the gateway drains",
                                value=int(gw.draining))
        if gw.tls is not None:
            yield _counter("switchboard_tls_reloads", "certificate reloads that took effect",
                           gw.tls.reloads)
        components = [gw.router.metrics(), *(source() for source in m.sources)]
        yield from _families(metric for metrics in components for metric in metrics)


def _families(metrics: Iterable[Metric]) -> Iterator:
    """Each component names and documents its own numbers; metrics of one name that differ by
    their labels become one family."""
    families: dict[str, Any] = {}
    for metric in metrics:
        name = f"switchboard_{metric.name}"
        if metric.kind == "histogram":
            yield _histogram_family(metric.value, name, metric.help)
            continue
        family = families.get(name)
        if family is None:
            kind = GaugeMetricFamily if metric.kind == "gauge" else CounterMetricFamily
            family = families[name] = kind(name, metric.help,
                                           labels=[key for key, _ in metric.labels])
        family.add_metric([value for _, value in metric.labels], metric.value)
    yield from families.values()


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
