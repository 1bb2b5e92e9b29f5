"""Adaptive batching: gathering, limits, fairness, failure isolation, shutdown, metrics."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import numpy as np
import pytest

from model_agnostic.errors import (
    ConfigError,
    InferenceError,
    InputError,
    QueueFullError,
    ServingError,
    TensorSpecError,
)
from model_agnostic.serving.batching import Batcher, NullObserver

WAIT = 5.0  # seconds: upper bound for anything that should happen "soon"; never reached


class FakeModel:
    """An infer function that records what it sees; the first call can be held on a gate."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self.times: list[float] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self._lock = threading.Lock()

    @property
    def rows(self) -> list[int]:
        return [len(next(iter(call.values()))) for call in self.calls]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls.append(inputs)
            self.times.append(time.monotonic())
        self.entered.set()
        assert self.gate.wait(WAIT)
        x = inputs["x"]
        if np.isnan(x).any():
            raise ValueError("NaN in the input")
        if (x == -1).any():
            raise TensorSpecError("-1 is not allowed")
        # identity-like: doubled inputs plus the row id carried in column 0
        return {"y": x * 2, "id": x[:, 0].astype(np.int64)}


class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int, float]] = []
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        with self._lock:
            self.batches.append((rows, requests, seconds))

    def queue_wait(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher]]:
    made: list[tuple[Batcher, Callable[..., object]]] = []

    def make(infer: Callable[..., dict[str, np.ndarray]], **options: object) -> Batcher:
        options.setdefault("max_queue_delay_ms", 0.0)
        batcher = Batcher(infer, **options)  # type: ignore[arg-type]
        made.append((batcher, infer))
        return batcher

    yield make
    for batcher, infer in made:
        if isinstance(infer, FakeModel):
            infer.gate.set()
        batcher.close(drain=False, timeout=WAIT)


def rows(first_id: int, count: int = 1, width: int = 3) -> dict[str, np.ndarray]:
    """``count`` rows whose column 0 holds consecutive ids starting at ``first_id``."""
    x = np.zeros((count, width), dtype=np.float32)
    x[:, 0] = np.arange(first_id, first_id + count)
    x[:, 1:] = first_id % 7
    return {"x": x}


def check_own_rows(request: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(result["y"], request["x"] * 2)
    np.testing.assert_array_equal(result["id"], request["x"][:, 0].astype(np.int64))


def hold_worker(
    batcher: Batcher, model: FakeModel, count: int = 1
) -> Future[dict[str, np.ndarray]]:
    """Occupy the worker with one request of ``count`` rows blocked on ``model.gate``."""
    blocker = batcher.submit(rows(10_000, count))
    assert model.entered.wait(WAIT)
    return blocker


def batcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("model_agnostic-batcher-")]


def test_no_thread_is_started_before_the_first_submit(make_batcher: Callable[..., Batcher]) -> None:
    before = set(batcher_threads())
    batcher = make_batcher(FakeModel(), name="lazy")
    assert set(batcher_threads()) == before
    assert batcher.queued == 0
    batcher.infer(rows(0), timeout=WAIT)
    started = [t for t in batcher_threads() if t not in before]
    assert [t.name for t in started] == ["model_agnostic-batcher-lazy"]
    assert started[0].daemon


def test_a_lone_request_passes_its_arrays_through_without_copying(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel()
    batcher = make_batcher(model)
    request = rows(0, 2)
    check_own_rows(request, batcher.infer(request, timeout=WAIT))
    assert model.calls[0]["x"] is request["x"]


def test_concurrent_submitters_form_batches_and_each_gets_its_own_rows(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=50)
    blocker = hold_worker(batcher, model)
    n_threads, per_thread = 8, 5
    barrier = threading.Barrier(n_threads)
    failures: list[BaseException] = []

    def client(index: int) -> None:
        try:
            barrier.wait(WAIT)
            for k in range(per_thread):
                request = rows(index * 1000 + k * 10, count=1 + (index + k) % 3)
                check_own_rows(request, batcher.infer(request, timeout=WAIT))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # let the first requests queue up behind the blocked worker
    model.gate.set()
    for thread in threads:
        thread.join(WAIT)
    assert not failures
    blocker.result(WAIT)
    assert max(model.rows) <= 8
    assert any(count > 1 for count in model.rows[1:])
    assert sum(model.rows) == 1 + sum(1 + (i + k) % 3 for i in range(8) for k in range(5))


def test_batches_never_exceed_max_batch_size_rows(make_batcher: Callable[..., Batcher]) -> None:
    model = FakeModel(hold_first=True)
    observer = RecordingObserver()
    batcher = make_batcher(model, max_batch_size=5, observer=observer)
    blocker = hold_worker(batcher, model)
    sizes = [2, 2, 2, 1, 3, 4, 1, 1, 5, 2]
    requests = [rows(i * 100, count) for i, count in enumerate(sizes)]
    futures = [batcher.submit(request) for request in requests]
    assert batcher.queued == len(sizes)
    model.gate.set()
    for request, future in zip(requests, futures):
        check_own_rows(request, future.result(WAIT))
    blocker.result(WAIT)
    # FIFO: a batch closes when the next compatible request would overflow it
    assert model.rows == [1, 4, 3, 3, 5, 1, 5, 2]
    assert [requests for _, requests, _ in observer.batches] == [1, 2, 2, 1, 2, 1, 1, 1]


def test_delay_is_counted_from_the_first_arrival(make_batcher: Callable[..., Batcher]) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=200)
    start = time.monotonic()
    first = batcher.submit(rows(0))
    time.sleep(0.15)
    second = batcher.submit(rows(1))
    first.result(WAIT), second.result(WAIT)
    assert model.rows == [2]
    started_after = model.times[0] - start
    assert 0.19 <= started_after < 0.33  # ~0.2 s after the first, not 0.2 s after the second


def test_delay_is_counted_from_arrival_not_from_when_the_worker_is_free(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=200)
    blocker = hold_worker(batcher, model, count=8)
    arrival = time.monotonic()
    waiting = batcher.submit(rows(0))
    time.sleep(0.15)
    model.gate.set()  # the worker is free 150 ms after the arrival
    waiting.result(WAIT), blocker.result(WAIT)
    assert 0.19 <= model.times[1] - arrival < 0.33


def test_zero_delay_takes_what_is_queued_without_waiting(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_batch_size=8, max_queue_delay_ms=0)
    blocker = hold_worker(batcher, model)
    futures = [batcher.submit(rows(i)) for i in range(3)]
    model.gate.set()
    for future in [blocker, *futures]:
        future.result(WAIT)
    assert model.rows == [1, 3]
    start = time.monotonic()
    batcher.infer(rows(7), timeout=WAIT)
    assert time.monotonic() - start < 0.1


def test_an_oversize_request_runs_alone(make_batcher: Callable[..., Batcher]) -> None:
    model = FakeModel(hold_first=True)
    observer = RecordingObserver()
    batcher = make_batcher(model, max_batch_size=4, max_queue_delay_ms=100, observer=observer)
    blocker = hold_worker(batcher, model, count=4)
    requests = [rows(0), rows(100, 10), rows(200)]
    futures = [batcher.submit(request) for request in requests]
    model.gate.set()
    for request, future in zip(requests, futures):
        check_own_rows(request, future.result(WAIT))
    blocker.result(WAIT)
    assert (10, 1) in [(rows_, n) for rows_, n, _ in observer.batches]
    assert model.rows == [4, 1, 10, 1]


def test_incompatible_requests_are_not_merged_and_not_starved(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_batch_size=8)
    blocker = hold_worker(batcher, model)
    requests = [
        rows(0, width=3),
        rows(1, width=5),  # other non-batch shape
        rows(2, width=3),
        {"x": rows(3, width=3)["x"].astype(np.float64)},  # other dtype
        rows(4, width=5),
    ]
    futures = [batcher.submit(request) for request in requests]
    model.gate.set()
    for request, future in zip(requests, futures):
        check_own_rows(request, future.result(WAIT))
    blocker.result(WAIT)
    shapes = [(call["x"].shape, call["x"].dtype) for call in model.calls[1:]]
    assert shapes == [((2, 3), np.float32), ((2, 5), np.float32), ((1, 3), np.float64)]


def test_a_full_queue_raises_queue_full_503_and_accepted_requests_succeed(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_queue_size=3, name="busy")
    blocker = hold_worker(batcher, model)
    requests = [rows(i) for i in range(3)]
    futures = [batcher.submit(request) for request in requests]
    with pytest.raises(QueueFullError) as info:
        batcher.submit(rows(99))
    assert info.value.status == 503
    message = str(info.value)
    assert "'busy'" in message and "3" in message and "retry later" in message
    assert batcher.queued == 3
    model.gate.set()
    for request, future in zip(requests, futures):
        check_own_rows(request, future.result(WAIT))
    blocker.result(WAIT)
    assert 99 not in np.concatenate([call["x"][:, 0] for call in model.calls])


def test_a_poisoned_request_fails_alone_and_its_batch_mates_succeed(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_batch_size=8)
    blocker = hold_worker(batcher, model)
    poisoned = rows(1)
    poisoned["x"][0, 2] = np.nan
    refused = rows(2)
    refused["x"][0, 1] = -1
    good = [rows(0), rows(3, 2)]
    futures = [batcher.submit(request) for request in (good[0], poisoned, refused, good[1])]
    model.gate.set()
    blocker.result(WAIT)
    check_own_rows(good[0], futures[0].result(WAIT))
    check_own_rows(good[1], futures[3].result(WAIT))
    with pytest.raises(InferenceError, match="ValueError: NaN in the input") as info:
        futures[1].result(WAIT)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(TensorSpecError, match="-1 is not allowed"):  # passed through unchanged
        futures[2].result(WAIT)
    assert model.rows[1:] == [5, 1, 1, 1, 2]  # merged call failed, then each re-run alone


def test_the_worker_survives_failures(make_batcher: Callable[..., Batcher]) -> None:
    model = FakeModel()
    batcher = make_batcher(model, name="survivor")
    bad = rows(0)
    bad["x"][0, 1] = np.nan
    with pytest.raises(InferenceError):
        batcher.infer(bad, timeout=WAIT)
    (worker,) = [t for t in batcher_threads() if t.name.endswith("-survivor")]
    check_own_rows(rows(5), batcher.infer(rows(5), timeout=WAIT))
    assert worker.is_alive()
    assert [t for t in batcher_threads() if t.name.endswith("-survivor")] == [worker]

    scalar = make_batcher(lambda inputs: {"y": np.float32(1.0)})
    with pytest.raises(InferenceError, match="did not keep the batch axis"):
        scalar.infer(rows(0), timeout=WAIT)
    check_own_rows(rows(6), batcher.infer(rows(6), timeout=WAIT))


def test_a_broken_observer_does_not_fail_requests(make_batcher: Callable[..., Batcher]) -> None:
    class Broken(NullObserver):
        def batch(self, rows: int, requests: int, seconds: float) -> None:
            raise RuntimeError("metrics down")

    batcher = make_batcher(FakeModel(), observer=Broken())
    check_own_rows(rows(1), batcher.infer(rows(1), timeout=WAIT))


def test_outputs_without_the_batch_axis_fail_every_request_in_that_batch(
    make_batcher: Callable[..., Batcher],
) -> None:
    entered, gate = threading.Event(), threading.Event()

    def summing(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        assert gate.wait(WAIT)
        return {"total": inputs["x"].sum(axis=0)}  # loses the batch axis

    batcher = make_batcher(summing, max_batch_size=8, name="summing")
    blocker = batcher.submit(rows(0, 3))  # 3 rows -> output of length 3 == width: looks fine
    assert entered.wait(WAIT)
    futures = [batcher.submit(rows(i)) for i in range(1, 3)]
    gate.set()
    check = blocker.result(WAIT)
    assert check["total"].shape == (3,)
    errors = []
    for future in futures:
        with pytest.raises(InferenceError, match="did not keep the batch axis") as info:
            future.result(WAIT)
        assert "'total'" in str(info.value) and "leading dimension of 2" in str(info.value)
        errors.append(info.value)
    assert errors[0] is not errors[1]


def test_malformed_inputs_raise_tensor_spec_error_400(make_batcher: Callable[..., Batcher]) -> None:
    batcher = make_batcher(FakeModel())
    bad_inputs: list[object] = [
        {"x": np.zeros((2, 3)), "y": np.zeros((3, 3))},
        {"x": np.float32(1.0)},
        {"x": np.zeros(()), "y": np.zeros(2)},
        {"x": [[1.0, 2.0]]},
        {},
    ]
    for inputs in bad_inputs:
        with pytest.raises(TensorSpecError) as info:
            batcher.submit(inputs)  # type: ignore[arg-type]
        assert isinstance(info.value, InputError)  # the server's 400
    with pytest.raises(TensorSpecError, match=r"different batch sizes \{'x': 2, 'y': 3\}"):
        batcher.submit({"x": np.zeros((2, 3)), "y": np.zeros((3, 3))})
    assert batcher.queued == 0


def test_a_cancelled_request_is_skipped(make_batcher: Callable[..., Batcher]) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model)
    blocker = hold_worker(batcher, model)
    kept, cancelled = batcher.submit(rows(1)), batcher.submit(rows(2))
    assert cancelled.cancel()
    model.gate.set()
    kept.result(WAIT), blocker.result(WAIT)
    assert model.rows == [1, 1]
    assert model.calls[1]["x"][0, 0] == 1


def test_infer_timeout_raises_503_and_cancels_the_waiting_request(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model)
    blocker = hold_worker(batcher, model)
    with pytest.raises(ServingError, match="did not answer within") as info:
        batcher.infer(rows(1), timeout=0.02)
    assert info.value.status == 503
    model.gate.set()
    blocker.result(WAIT)
    check_own_rows(rows(3), batcher.infer(rows(3), timeout=WAIT))
    assert model.rows == [1, 1]


def test_close_with_drain_finishes_queued_requests_and_refuses_later_ones(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model, max_batch_size=2, max_queue_delay_ms=10_000, name="m")
    blocker = hold_worker(batcher, model, count=2)  # a full batch starts without waiting
    requests = [rows(i) for i in range(5)]
    futures = [batcher.submit(request) for request in requests]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    model.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()  # no 10 s wait for the last, lone request: closing flushes
    for request, future in zip(requests, futures):
        check_own_rows(request, future.result(0))
    blocker.result(0)
    assert model.rows == [2, 2, 2, 1]
    assert not [t for t in batcher_threads() if t.name == "model_agnostic-batcher-m"]
    with pytest.raises(ServingError, match="'m' is unloading/closed") as info:
        batcher.submit(rows(9))
    assert info.value.status == 503


def test_close_without_drain_fails_waiting_requests_with_503(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    batcher = make_batcher(model)
    blocker = hold_worker(batcher, model)
    waiting = [batcher.submit(rows(i)) for i in range(2)]
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    for future in waiting:
        with pytest.raises(ServingError, match="unloading/closed") as info:
            future.result(WAIT)
        assert info.value.status == 503
    model.gate.set()
    closer.join(WAIT)
    check_own_rows(rows(10_000), blocker.result(0))  # the running batch still finished
    assert model.rows == [1]


def test_the_observer_receives_batch_and_queue_wait_calls(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel(hold_first=True)
    observer = RecordingObserver()
    batcher = make_batcher(model, observer=observer)
    blocker = hold_worker(batcher, model)
    futures = [batcher.submit(rows(i, 2)) for i in range(3)]
    time.sleep(0.02)
    model.gate.set()
    for future in [blocker, *futures]:
        future.result(WAIT)
    assert [(rows_, n) for rows_, n, _ in observer.batches] == [(1, 1), (6, 3)]
    assert all(seconds >= 0 for _, _, seconds in observer.batches)
    assert observer.batches[0][2] >= 0.015  # the first call was held on the gate
    assert len(observer.waits) == 4
    assert all(wait >= 0.015 for wait in observer.waits[1:])  # they waited behind the gate


def test_invalid_settings_raise_config_error() -> None:
    for options in (
        {"max_batch_size": 0},
        {"max_batch_size": 2.5},
        {"max_queue_size": 0},
        {"max_queue_delay_ms": -1},
        {"max_queue_delay_ms": float("nan")},
        {"name": ""},
    ):
        with pytest.raises(ConfigError):
            Batcher(FakeModel(), **options)  # type: ignore[arg-type]
    assert "max_batch_size=8" in repr(Batcher(FakeModel()))


def test_overhead_over_a_direct_call_is_small(make_batcher: Callable[..., Batcher]) -> None:
    def identity(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    batcher = make_batcher(identity, max_queue_delay_ms=0)
    request = {"x": np.zeros((1, 4), dtype=np.float32)}
    batcher.infer(request)  # start the worker
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        batcher.infer(request)
        samples.append(time.perf_counter() - start)
    assert statistics.median(samples) < 0.002  # typically tens of microseconds


def test_close_without_drain_also_fails_a_batch_still_gathering(
    make_batcher: Callable[..., Batcher],
) -> None:
    model = FakeModel()
    batcher = make_batcher(model, max_queue_delay_ms=10_000)
    gathering = batcher.submit(rows(0))  # the worker holds it, waiting for batch-mates
    assert batcher.queued == 1
    start = time.monotonic()
    batcher.close(drain=False, timeout=WAIT)
    assert time.monotonic() - start < 1.0
    with pytest.raises(ServingError, match="unloading/closed"):
        gathering.result(0)
    assert model.calls == []
