"""What one concurrency level measured, and the numbers derived from it.

Latency percentiles are over the successful requests only (numpy's linear interpolation);
throughput is successful requests per second of the level's wall time, which runs from the
moment every client has warmed up until the last one finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PERCENTILES", "LevelStats"]

#: The latency percentiles every report gives.
PERCENTILES = (50, 90, 99)


@dataclass
class LevelStats:
    """One level of a sweep: ``concurrency`` clients for ``wall_s`` seconds.

    ``latencies_s`` holds each successful request's time; ``errors`` counts failed
    requests by kind (``HTTP 404``, ``gRPC UNAVAILABLE``, ``connection``, ``timeout``...),
    ``error_examples`` keeps the first message of each kind; ``warmup_errors`` counts
    failures among the warm-up requests, which are not measured.
    """

    concurrency: int
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    warmup_errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        """Successful requests."""
        return len(self.latencies_s)

    @property
    def failed(self) -> int:
        """Failed requests, every kind together."""
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Successful requests per second (0 when nothing succeeded)."""
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of the successful latencies in seconds; None without any."""
        if not self.latencies_s:
            return None
        return float(np.percentile(self.latencies_s, q))

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        """The level as JSON-ready values; ``samples`` adds every latency."""
        latency = {f"p{q}": self.percentile(q) for q in PERCENTILES}
        if self.latencies_s:
            latency |= {
                "mean": float(np.mean(self.latencies_s)),
                "min": min(self.latencies_s),
                "max": max(self.latencies_s),
            }
        doc: dict[str, Any] = {
            "concurrency": self.concurrency,
            "requests": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "wall_s": self.wall_s,
            "throughput_rps": self.throughput,
            "latency_s": latency,
            "errors": dict(self.errors),
            "error_examples": dict(self.error_examples),
            "warmup_errors": dict(self.warmup_errors),
        }
        if samples:
            doc["latencies_s"] = [round(x, 7) for x in self.latencies_s]
        return doc
