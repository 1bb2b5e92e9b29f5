"""The Ray Serve adapter on a real local Ray instance, and its batching without Ray.

The Ray tests share one local instance (2 CPUs, no dashboard) started by a module fixture
and shut down after; they are skipped, saying why, when ``ray[serve]`` is not installed.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import load_model
from model_agnostic.adapters import ray_serve
from model_agnostic.errors import ConfigError, InferenceError
from model_agnostic.serving.batching import request_key
from tests.conftest import ROOT, XRAY, assert_same_findings
from tests.serving_fixtures import expected_logits, png_bytes, write_tiny_model

slow = pytest.mark.slow
IMAGE = np.random.default_rng(7).random((3, 3, 8, 8), dtype=np.float32)
SLOW_MODEL = '''\
import time

from tests.tiny_models import TinyNet


class SlowTiny(TinyNet):
    """TinyNet whose result takes 0.3 s, so requests are in flight when a replica dies."""

    def process_result(self, outputs):
        time.sleep(0.3)
        return super().process_result(outputs)
'''


@dataclass
class Cluster:
    port: int
    serve: Any
    ray: Any
    root: Path

    def deploy(self, config: Path, app: str, prefix: str, replicas: int) -> str:
        """Run ``config`` as application ``app`` at ``prefix``; its base URL path."""
        self.serve.run(ray_serve.deployment(
            config, num_replicas=replicas, ray_actor_options={"num_cpus": 0},
            # find a dead replica within about a second (Ray's default period is 10 s)
            deployment_options={"health_check_period_s": 0.5, "health_check_timeout_s": 2}),
            name=app, route_prefix=prefix)
        return prefix.rstrip("/")

    def call(self, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body, headers or {})
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def replicas(self, app: str) -> dict[str, int]:
        status = self.serve.status().applications[app].deployments["model_agnostic"]
        return dict(status.replica_states)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ray = pytest.importorskip("ray", reason="the Ray Serve adapter needs 'ray[serve]': "
                              "pip install 'model-agnostic[ray]'")
    serve = pytest.importorskip("ray.serve", reason="the Ray Serve adapter needs 'ray[serve]'")
    pytest.importorskip("starlette", reason="Ray Serve's HTTP needs starlette (ray[serve])")
    # address="local": a new instance of our own, never a cluster another test (or a
    # stale /tmp/ray/ray_current_cluster) left behind
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    except BaseException:
        ray.shutdown()  # reap whatever it started before failing
        raise
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield Cluster(port, serve, ray, tmp_path_factory.mktemp("ray"))
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny(cluster: Cluster) -> Iterator[str]:
    """The tiny model on two replicas, at the root (so tritonclient needs no prefix)."""
    config = write_tiny_model(cluster.root / "tiny", serving='name = "tiny"')
    yield cluster.deploy(config, "tiny", "/", replicas=2)
    cluster.serve.delete("tiny")


@pytest.fixture(scope="module")
def triton(cluster: Cluster, tiny: str) -> Iterator[Any]:
    http_client = pytest.importorskip("tritonclient.http")
    client = http_client.InferenceServerClient(f"127.0.0.1:{cluster.port}")
    yield client
    client.close()


# ------------------------------------------------------------------ tritonclient conformance
@slow
def test_tritonclient_conformance_on_ray(triton: Any) -> None:
    # the same checks as our own server's
    from tests import test_triton_client as checks

    checks.test_liveness_readiness_and_server_metadata(triton)
    checks.test_model_metadata(triton)
    checks.test_inference(triton, binary=True)
    checks.test_inference(triton, binary=False)
    checks.test_inference_with_a_version_and_default_outputs(triton)
    checks.test_errors_reach_the_client_as_messages(triton)


@slow
def test_predict_endpoint_matches_the_local_model(cluster: Cluster, tiny: str) -> None:
    image = png_bytes(3)
    status, headers, body = cluster.call("POST", "/v2/models/tiny/predict", image,
                                         {"Content-Type": "image/png"})
    assert status == 200, body
    answer = json.loads(body)
    expected = load_model(cluster.root / "tiny" / "config.toml").predict(image)
    assert answer["model_name"] == "tiny" and answer["model_version"] == "1"
    assert answer["result"]["label"] == expected["label"]
    np.testing.assert_allclose(answer["result"]["logits"], expected["logits"], rtol=1e-5)
    assert headers.get("X-Replica") or headers.get("x-replica")


@slow
def test_errors_keep_our_status_codes_and_json(cluster: Cluster, tiny: str) -> None:
    status, _, body = cluster.call("GET", "/v2/models/missing")
    assert status == 404 and "missing" in json.loads(body)["error"]
    status, _, body = cluster.call("POST", "/v2/models/tiny/predict", b"not an image",
                                   {"Content-Type": "image/png"})
    assert status == 400 and json.loads(body)["error"]
    status, _, body = cluster.call("DELETE", "/v2/health/live")
    assert status == 405


@slow
def test_two_replicas_share_concurrent_load(cluster: Cluster, tiny: str) -> None:
    """Every answer names its replica (X-Replica, Ray's replica id): both answer, and
    concurrent requests, merged by @serve.batch, each get their own rows back."""
    rng = np.random.default_rng(0)
    images = [rng.random((int(rng.integers(1, 4)), 3, 8, 8), dtype=np.float32)
              for _ in range(48)]

    def infer(image: np.ndarray) -> tuple[str, np.ndarray]:
        request = {"inputs": [{"name": "image", "datatype": "FP32",
                               "shape": list(image.shape), "data": image.ravel().tolist()}]}
        status, headers, body = cluster.call("POST", "/v2/models/tiny/infer",
                                             json.dumps(request).encode(),
                                             {"Content-Type": "application/json"})
        assert status == 200, body
        data = json.loads(body)["outputs"][0]["data"]
        replica = headers.get("X-Replica") or headers.get("x-replica") or ""
        return replica, np.asarray(data, np.float32).reshape(len(image), 4)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(infer, images))
    for image, (_, logits) in zip(images, answers):
        np.testing.assert_allclose(logits, expected_logits(image), rtol=1e-5)
    replicas = {replica for replica, _ in answers}
    assert len(replicas) == 2, f"expected both replicas to answer, got {replicas}"


# ------------------------------------------------------------------------------ CheXNet
@slow
def test_chexnet_on_ray_equals_the_local_onnx_runtime_backend(
        cluster: Cluster, chexnet_onnx_config: Path) -> None:
    prefix = cluster.deploy(chexnet_onnx_config, "chexnet", "/chexnet", replicas=1)
    try:
        status, _, body = cluster.call("POST", f"{prefix}/v2/models/chexnet/predict",
                                       XRAY.read_bytes(), {"Content-Type": "image/jpeg"})
    finally:
        cluster.serve.delete("chexnet")
    assert status == 200, body
    ours = json.loads(body)["result"]
    local = load_model(chexnet_onnx_config).predict(XRAY)
    assert_same_findings(ours, local, atol=1e-5)


# ----------------------------------------------------------------------- replica death
@dataclass
class Record:
    started: float
    ended: float
    status: int  # -1: the connection failed
    replica: str


def _load(cluster: Cluster, path: str, stop: threading.Event, records: list[Record]) -> None:
    body = png_bytes(1)
    while not stop.is_set():
        started = time.monotonic()
        try:
            status, headers, _ = cluster.call("POST", path, body, {"Content-Type": "image/png"})
            replica = headers.get("X-Replica") or headers.get("x-replica") or ""
        except OSError:
            status, replica = -1, ""
        records.append(Record(started, time.monotonic(), status, replica))


def _kill(cluster: Cluster, replica: str) -> tuple[float, float]:
    """Kill a replica's actor; (when the kill was sent, when the actor was seen dead)."""
    ray = cluster.ray
    name = next(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                if actor["name"].endswith("#" + replica))
    handle = ray.get_actor(name, namespace="serve")
    sent = time.monotonic()
    ray.kill(handle, no_restart=True)
    deadline = sent + 10
    while time.monotonic() < deadline:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=1)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            break
        time.sleep(0.01)
    return sent, time.monotonic()


@slow
def test_a_killed_replica_is_replaced_and_only_its_accepted_requests_fail(
        cluster: Cluster) -> None:
    """What Ray Serve guarantees: a request the killed replica had accepted (in flight on
    it) fails with HTTP 500; a request not yet assigned is routed to a live replica (Ray
    retries the assignment when the replica turns out dead), so no request started after
    the actor's death fails; the controller starts a replacement, back to 2 replicas."""
    folder = cluster.root / "slow"
    config = write_tiny_model(folder, serving='name = "slow"')
    (folder / "slow_model.py").write_text(SLOW_MODEL, encoding="utf-8")
    config.write_text(config.read_text().replace("tests.tiny_models:TinyNet",
                                                 "slow_model.py:SlowTiny"))
    prefix = cluster.deploy(config, "slow", "/slow", replicas=2)
    records: list[Record] = []
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(cluster, f"{prefix}/v2/models/slow/predict",
                                                    stop, records)) for _ in range(6)]
    for client in clients:
        client.start()
    try:
        deadline = time.monotonic() + 10
        while len({r.replica for r in records if r.replica}) < 2:
            assert time.monotonic() < deadline, "both replicas never answered"
            time.sleep(0.05)
        original = {r.replica for r in records if r.replica}
        victim = min(original)
        sent, dead = _kill(cluster, victim)
        deadline = time.monotonic() + 30
        while not (cluster.replicas("slow") == {"RUNNING": 2}
                   and {r.replica for r in records if r.started > dead} - original):
            assert time.monotonic() < deadline, f"not replaced: {cluster.replicas('slow')}"
            time.sleep(0.1)
    finally:
        stop.set()
        for client in clients:
            client.join(30)
        cluster.serve.delete("slow")
    in_flight = [r for r in records if r.started < dead and r.ended > sent]
    failed = [r for r in records if r.status != 200]
    assert all(r.status == 500 for r in failed), failed
    assert all(r.started < dead and r.ended > sent for r in failed), (sent, dead, failed)
    assert len(failed) <= len(in_flight)
    assert victim not in {r.replica for r in records if r.started > dead}
    assert len([r for r in records if r.started > dead and r.status == 200]) >= 6


# ------------------------------------------------------- batching (no Ray needed)
class _Served:
    """Just enough of a ServedVersion for ``run_items``."""

    def __init__(self, infer: Any, name: str = "m") -> None:
        self.name, self.version = name, "1"
        self.model = type("M", (), {"infer": staticmethod(infer)})()


class _Plane:
    metrics = None


def _item(served: Any, array: np.ndarray, limit: int = 8) -> Any:
    rows, key = request_key({"x": array})
    return ray_serve._Item(served, {"x": array}, rows, key, limit, min(rows, limit), 0.0)


def test_run_items_merges_by_version_and_shape_and_splits_rows_back() -> None:
    calls: list[int] = []

    def double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    served, other = _Served(double), _Served(double, "other")
    arrays = [np.full((n, 2), n, np.float32) for n in (1, 2, 3)] + [np.ones((2, 5), np.float32)]
    items = [_item(served, a) for a in arrays] + [_item(other, arrays[0])]
    outcomes = ray_serve.run_items(items, _Plane())  # type: ignore[arg-type]
    for array, outcome in zip(arrays + [arrays[0]], outcomes):
        assert isinstance(outcome, dict)
        np.testing.assert_array_equal(outcome["y"], array * 2)
    assert sorted(calls) == [1, 2, 6]  # (1+2+3 rows) merged; the (2, 5) and "other" alone


def test_run_items_keeps_each_call_within_the_versions_row_limit() -> None:
    calls: list[int] = []

    def identity(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"]}

    served = _Served(identity)
    sizes = [3, 3, 3, 9]
    outcomes = ray_serve.run_items(
        [_item(served, np.zeros((n, 1), np.float32), limit=4) for n in sizes], _Plane())
    assert [len(o["y"]) for o in outcomes if isinstance(o, dict)] == sizes
    assert calls == [3, 3, 3, 9]  # 3 + 3 > 4; a request over the limit runs alone


def test_run_items_fails_only_the_request_that_breaks_the_model() -> None:
    def picky(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (inputs["x"] < 0).any():
            raise RuntimeError("negative input")
        return {"y": inputs["x"]}

    served = _Served(picky)
    arrays = [np.ones((1, 1), np.float32), -np.ones((1, 1), np.float32),
              np.ones((2, 1), np.float32)]
    outcomes = ray_serve.run_items([_item(served, a) for a in arrays], _Plane())
    assert isinstance(outcomes[0], dict) and isinstance(outcomes[2], dict)
    assert isinstance(outcomes[1], InferenceError) and "negative input" in str(outcomes[1])


def test_run_items_refuses_outputs_without_the_batch_axis() -> None:
    served = _Served(lambda inputs: {"y": np.zeros(3, np.float32)})
    items = [_item(served, np.zeros((2, 1), np.float32)) for _ in range(2)]
    outcomes = ray_serve.run_items(items, _Plane())
    assert all(isinstance(o, InferenceError) and "batch axis" in str(o) for o in outcomes)


def test_settings_from_config_maps_the_ray_section() -> None:
    kwargs = ray_serve.settings_from_config(
        {"num_replicas": 2, "num_cpus": 1.5, "max_ongoing_requests": 32,
         "autoscaling": {"min_replicas": 1, "max_replicas": 4}, "address": "auto"})
    assert kwargs == {"num_replicas": 2, "ray_actor_options": {"num_cpus": 1.5},
                      "max_ongoing_requests": 32,
                      "autoscaling_config": {"min_replicas": 1, "max_replicas": 4}}
    with pytest.raises(ConfigError, match="unknown keys"):
        ray_serve.settings_from_config({"replicas": 2})


def test_deployment_refuses_bad_settings_and_missing_targets(tmp_path: Path) -> None:
    pytest.importorskip("ray.serve", reason="the Ray Serve adapter needs 'ray[serve]'")
    config = write_tiny_model(tmp_path)
    with pytest.raises(ConfigError, match="num_replicas"):
        ray_serve.deployment(config, num_replicas=0)
    with pytest.raises(ConfigError, match="batch_wait_timeout_s"):
        ray_serve.deployment(config, batch_wait_timeout_s=-1)
    with pytest.raises(ConfigError, match="no such"):
        ray_serve.deployment(tmp_path / "missing.toml")
