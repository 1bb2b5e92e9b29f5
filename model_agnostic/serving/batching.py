"""Adaptive (dynamic) batching: merge concurrent requests into one backend call.

Framework-free and thread-based: each HTTP request runs in its own server thread, hands its
arrays to :meth:`Batcher.submit` (or blocks in :meth:`Batcher.infer`), and one worker thread
per :class:`Batcher` gathers waiting requests into batches. Only numpy and the standard
library are used.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .. import rows as batch_axis
from ..errors import ConfigError, QueueFullError, ServingError, TensorSpecError
from ..model import Model
from .batch_calls import BatchObserver, NullObserver, report_to, run_merged, wrap_error

__all__ = [
    "DEFAULTS",
    "BatchObserver",
    "Batcher",
    "NullObserver",
    "Runner",
    "batch_limit",
    "batch_options",
    "request_key",
    "run_merged",
]

Arrays = dict[str, np.ndarray]
InferFn = Callable[[Arrays], Arrays]
RequestKey = frozenset[tuple[str, np.dtype, tuple[int, ...]]]

#: ``[serving]`` defaults: adaptive batching on, up to 32 rows, 2 ms wait, 256 waiting.
DEFAULTS: dict[str, Any] = {
    "batching": True,
    "max_batch_size": 32,
    "max_queue_delay_ms": 2.0,
    "max_queue_size": 256,
}


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
    One daemon worker thread, named ``model_agnostic-batcher-{name}``, is started lazily on
    the first :meth:`submit` (never at import or construction).

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
        infer: InferFn,
        *,
        max_batch_size: int = 8,
        max_queue_delay_ms: float = 5.0,
        max_queue_size: int = 64,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        _check_settings(max_batch_size, max_queue_delay_ms, max_queue_size, name)
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ms = float(max_queue_delay_ms)
        self.max_queue_size = max_queue_size
        self.name = name
        self._observer: BatchObserver = observer if observer is not None else NullObserver()
        self._delay = self.max_queue_delay_ms / 1000.0
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._held = 0  # requests taken from the queue into a batch that has not started
        self._closed = False
        self._drain = True
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, max_batch_size={self.max_batch_size}, "
            f"max_queue_delay_ms={self.max_queue_delay_ms}, "
            f"max_queue_size={self.max_queue_size})"
        )

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
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name=f"model_agnostic-batcher-{self.name}", daemon=True
                )
                self._thread.start()
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
            thread = self._thread
        for request in dropped:
            self._fail_closed(request)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # keep serving; never leave a caller hanging
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(wrap_error(self.name, exc, len(batch)))
                if not isinstance(exc, Exception):
                    raise
                _log.exception("batcher %r: unexpected error in the worker", self.name)

    def _gather(self) -> list[_Request] | None:
        """Wait for the oldest request and collect its batch; None once closed and empty."""
        dropped: list[_Request] = []
        with self._cond:
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

    def _run(self, batch: list[_Request]) -> None:
        live = [request for request in batch if request.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.monotonic()
        for request in live:
            report_to(self._observer.queue_wait, self.name, started - request.arrival)
        outcomes = run_merged(
            self._infer,
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


def _check_settings(
    max_batch_size: int, max_queue_delay_ms: float, max_queue_size: int, name: str
) -> None:
    for label, value in (("max_batch_size", max_batch_size), ("max_queue_size", max_queue_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
    delay_ok = isinstance(max_queue_delay_ms, (int, float)) and not isinstance(
        max_queue_delay_ms, bool
    )
    if not delay_ok or not math.isfinite(max_queue_delay_ms) or max_queue_delay_ms < 0:
        raise ConfigError(
            f"max_queue_delay_ms must be a finite number >= 0 (0 = do not wait), "
            f"got {max_queue_delay_ms!r}"
        )
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, got {name!r}")


def request_key(inputs: Mapping[str, np.ndarray]) -> tuple[int, RequestKey]:
    """A request's rows and its merge key (input names, dtypes, non-batch shapes); raise
    :class:`TensorSpecError` if it is malformed."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise TensorSpecError(
            f"a request needs at least one input: expected a non-empty dict of "
            f"name -> numpy array, got {inputs!r:.80}"
        )
    for name, array in inputs.items():
        if not isinstance(name, str) or not isinstance(array, np.ndarray):
            raise TensorSpecError(
                f"input {name!r} is a {type(array).__name__}; expected a numpy array "
                "under a string name"
            )
    count = batch_axis.count(inputs)
    key = frozenset((name, array.dtype, array.shape[1:]) for name, array in inputs.items())
    return count, key
