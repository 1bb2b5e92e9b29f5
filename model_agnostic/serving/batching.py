"""Adaptive (dynamic) batching: merge concurrent requests into one backend call.

Framework-free and thread-based: each HTTP request runs in its own server thread, hands its
arrays to :meth:`Batcher.submit` (or blocks in :meth:`Batcher.infer`), and one worker thread
per model instance (:mod:`.instances`) gathers waiting requests into batches and runs them.
Only numpy and the standard library are used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, QueueFullError, ServingError
from ..model import Model
from .batch_calls import (
    BatchObserver,
    NullObserver,
    RequestKey,
    check_settings,
    report_to,
    request_key,
    run_merged,
    wrap_error,
)

__all__ = [
    "DEFAULTS",
    "BatchObserver",
    "Batcher",
    "Instance",
    "NullObserver",
    "Runner",
    "batch_limit",
    "batch_options",
    "request_key",
    "run_merged",
]

Arrays = dict[str, np.ndarray]
InferFn = Callable[[Arrays], Arrays]

#: ``[serving]`` defaults: adaptive batching on, up to 32 rows, 2 ms wait, 256 waiting.
DEFAULTS: dict[str, Any] = {
    "batching": True,
    "max_batch_size": 32,
    "max_queue_delay_ms": 2.0,
    "max_queue_size": 256,
}


class Instance(Protocol):
    """One copy of the model that one batcher worker runs batches on (:mod:`.instances`)."""

    def start(self) -> None:
        """On the worker's own thread, before its first batch (e.g. pin it to CPUs)."""

    def infer(self, inputs: Arrays) -> Arrays:
        """Run one (merged) batch."""

    def close(self) -> None:
        """Once the batcher has closed and its workers are done."""


class _Plain:
    """A bare infer function as the batcher's one instance."""

    def __init__(self, infer: InferFn) -> None:
        self.infer = infer

    def start(self) -> None:
        """Nothing to set up."""

    def close(self) -> None:
        """Nothing to release."""


class Runner(Protocol):
    """What the data plane runs a served version's requests through (our
    :class:`Batcher`, or the Ray adapter's ``@serve.batch`` runner)."""

    def infer(self, inputs: Mapping[str, np.ndarray], timeout: float | None = None) -> Arrays:
        """Run one request's arrays (possibly merged with others); its own output rows."""

    def close(self) -> None:
        """Stop taking requests (the repository calls it when the version is unloaded)."""


def batch_options(served_options: Mapping[str, Any], model: Model, name: str) -> dict[str, Any]:
    """A version's ``[serving]`` options over :data:`DEFAULTS`, checked; ``max_batch_size``
    capped by the graph's fixed batch axis (:func:`batch_limit`)."""
    options = {**DEFAULTS, **served_options}
    limit = batch_limit(model)
    options["max_batch_size"] = min(
        int(options["max_batch_size"]), limit or int(options["max_batch_size"])
    )
    if (
        options["max_batch_size"] < 1
        or options["max_queue_size"] < 1
        or options["max_queue_delay_ms"] < 0
    ):
        raise ConfigError(
            f"model {name!r}: [serving] max_batch_size and max_queue_size must "
            "be >= 1 and max_queue_delay_ms >= 0"
        )
    return options


def batch_limit(model: Model) -> int | None:
    """The graph's fixed batch size, if its batch axis is not dynamic."""
    fixed = [
        s.shape[0]
        for s in model.input_specs() or []
        if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0
    ]
    return min(fixed) if fixed else None


_log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    inputs: Arrays
    rows: int
    key: RequestKey
    arrival: float
    future: Future[Arrays] = field(default_factory=Future)


class Batcher:
    """Merge concurrent requests for one model into batched ``infer`` calls.

    Every input array has a leading batch axis; a request's *rows* is that axis length, and
    all inputs of one request must agree on it (else :class:`TensorSpecError`, HTTP 400).
    ``infer`` is one function, or several :class:`Instance` objects (copies of the model,
    :mod:`.instances`) that run batches in parallel. One daemon worker thread per instance,
    named ``model_agnostic-batcher-{name}`` (``-{i}`` added for several), is started lazily
    on the first :meth:`submit` (never at import or construction). One worker at a time
    gathers a batch, and only while its instance is free; then it runs the batch while the
    next free worker gathers the next one.

    Gathering: the worker takes the oldest waiting request and adds later *compatible*
    requests (identical input names, dtypes and non-batch shapes) in arrival order. The batch
    closes as soon as the next compatible request would push it past ``max_batch_size`` rows,
    or when ``max_queue_delay_ms`` has passed **since the oldest request arrived** (not since
    the worker looked), whichever comes first. ``max_queue_delay_ms=0`` takes what is already
    queued without waiting. An incompatible request stays at the head of the queue and starts
    the next batch, so it is never starved. No call ever gets more than ``max_batch_size``
    rows, except that a single request with more rows than that runs alone, never merged (the
    caller must check requests against the model's real batch limit).

    One ``infer`` call runs on the inputs concatenated along axis 0; a lone request's arrays
    are passed through without copying. Every output must keep the batch axis (leading
    dimension equal to the call's total rows), else every request of that call fails with
    :class:`InferenceError`; outputs are split back by rows, so each caller gets its own rows.
    If a merged call raises, each of its requests is re-run alone, so only the failing ones
    fail: a :class:`ModelAgnosticError` passes through unchanged, anything else is wrapped in
    :class:`InferenceError` (the original is its ``__cause__``). The worker survives any
    exception. A request whose future is cancelled before its batch starts is skipped.

    At most ``max_queue_size`` requests wait (submitted, batch not started); beyond that
    :meth:`submit` raises :class:`QueueFullError` (HTTP 503) at once and queues nothing.
    """

    def __init__(
        self,
        infer: InferFn | Sequence[Instance],
        *,
        max_batch_size: int = 8,
        max_queue_delay_ms: float = 5.0,
        max_queue_size: int = 64,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        check_settings(max_batch_size, max_queue_delay_ms, max_queue_size, name)
        self._instances: list[Instance] = [_Plain(infer)] if callable(infer) else list(infer)
        if not self._instances:
            raise ConfigError(f"batcher {name!r} needs an infer function or instances, got none")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = float(max_queue_delay_ms)
        self.max_queue_size = max_queue_size
        self.name = name
        self._observer: BatchObserver = observer if observer is not None else NullObserver()
        self._delay = self.max_queue_delay_ms / 1000.0
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # a request arrived, or closing
        self._turn = threading.Condition(lock)  # the gathering worker is done gathering
        self._gathering = False  # a worker is forming a batch (one at a time)
        self._queue: deque[_Request] = deque()
        self._held = 0  # requests taken from the queue into a batch that has not started
        self._closed = False
        self._drain = True
        self._threads: list[threading.Thread | None] = [None] * len(self._instances)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, max_batch_size={self.max_batch_size}, "
            f"max_queue_delay_ms={self.max_queue_delay_ms}, "
            f"max_queue_size={self.max_queue_size}, instances={self.instances})"
        )

    @property
    def instances(self) -> int:
        """Copies of the model running batches in parallel (one worker thread each)."""
        return len(self._instances)

    @property
    def queued(self) -> int:
        """Number of *requests* (not rows) submitted whose batch has not started yet."""
        with self._cond:
            return len(self._queue) + self._held

    def submit(self, inputs: Mapping[str, np.ndarray]) -> Future[Arrays]:
        """Queue one request; the future resolves to its own rows of every output.

        Raises :class:`TensorSpecError` (400) for malformed inputs, :class:`QueueFullError`
        (503) when ``max_queue_size`` requests already wait, and :class:`ServingError` (503)
        after :meth:`close`.
        """
        rows, key = request_key(inputs)
        request = _Request(dict(inputs), rows, key, time.monotonic())
        with self._cond:
            if self._closed:
                raise self._closed_error()
            waiting = len(self._queue) + self._held
            if waiting >= self.max_queue_size:
                raise QueueFullError(
                    f"model {self.name!r} is overloaded: its queue is full "
                    f"({waiting} of max_queue_size={self.max_queue_size} requests waiting); "
                    "retry later"
                )
            self._queue.append(request)
            self._start_workers()
            self._cond.notify()
        return request.future

    def infer(self, inputs: Mapping[str, np.ndarray], timeout: float | None = None) -> Arrays:
        """Submit ``inputs`` and block until their outputs are ready.

        After ``timeout`` seconds the request is cancelled if its batch has not started yet,
        and :class:`ServingError` (503) is raised.
        """
        future = self.submit(inputs)
        try:
            return future.result(timeout)
        except FutureTimeoutError:
            future.cancel()
            raise ServingError(
                f"model {self.name!r} did not answer within {timeout} s "
                f"({self.queued} requests waiting); retry later or raise the timeout",
                status=503,
            ) from None

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting requests and wait (up to ``timeout`` s) for the worker to finish.

        With ``drain=True`` every queued request still runs; with ``drain=False`` requests
        whose batch has not started fail with :class:`ServingError` (503). Idempotent.
        """
        with self._cond:
            self._closed = True
            self._drain = self._drain and drain
            dropped = [] if drain else list(self._queue)
            if not drain:
                self._queue.clear()
            self._cond.notify_all()
            self._turn.notify_all()
            threads = [thread for thread in self._threads if thread is not None]
        for request in dropped:
            self._fail_closed(request)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for instance in self._instances:
            try:
                instance.close()
            except Exception:
                _log.exception("batcher %r: closing instance %r failed", self.name, instance)

    # -- worker ---------------------------------------------------------------------------

    def _start_workers(self) -> None:
        """Under the lock: start each instance's worker thread not running yet."""
        for index, thread in enumerate(self._threads):
            if thread is None or not thread.is_alive():
                suffix = f"-{index}" if len(self._threads) > 1 else ""
                thread = threading.Thread(
                    target=self._work,
                    args=(self._instances[index],),
                    name=f"model_agnostic-batcher-{self.name}{suffix}",
                    daemon=True,
                )
                self._threads[index] = thread
                thread.start()

    def _work(self, instance: Instance) -> None:
        try:
            instance.start()
        except Exception:  # e.g. pinning refused: run unpinned rather than not at all
            _log.exception("batcher %r: starting instance %r failed", self.name, instance)
        while True:
            batch = self._gather()
            if batch is None:
                return
            try:
                self._run(batch, instance.infer)
            except BaseException as exc:  # keep serving; never leave a caller hanging
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(wrap_error(self.name, exc, len(batch)))
                if not isinstance(exc, Exception):
                    raise
                _log.exception("batcher %r: unexpected error in the worker", self.name)

    def _gather(self) -> list[_Request] | None:
        """Wait for this worker's turn, then for the oldest request, and collect its batch;
        None once closed and empty."""
        dropped: list[_Request] = []
        with self._cond:
            while self._gathering:
                self._turn.wait()
            self._gathering = True
            try:
                first = self._pop_oldest()
                if first is None:
                    return None
                batch, rows = [first], first.rows
                self._held = 1
                deadline = first.arrival + self._delay
                while rows < self.max_batch_size:
                    rows, full = self._take_compatible(batch, rows)
                    remaining = deadline - time.monotonic()
                    if full or self._closed or remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._held = 0
            finally:
                self._gathering = False
                self._turn.notify()
            if self._closed and not self._drain:
                dropped, batch = batch, []
        for request in dropped:
            self._fail_closed(request)
        return batch

    def _pop_oldest(self) -> _Request | None:
        """Under the lock: block for the oldest live request; None once closed and empty."""
        while True:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            request = self._queue.popleft()
            if not request.future.cancelled():
                return request

    def _take_compatible(self, batch: list[_Request], rows: int) -> tuple[int, bool]:
        """Under the lock: move queued requests that fit into ``batch``; report if full."""
        if not self._queue:
            return rows, False
        key, full = batch[0].key, False
        kept: deque[_Request] = deque()
        for request in self._queue:
            if request.future.cancelled():
                continue
            if full or request.key != key:
                kept.append(request)
            elif rows + request.rows > self.max_batch_size:
                full = True
                kept.append(request)
            else:
                batch.append(request)
                rows += request.rows
                full = rows >= self.max_batch_size
        self._queue = kept
        self._held = len(batch)
        return rows, full

    def _run(self, batch: list[_Request], infer: InferFn) -> None:
        live = [request for request in batch if request.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.monotonic()
        for request in live:
            report_to(self._observer.queue_wait, self.name, started - request.arrival)
        outcomes = run_merged(
            infer,
            self.name,
            [(request.inputs, request.rows) for request in live],
            self._observer,
        )
        for request, outcome in zip(live, outcomes):
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

    def _closed_error(self) -> ServingError:
        return ServingError(
            f"model {self.name!r} is unloading/closed and accepts no new requests; "
            "retry once it is loaded again",
            status=503,
        )

    def _fail_closed(self, request: _Request) -> None:
        if request.future.set_running_or_notify_cancel():
            request.future.set_exception(self._closed_error())
