"""Closed-loop load: ``concurrency`` threads, each with a client (and connection) of its own,
each sending its next request as soon as the previous one is answered.

Every client first sends its warm-up requests (not measured); then all start together and
run until the level's requests are shared out and done, or until its duration has passed
(a request started before the end is waited for). No failure stops a level: each is
counted by its kind (:class:`~.clients.RequestFailed`; anything else a client raises is
counted as ``client <ExceptionName>``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .clients import Client, RequestFailed
from .stats import LevelStats

__all__ = ["Plan", "run_level", "sweep"]

Clock = Callable[[], float]
#: (seconds taken, error kind or None, error message)
_Record = tuple[float, "str | None", str]


@dataclass(frozen=True)
class Plan:
    """A sweep: the ``concurrency`` levels, each running ``requests`` requests in all or
    for ``duration_s`` seconds (not both; neither: 100 requests), after ``warmup``
    requests per client."""

    concurrency: Sequence[int] = (1,)
    requests: int | None = None
    duration_s: float | None = None
    warmup: int = 1

    def __post_init__(self) -> None:
        if not self.concurrency or any(
            not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in self.concurrency
        ):
            raise ConfigError(f"concurrency levels must be integers >= 1, got {self.concurrency}")
        if self.requests is not None and self.duration_s is not None:
            raise ConfigError("give a number of requests or a duration per level, not both")
        if self.requests is None and self.duration_s is None:
            object.__setattr__(self, "requests", 100)
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"requests per level must be >= 1, got {self.requests}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"the duration per level must be > 0 s, got {self.duration_s}")
        if self.warmup < 0:
            raise ConfigError(f"warm-up requests must be >= 0, got {self.warmup}")


def sweep(
    make_client: Callable[[int], Client],
    plan: Plan,
    progress: Callable[[LevelStats], None] | None = None,
    clock: Clock = time.perf_counter,
) -> list[LevelStats]:
    """Run every level of ``plan`` in turn, new clients for each; ``progress`` sees each result."""
    levels = []
    for concurrency in plan.concurrency:
        level = run_level(
            make_client,
            concurrency,
            requests=plan.requests,
            duration_s=plan.duration_s,
            warmup=plan.warmup,
            clock=clock,
        )
        levels.append(level)
        if progress is not None:
            progress(level)
    return levels


def run_level(
    make_client: Callable[[int], Client],
    concurrency: int,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> LevelStats:
    """One level: ``make_client(i)`` for each of ``concurrency`` threads, then the load."""
    checked = Plan((concurrency,), requests, duration_s, warmup)
    requests, duration_s = checked.requests, checked.duration_s  # neither: 100 requests
    clients: list[Client] = []
    try:
        for index in range(concurrency):
            clients.append(make_client(index))
    except BaseException:
        for client in clients:
            client.close()
        raise
    shares = [0] * concurrency
    if requests is not None:
        shares = [
            requests // concurrency + (i < requests % concurrency) for i in range(concurrency)
        ]
    start: list[float] = []
    ready = threading.Barrier(concurrency + 1, action=lambda: start.append(clock()))
    warm: list[list[_Record]] = [[] for _ in clients]
    measured: list[list[_Record]] = [[] for _ in clients]

    def worker(index: int) -> None:
        client = clients[index]
        try:
            warm[index] = [_call(client, clock) for _ in range(warmup)]
            ready.wait()
            if duration_s is None:
                measured[index] = [_call(client, clock) for _ in range(shares[index])]
            else:
                deadline = start[0] + duration_s
                while clock() < deadline:
                    measured[index].append(_call(client, clock))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join()
    level = LevelStats(concurrency, clock() - start[0])
    for took, kind, message in (r for records in measured for r in records):
        if kind is None:
            level.latencies_s.append(took)
        else:
            level.errors[kind] = level.errors.get(kind, 0) + 1
            level.error_examples.setdefault(kind, message)
    for _, kind, message in (r for records in warm for r in records):
        if kind is not None:
            level.warmup_errors[kind] = level.warmup_errors.get(kind, 0) + 1
            level.error_examples.setdefault(kind, message)
    return level


def _call(client: Client, clock: Clock) -> _Record:
    """One request, timed; never raises."""
    began = clock()
    try:
        client.send()
    except RequestFailed as exc:
        return clock() - began, exc.kind, str(exc)
    except Exception as exc:  # a bug or an unforeseen failure: counted, never fatal
        return clock() - began, f"client {type(exc).__name__}", str(exc)
    return clock() - began, None, ""
