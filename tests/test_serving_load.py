"""The server under concurrent load: batches form, the queue limit answers 503, hot swap loses nothing."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import Model
from model_agnostic.serving.dataplane import DataPlane
from model_agnostic.serving.metrics import Metrics
from model_agnostic.serving.repository import ModelRepository
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane, make_runner
from tests.serving_fixtures import expected_logits, write_tiny_model

pytest.importorskip("waitress")
pytest.importorskip("prometheus_client")


def infer(url: str, image: np.ndarray, model: str = "tiny") -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"inputs": [{"name": "image", "shape": list(image.shape),
                                   "datatype": "FP32", "data": image.ravel().tolist()}]})
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body,
                           {"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def logits_of(answer: dict[str, Any], rows: int) -> np.ndarray:
    return np.reshape(answer["outputs"][0]["data"], (rows, 4))


def metric(url: str, name: str) -> float:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(tmp_path: Path) -> None:
    config = write_tiny_model(tmp_path, serving='name = "tiny"\nmax_batch_size = 16\n'
                                                'max_queue_delay_ms = 40.0')
    images = [np.random.default_rng(i).random((1 + i % 3, 3, 8, 8), dtype=np.float32)
              for i in range(24)]
    with BackgroundServer(build_dataplane(config), ServerOptions(port=0, threads=12)) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda image: infer(server.url, image), images))
        calls = metric(server.url, "model_agnostic_batch_size_count")
        rows = metric(server.url, "model_agnostic_batch_size_sum")
        merged = metric(server.url, "model_agnostic_batch_requests_sum")
    for image, (status, answer) in zip(images, answers, strict=True):
        assert status == 200, answer
        np.testing.assert_allclose(logits_of(answer, len(image)), expected_logits(image), rtol=1e-5)
    assert rows == sum(len(image) for image in images) and merged == len(images)
    assert calls < len(images), f"{calls} backend calls for {len(images)} requests: no batching"


class Slow(Model):
    """A backend that takes 0.2 s per call, to fill the queue."""

    backend_name = "slow"
    input_names = ("image",)
    output_names = ("logits",)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.2)
        return {"logits": expected_logits(inputs["image"])}


def test_full_queue_answers_503_and_the_accepted_requests_succeed() -> None:
    metrics = Metrics()
    repository = ModelRepository(make_runner=make_runner(metrics))
    repository.add("tiny", Slow(), "1", {"max_batch_size": 1, "max_queue_size": 2,
                                         "max_queue_delay_ms": 0.0})
    image = np.ones((1, 3, 8, 8), np.float32)
    with BackgroundServer(DataPlane(repository, metrics=metrics),
                          ServerOptions(port=0, threads=16)) as server:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: infer(server.url, image), range(12)))
        statuses = Counter(status for status, _ in answers)
        assert set(statuses) == {200, 503} and statuses[503] >= 6, statuses
        for status, answer in answers:
            if status == 503:
                assert "queue" in answer["error"] and "retry" in answer["error"]
            else:
                np.testing.assert_allclose(logits_of(answer, 1), expected_logits(image), rtol=1e-5)
        assert infer(server.url, image)[0] == 200  # and the server carries on


def test_hot_swap_under_load_loses_no_request(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_tiny_model(root / "tiny" / "1", scale=1.0)
    options = ServerOptions(port=0, threads=12, poll_interval_s=0.05)
    image = np.random.default_rng(5).random((1, 3, 8, 8), dtype=np.float32)
    scales = {"1": 1.0, "2": 2.0}
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
        write_tiny_model(staging, scale=2.0)
        os.rename(staging, root / "tiny" / "2")  # a new version appears
        _wait_for(lambda: infer(server.url, image)[1].get("model_version") == "2")
        time.sleep(0.3)
        broken = tmp_path / "broken"
        write_tiny_model(broken, scale=3.0)
        (broken / "model.onnx").write_bytes(b"not an onnx file")
        os.rename(broken, root / "tiny" / "3")  # a broken version appears
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        index = json.loads(_post(server.url, "/v2/repository/index"))
    assert results and all(status == 200 for status, _ in results), \
        Counter(status for status, _ in results)
    seen = Counter(answer["model_version"] for _, answer in results)
    assert set(seen) == {"1", "2"}, seen  # the broken version 3 never answered
    for _, answer in results:  # every response wholly from the version it names
        np.testing.assert_allclose(logits_of(answer, 1),
                                   expected_logits(image, scales[answer["model_version"]]),
                                   rtol=1e-5)
    assert results[-1][1]["model_version"] == "2"
    (tiny,) = index
    assert tiny["versions"] == ["2"] and "3" in json.dumps(tiny["details"])


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _post(url: str, path: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", path, b"")
    body = connection.getresponse().read()
    connection.close()
    return body
