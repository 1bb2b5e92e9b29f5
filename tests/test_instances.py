"""Model instances: parallel batches, equal results, hot swap, settings, metrics, pinning."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import Model, load_model
from model_agnostic.errors import ConfigError
from model_agnostic.serving.batching import Batcher
from model_agnostic.serving.dataplane import DataPlane
from model_agnostic.serving.instances import (
    InstancePlan,
    plan_instances,
    start_instances,
    version_batcher,
)
from model_agnostic.serving.metrics import Metrics
from model_agnostic.serving.repository import ModelRepository, ServedVersion
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane, make_runner
from tests.serving_fixtures import expected_logits, write_tiny_model
from tests.test_serving_load import infer, logits_of

pytest.importorskip("waitress")
pytest.importorskip("prometheus_client")

CALL_S = 0.3  # how long one call of the slow model takes


class Slow(Model):
    """TinyNet's answer after ``CALL_S`` seconds; records when each call ran, and where."""

    backend_name = "slow"
    input_names = ("image",)
    output_names = ("logits",)

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[float, float]] = []
        self.cpus: list[frozenset[int]] = []
        self._lock = threading.Lock()

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.monotonic()
        time.sleep(CALL_S)
        with self._lock:
            self.spans.append((started, time.monotonic()))
            if hasattr(os, "sched_getaffinity"):
                self.cpus.append(frozenset(os.sched_getaffinity(0)))
        return {"logits": expected_logits(inputs["image"])}


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name == name and wanted <= set(label_text.rstrip("}").split(",")):
            total += float(value)
    return total


def overlap(spans: list[tuple[float, float]]) -> float:
    """Seconds during which the first two calls both ran."""
    (a0, a1), (b0, b1) = sorted(spans)[:2]
    return max(0.0, min(a1, b1) - max(a0, b0))


@pytest.fixture
def serve_slow() -> Iterator[Callable[..., tuple[Slow, BackgroundServer]]]:
    servers: list[BackgroundServer] = []

    def serve(**options: Any) -> tuple[Slow, BackgroundServer]:
        metrics, model = Metrics(), Slow()
        repository = ModelRepository(make_runner=make_runner(metrics))
        repository.add("slow", model, "1", {"max_queue_delay_ms": 0.0, **options})
        server = BackgroundServer(DataPlane(repository, metrics=metrics), ServerOptions(port=0))
        servers.append(server.start())
        return model, server

    yield serve
    for server in servers:
        server.stop()


def images(count: int, rows: int = 1) -> list[np.ndarray]:
    return [np.random.default_rng(i).random((rows, 3, 8, 8), dtype=np.float32)
            for i in range(count)]


@pytest.mark.parametrize("instances", [1, 2])
def test_two_instances_run_two_concurrent_requests_at_once(
    serve_slow: Callable[..., tuple[Slow, BackgroundServer]], instances: int
) -> None:
    model, server = serve_slow(instances=instances, max_batch_size=1)  # two calls, never one
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda image: infer(server.url, image, "slow"), images(2)))
    assert [status for status, _ in answers] == [200, 200]
    if instances == 2:  # both calls ran side by side, on the two instances
        assert len(model.spans) == 2 and overlap(model.spans) > CALL_S / 2, model.spans
        calls = [metric(server.url, "model_agnostic_instance_calls_total", instance=str(i))
                 for i in range(2)]
        assert calls == [1.0, 1.0]
    else:  # one instance: one call after the other
        assert len(model.spans) == 2 and overlap(model.spans) == 0.0, model.spans


def test_requests_beyond_the_instances_wait_for_a_free_one(
    serve_slow: Callable[..., tuple[Slow, BackgroundServer]],
) -> None:
    model, server = serve_slow(instances=2, max_batch_size=1)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda image: infer(server.url, image, "slow"), images(4)))
    assert all(status == 200 for status, _ in answers)
    starts = sorted(start for start, _ in model.spans)
    assert len(starts) == 4 and starts[2] - starts[0] >= CALL_S * 0.9  # two at a time


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_instances_answer_exactly_like_one_instance(tmp_path: Path, backend: str) -> None:
    if backend == "pytorch":
        pytest.importorskip("torch")
    config = write_tiny_model(tmp_path)
    model = load_model(config, backend=backend)
    inputs = images(12, rows=3)
    alone = [model.infer({"image": image}) for image in inputs]
    plan = plan_instances({"instances": 2, "threads_per_instance": 1}, "tiny")
    batcher = Batcher(start_instances(model, plan), max_batch_size=4, max_queue_delay_ms=5.0)
    try:
        with ThreadPoolExecutor(6) as pool:
            served = list(pool.map(lambda image: batcher.infer({"image": image}, 10), inputs))
    finally:
        batcher.close()
    for one, many in zip(alone, served, strict=True):
        np.testing.assert_array_equal(one["logits"], many["logits"])


def test_onnx_instances_have_their_own_sessions_and_threads(tmp_path: Path) -> None:
    model = load_model(write_tiny_model(tmp_path))  # the config asks for 1 intra-op thread
    as_loaded = model.session
    (first,) = start_instances(model, plan_instances({}, "tiny"))  # the default plan
    assert first.model is model and model.session is as_loaded  # left exactly as loaded
    made = start_instances(model, plan_instances({"instances": 3}, "tiny", cpus=[0, 1, 2, 3, 4, 5]))
    sessions = [instance.model.session for instance in made]
    assert made[0].model is model and len({id(s) for s in sessions}) == 3
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [2, 2, 2]


def shape(plan: InstancePlan) -> tuple[int, int | None]:
    return plan.instances, plan.threads


def test_the_default_plan_and_the_objective_rule() -> None:
    two, sixteen = [0, 1], list(range(16))
    assert plan_instances({}, "m", two) == InstancePlan()  # unconfigured: as loaded
    assert not InstancePlan().configured
    assert shape(plan_instances({"objective": "latency"}, "m", two)) == (1, 2)
    assert shape(plan_instances({"objective": "throughput"}, "m", two)) == (2, 1)
    assert shape(plan_instances({"objective": "latency"}, "m", sixteen)) == (1, 16)
    assert shape(plan_instances({"objective": "throughput"}, "m", sixteen)) == (16, 1)
    assert shape(plan_instances({"instances": 4}, "m", sixteen)) == (4, 4)
    assert shape(plan_instances({"threads_per_instance": 4}, "m", sixteen)) == (4, 4)
    # set explicitly, instances and threads win over the objective, even oversubscribed
    explicit = {"instances": 2, "threads_per_instance": 2, "objective": "latency"}
    assert shape(plan_instances(explicit, "m", two)) == (2, 2)
    pinned = plan_instances({"instances": 2, "pin_cpus": True}, "m", [4, 5, 6, 7])
    assert pinned.cpus == ((4, 5), (6, 7))


@pytest.mark.parametrize(("options", "key"), [
    ({"instances": 0}, "instances"),
    ({"instances": 2.0}, "instances"),
    ({"instances": True}, "instances"),
    ({"instances": 100_000}, "instances"),
    ({"threads_per_instance": 0}, "threads_per_instance"),
    ({"threads_per_instance": "2"}, "threads_per_instance"),
    ({"objective": "fast"}, "objective"),
    ({"pin_cpus": "yes"}, "pin_cpus"),
    ({"instances": 2, "threads_per_instance": 2, "pin_cpus": True}, "pin_cpus"),
])
def test_bad_settings_are_config_errors_naming_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"model 'm': \[serving\] {key} "):
        plan_instances(options, "m", [0, 1])


def test_a_bad_setting_in_a_config_fails_the_load_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="objective must be one of"):
        build_dataplane(write_tiny_model(tmp_path / "a", serving='objective = "speed"'))
    with pytest.raises(ConfigError, match="instances must be int"):
        build_dataplane(write_tiny_model(tmp_path / "b", serving='instances = "two"'))


def test_metrics_show_instances_serving_busy_and_their_calls(
    serve_slow: Callable[..., tuple[Slow, BackgroundServer]],
) -> None:
    model, server = serve_slow(instances=2, max_batch_size=1)
    assert metric(server.url, "model_agnostic_instances") == 2.0
    assert metric(server.url, "model_agnostic_busy_instances") == 0.0
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(infer, server.url, image, "slow") for image in images(2)]
        time.sleep(CALL_S / 2)
        busy = metric(server.url, "model_agnostic_busy_instances")
        assert all(job.result()[0] == 200 for job in pending)
    assert busy == 2.0
    assert metric(server.url, "model_agnostic_busy_instances") == 0.0
    assert metric(server.url, "model_agnostic_instance_calls_total") == 2.0
    server.dataplane.repository.unload("slow")
    assert metric(server.url, "model_agnostic_instances") == 0.0  # closed with its version


def test_batching_off_still_spreads_requests_over_the_instances(
    serve_slow: Callable[..., tuple[Slow, BackgroundServer]],
) -> None:
    model, server = serve_slow(instances=2, batching=False, max_batch_size=8)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda image: infer(server.url, image, "slow"), images(2)))
    assert [status for status, _ in answers] == [200, 200]
    assert len(model.spans) == 2 and overlap(model.spans) > CALL_S / 2


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs Linux and two CPUs")
def test_pinned_instances_run_on_cpus_of_their_own(
    serve_slow: Callable[..., tuple[Slow, BackgroundServer]],
) -> None:
    model, server = serve_slow(instances=2, pin_cpus=True, max_batch_size=1)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda image: infer(server.url, image, "slow"), images(2)))
    cpus = sorted(os.sched_getaffinity(0))
    assert sorted(model.cpus, key=min) == [frozenset({cpus[0]}), frozenset({cpus[1]})]
    assert os.sched_getaffinity(0) == set(cpus)  # the request threads stay unpinned


def test_hot_swap_with_instances_under_load_loses_no_request(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_tiny_model(root / "tiny" / "1", scale=1.0, serving="instances = 2")
    options = ServerOptions(port=0, threads=12, poll_interval_s=0.05)
    image = np.random.default_rng(5).random((1, 3, 8, 8), dtype=np.float32)
    results: list[tuple[int, dict[str, Any]]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            results.append(infer(server.url, image))

    with BackgroundServer(build_dataplane(root, options=options), options) as server:
        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        staging = tmp_path / "staging"
        write_tiny_model(staging, scale=2.0, serving="instances = 2\nthreads_per_instance = 1")
        os.rename(staging, root / "tiny" / "2")
        deadline = time.monotonic() + 20
        while infer(server.url, image)[1].get("model_version") != "2":
            assert time.monotonic() < deadline, "version 2 never answered"
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        serving = {v: metric(server.url, "model_agnostic_instances", version=v)
                   for v in ("1", "2")}
    assert results and all(status == 200 for status, _ in results), \
        Counter(status for status, _ in results)
    seen = Counter(answer["model_version"] for _, answer in results)
    assert set(seen) == {"1", "2"}, seen
    for _, answer in results:
        scale = float(answer["model_version"])
        np.testing.assert_allclose(logits_of(answer, 1), expected_logits(image, scale), rtol=1e-5)
    assert serving == {"1": 0.0, "2": 2.0}


def test_a_version_starts_its_instances_before_it_serves(tmp_path: Path) -> None:
    served = ServedVersion("tiny", "1", load_model(write_tiny_model(tmp_path)),
                           {"instances": 2})
    batcher = version_batcher(served, Metrics())
    assert isinstance(batcher, Batcher) and batcher.instances == 2
    assert [t for t in threading.enumerate() if "batcher-tiny-1" in t.name] == []  # lazy
    batcher.close()


@pytest.mark.parametrize(("files", "count"), [
    ({"cpu.max": "150000 100000"}, 1),  # a container limited to 1.5 CPUs: 1
    ({"cpu.max": "max 100000"}, None),  # no limit: every CPU of the affinity
    ({"cfs_quota_us": "200000", "cfs_period_us": "100000"}, 2),  # cgroup v1
    ({"cfs_quota_us": "-1", "cfs_period_us": "100000"}, None),
])
def test_a_container_cpu_limit_caps_the_cpus_plans_divide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], count: int | None
) -> None:
    from model_agnostic.serving import instances

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(instances, "_QUOTA_FILES", (
        (str(tmp_path / "cpu.max"), None),
        (str(tmp_path / "cfs_quota_us"), str(tmp_path / "cfs_period_us"))))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert instances.available_cpus() == list(range(count or 8))
    assert plan_instances({"objective": "throughput"}, "m").instances == (count or 8)


def test_a_version_with_bad_instance_settings_fails_and_the_previous_one_serves(
    tmp_path: Path,
) -> None:
    write_tiny_model(tmp_path / "tiny" / "1", serving="instances = 2")
    repository = ModelRepository(tmp_path, make_runner=make_runner(None))
    repository.start()
    try:
        write_tiny_model(tmp_path / "tiny" / "2", scale=2.0, serving="threads_per_instance = 0")
        repository.scan()
        repository.scan()  # a new folder loads once unchanged for one poll
        assert repository.ready_versions("tiny") == ["1"]
        failed = repository.status()["tiny"]["failed"]
        assert "[serving] threads_per_instance must be an integer" in failed["2"]["error"]
    finally:
        repository.stop()


class Recording:
    """A batcher instance that records its lifecycle; calls wait on ``gate``."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate, self.events, self.thread = gate, [], ""

    def start(self) -> None:
        self.events.append("start")
        self.thread = threading.current_thread().name

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.gate.wait(10)
        self.events.append("infer")
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        self.events.append("close")


def test_closing_drains_every_worker_then_closes_the_instances() -> None:
    gate = threading.Event()
    instances = [Recording(gate), Recording(gate)]
    batcher = Batcher(instances, max_batch_size=1, max_queue_delay_ms=0.0, name="rec")
    futures = [batcher.submit({"x": np.full((1, 2), i, np.float32)}) for i in range(6)]
    deadline = time.monotonic() + 10
    while batcher.queued != 4:  # until both workers hold a call, and four requests wait
        assert time.monotonic() < deadline, batcher.queued
        time.sleep(0.01)
    closing = threading.Thread(target=batcher.close)
    closing.start()
    gate.set()
    closing.join(10)
    assert [f.result(0)["y"][0, 0] for f in futures] == [0, 2, 4, 6, 8, 10]
    assert sorted(i.thread for i in instances) == ["model_agnostic-batcher-rec-0",
                                                   "model_agnostic-batcher-rec-1"]
    for instance in instances:
        assert instance.events[0] == "start" and instance.events[-1] == "close"
        assert instance.events.count("infer") >= 1
    assert sum(i.events.count("infer") for i in instances) == 6


def test_fewer_server_threads_than_instances_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from model_agnostic.serving.server import warn_if_threads_starve_instances

    dataplane = build_dataplane(write_tiny_model(tmp_path, serving="instances = 3"))
    try:
        with caplog.at_level("WARNING", logger="model_agnostic.serving.server"):
            assert warn_if_threads_starve_instances(dataplane, threads=16) == 3
            assert not caplog.records
            warn_if_threads_starve_instances(dataplane, threads=2)
        assert "threads = 2 answers at most 2 requests at once, but 3 model" in caplog.text
    finally:
        dataplane.repository.stop()
