"""One backend call for several requests: which requests may share one (:func:`request_key`),
merge along the batch axis, run, split back, and isolate a failure to the request that
caused it; and the checks of the batcher's settings. Used by :class:`~.batching.Batcher`
and by the Ray Serve adapter's ``@serve.batch`` runner; reports to a :class:`BatchObserver`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from .. import rows as batch_axis
from ..errors import ConfigError, InferenceError, ModelAgnosticError, TensorSpecError

__all__ = [
    "BatchObserver",
    "NullObserver",
    "RequestKey",
    "check_settings",
    "report_to",
    "request_key",
    "run_merged",
    "wrap_error",
]

Arrays = dict[str, np.ndarray]
RequestKey = frozenset[tuple[str, np.dtype, tuple[int, ...]]]

_log = logging.getLogger(__name__)


class BatchObserver(Protocol):
    """What a :class:`Batcher` reports to (metrics). Implementations must be thread-safe."""

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        """One backend call: ``rows`` on the batch axis, ``requests`` merged, ``seconds`` taken."""

    def queue_wait(self, seconds: float) -> None:
        """One request waited ``seconds`` from its arrival until its batch started."""


class NullObserver:
    """A :class:`BatchObserver` that records nothing (the default)."""

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        """Ignore a backend call."""

    def queue_wait(self, seconds: float) -> None:
        """Ignore a queue wait."""


def run_merged(
    infer: Callable[[Arrays], Arrays],
    name: str,
    batch: list[tuple[Arrays, int]],
    observer: BatchObserver,
) -> list[Arrays | BaseException]:
    """Run several requests' ``(inputs, rows)`` as one backend call (concatenated along axis
    0) and split the outputs back by rows; one outcome per request, in order. If the merged
    call fails, each request runs alone so only the culprit fails."""
    if len(batch) == 1:
        return [_run_alone(infer, name, *batch[0], observer)]
    sizes = [rows for _, rows in batch]
    merged = batch_axis.merge([inputs for inputs, _ in batch], list(batch[0][0]))
    try:
        outputs = _timed_call(infer, name, merged, sizes, observer)
    except Exception:
        return [_run_alone(infer, name, inputs, rows, observer) for inputs, rows in batch]
    try:
        return list(_split(name, outputs, sizes))
    except InferenceError as exc:  # each caller gets its own exception object
        return [InferenceError(str(exc)) for _ in batch]


def _run_alone(
    infer: Callable[[Arrays], Arrays], name: str, inputs: Arrays, rows: int, observer: BatchObserver
) -> Arrays | BaseException:
    try:
        return _split(name, _timed_call(infer, name, inputs, [rows], observer), [rows])[0]
    except Exception as exc:
        return wrap_error(name, exc, 1)


def wrap_error(name: str, exc: BaseException, requests: int) -> BaseException:
    """``exc`` for the callers of a failed call: our own errors as they are, else an
    :class:`InferenceError` naming the model (the original is its ``__cause__``)."""
    if isinstance(exc, ModelAgnosticError):
        return exc
    error = InferenceError(
        f"model {name!r} failed while running a batch of {requests} request(s): "
        f"{type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def _timed_call(
    infer: Callable[[Arrays], Arrays],
    name: str,
    inputs: Arrays,
    sizes: list[int],
    observer: BatchObserver,
) -> Arrays:
    """One backend call, timed and reported to the observer."""
    start = time.monotonic()
    try:
        return infer(inputs)
    finally:
        report_to(observer.batch, name, sum(sizes), len(sizes), time.monotonic() - start)


def _split(name: str, outputs: object, sizes: list[int]) -> list[Arrays]:
    """Check every output kept the batch axis and cut it back into per-request rows."""
    total = sum(sizes)
    if not isinstance(outputs, Mapping):
        raise InferenceError(
            f"model {name!r}: infer returned {type(outputs).__name__}, "
            "expected a dict of output name -> numpy array"
        )
    for key, value in outputs.items():
        if not isinstance(value, np.ndarray) or value.ndim == 0 or value.shape[0] != total:
            shape = getattr(value, "shape", type(value).__name__)
            raise InferenceError(
                f"model {name!r}: output {key!r} did not keep the batch axis: it has "
                f"shape {shape}, expected a leading dimension of {total} (the rows of the "
                f"{len(sizes)} request(s) in this call); batching needs every output to "
                "keep the inputs' batch axis"
            )
    return batch_axis.split(outputs, sizes)


def report_to(method: Callable[..., None], name: str, *args: float) -> None:
    """Call an observer hook; a failing hook is logged, never fails a request."""
    try:
        method(*args)
    except Exception:
        _log.exception("batcher %r: observer %r failed", name, method)


def check_settings(
    max_batch_size: int, max_queue_delay_ms: float, max_queue_size: int, name: str
) -> None:
    """Refuse batcher settings out of range with :class:`ConfigError` naming the setting."""
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
