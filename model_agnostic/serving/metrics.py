"""Prometheus metrics: requests, latency, queue wait, batch sizes, requests in flight, and
model instances (serving, busy, calls per instance)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._deps import require

__all__ = ["Metrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """One server's metrics, in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        prom = require("prometheus_client", "Server metrics")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        reg = {"registry": self.registry, "namespace": "model_agnostic"}
        self.requests = prom.Counter(
            "requests",
            "Requests answered, by model, version, endpoint and HTTP status",
            ["model", "version", "endpoint", "status"],
            **reg,
        )
        self.latency = prom.Histogram(
            "request_duration_seconds",
            "Time to answer a request",
            ["model", "endpoint"],
            buckets=_LATENCY,
            **reg,
        )
        self.queue_wait = prom.Histogram(
            "queue_wait_seconds", "Arrival to batch start", ["model"], buckets=_LATENCY, **reg
        )
        self.batch_rows = prom.Histogram(
            "batch_size",
            "Rows (batch-axis entries) per backend call",
            ["model"],
            buckets=_ROWS,
            **reg,
        )
        self.batch_requests = prom.Histogram(
            "batch_requests",
            "Requests merged into one backend call",
            ["model"],
            buckets=_ROWS,
            **reg,
        )
        self.infer_seconds = prom.Histogram(
            "backend_call_seconds", "Time of one backend call", ["model"], buckets=_LATENCY, **reg
        )
        self.in_flight = prom.Gauge(
            "inflight_requests", "Requests being answered", ["model", "version"], **reg
        )
        version = ["model", "version"]
        self.instances = prom.Gauge("instances", "Model instances serving", version, **reg)
        self.busy_instances = prom.Gauge(
            "busy_instances", "Instances running a backend call now", version, **reg
        )
        self.instance_calls = prom.Counter(
            "instance_calls", "Backend calls, by instance", [*version, "instance"], **reg
        )

    def request(self, model: str, version: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(model, version, endpoint, str(status)).inc()
        self.latency.labels(model, endpoint).observe(seconds)

    @contextmanager
    def inflight(self, model: str, version: str) -> Iterator[None]:
        gauge = self.in_flight.labels(model, version)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def observer(self, model: str) -> _BatchObserver:
        """What a :class:`~model_agnostic.serving.batching.Batcher` reports to."""
        return _BatchObserver(self, model)

    def instance_observer(self, model: str, version: str) -> _InstanceObserver:
        """What a version's instances report to (:class:`~.instances.InstanceObserver`)."""
        return _InstanceObserver(self, model, version)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class _BatchObserver:
    def __init__(self, metrics: Metrics, model: str) -> None:
        self._rows: Any = metrics.batch_rows.labels(model)
        self._requests: Any = metrics.batch_requests.labels(model)
        self._seconds: Any = metrics.infer_seconds.labels(model)
        self._wait: Any = metrics.queue_wait.labels(model)

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        self._rows.observe(rows)
        self._requests.observe(requests)
        self._seconds.observe(seconds)

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)


class _InstanceObserver:
    """Counts by increments, so two batchers of one version (during a hot swap of a changed
    version folder) add up instead of overwriting each other."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._serving: Any = metrics.instances.labels(model, version)
        self._busy: Any = metrics.busy_instances.labels(model, version)
        self._calls = metrics.instance_calls
        self._labels = (model, version)

    def serving(self, count: int) -> None:
        self._serving.inc(count)

    def call(self, index: int, running: bool) -> None:
        if running:
            self._busy.inc()
            self._calls.labels(*self._labels, str(index)).inc()
        else:
            self._busy.dec()
