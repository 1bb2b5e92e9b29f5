"""The server end to end: every endpoint over real HTTP (waitress), errors as JSON, limits."""

from __future__ import annotations

import http.client
import os
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import errors
from model_agnostic.serving.dataplane import status_of
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.serving_fixtures import expected_logits, png_bytes, write_tiny_model

pytest.importorskip("waitress")
pytest.importorskip("prometheus_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = write_tiny_model(tmp_path_factory.mktemp("tiny"),
                              serving='name = "tiny"\nmax_queue_delay_ms = 1.0')
    options = ServerOptions(port=0, max_request_bytes=1 << 20, read_timeout_s=2.0, threads=8)
    with BackgroundServer(build_dataplane(config, options=options), options) as running:
        yield running


def call(server: BackgroundServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body, headers or {})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def call_json(server: BackgroundServer, method: str, path: str, document: Any = None,
              **kwargs: Any) -> tuple[int, Any]:
    body = json.dumps(document).encode() if document is not None else kwargs.pop("body", None)
    status, headers, raw = call(server, method, path, body, kwargs.pop("headers", None))
    assert headers["content-type"].startswith("application/json"), raw[:200]
    return status, json.loads(raw)


IMAGE = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)


def test_health_and_server_metadata(server: BackgroundServer) -> None:
    assert call_json(server, "GET", "/v2/health/live") == (200, {"live": True})
    assert call_json(server, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = call_json(server, "GET", "/v2")
    assert status == 200 and meta["name"] == "model_agnostic"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_with_and_without_version(server: BackgroundServer) -> None:
    status, meta = call_json(server, "GET", "/v2/models/tiny")
    assert status == 200
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}]
    assert call_json(server, "GET", "/v2/models/tiny/versions/1")[0] == 200
    assert call_json(server, "GET", "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})
    assert call_json(server, "GET", "/v2/models/tiny/versions/1/ready")[1]["ready"] is True
    assert meta["parameters"]["parity"] == "unverified"  # a config: nothing was verified
    assert "not an exported artifact" in meta["parameters"]["parity_note"]


def test_model_metadata_carries_the_artifacts_parity_verdict_and_waivers(
    tmp_path: Path, write_config: Any
) -> None:
    pytest.importorskip("torch")
    from model_agnostic.export.pipeline import export_model
    from tests.conftest import XRAY

    body = (f'[model]\nclass = "@TESTS@/tiny_models.py:{{cls}}"\n[export]\nexample = '
            f'"{XRAY.as_posix()}"\n[verify]\ngenerated = 0\n')
    passed = export_model(write_config(body.format(cls="TinyImage")), tmp_path / "passed").artifact
    waived = export_model(write_config(body.format(cls="TinyImageNoReference"), name="w.toml"),
                          tmp_path / "waived", allow_unverified=["preprocessing"]).artifact
    for artifact, verdict in ((passed, "passed"), (waived, "unverified")):
        with BackgroundServer(build_dataplane(artifact), ServerOptions(port=0)) as running:
            status, meta = call_json(running, "GET", f"/v2/models/{artifact.name}")
        assert status == 200 and meta["parameters"]["parity"] == verdict
    assert meta["parameters"]["parity_stages"].startswith("preprocessing=unverified,inference=pass")
    assert meta["parameters"]["parity_waived"].startswith(
        "preprocessing by allow_unverified=preprocessing (Python API")


def test_infer_json(server: BackgroundServer) -> None:
    request = {"id": "42", "inputs": [{"name": "image", "shape": list(IMAGE.shape),
                                       "datatype": "FP32", "data": IMAGE.ravel().tolist()}]}
    status, answer = call_json(server, "POST", "/v2/models/tiny/infer", request)
    assert status == 200, answer
    assert answer["model_name"] == "tiny" and answer["model_version"] == "1"
    assert answer["id"] == "42"
    (output,) = answer["outputs"]
    assert output["name"] == "logits" and output["shape"] == [2, 4]
    np.testing.assert_allclose(np.reshape(output["data"], (2, 4)), expected_logits(IMAGE),
                               rtol=1e-5)


def test_infer_binary_tensors_both_ways(server: BackgroundServer) -> None:
    header = json.dumps({"inputs": [{"name": "image", "shape": list(IMAGE.shape),
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": IMAGE.nbytes}}],
                         "outputs": [{"name": "logits",
                                      "parameters": {"binary_data": True}}]}).encode()
    status, headers, body = call(server, "POST", "/v2/models/tiny/versions/1/infer",
                                 header + IMAGE.tobytes(),
                                 {"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"})
    assert status == 200, body[:300]
    length = int(headers["inference-header-content-length"])
    meta = json.loads(body[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
    logits = np.frombuffer(body[length:], "<f4").reshape(2, 4)
    np.testing.assert_allclose(logits, expected_logits(IMAGE), rtol=1e-5)


def test_predict_raw_image_and_multipart(server: BackgroundServer) -> None:
    image = png_bytes(1)
    status, answer = call_json(server, "POST", "/v2/models/tiny/predict", body=image,
                               headers={"Content-Type": "image/png"})
    assert status == 200, answer
    assert answer["model_version"] == "1" and answer["result"]["label"] in range(4)
    assert answer["latency_ms"] > 0
    boundary = "xYzBoundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + image + \
        f"\r\n--{boundary}--\r\n".encode()
    status, multipart = call_json(server, "POST", "/v2/models/tiny/predict", body=form,
                                  headers={"Content-Type":
                                           f"multipart/form-data; boundary={boundary}"})
    assert status == 200, multipart
    assert multipart["result"] == answer["result"]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "words"), [
    ("GET", "/v2/models/nope", None, {}, 404, "nope"),
    ("POST", "/v2/models/nope/infer", b"{}", {}, 404, "nope"),
    ("GET", "/v2/models/tiny/versions/7", None, {}, 404, "7"),
    ("POST", "/v2/models/tiny/infer", b"", {}, 400, "empty"),
    ("POST", "/v2/models/tiny/infer", b"{not json", {}, 400, "JSON"),
    ("POST", "/v2/models/tiny/infer", b"\xff\xfe\x00", {}, 400, "UTF-8"),
    ("POST", "/v2/models/tiny/infer", b"[" * 100_000, {}, 400, "nested"),
    ("POST", "/v2/models/tiny/infer", json.dumps({"inputs": [{
        "name": "image", "shape": [1, 3, 8], "datatype": "FP32",
        "data": [0.0] * 24}]}).encode(), {}, 400, "image"),
    ("POST", "/v2/models/tiny/infer", json.dumps({"inputs": [{
        "name": "pixels", "shape": [1], "datatype": "FP32", "data": [0.0]}]}).encode(), {},
     400, "pixels"),
    ("POST", "/v2/models/tiny/infer", json.dumps({"inputs": [{
        "name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32",
        "data": [0.0] * 5}]}).encode(), {}, 400, "192"),
    ("POST", "/v2/models/tiny/infer", json.dumps({"inputs": [{
        "name": "image", "shape": [1 << 40, 3, 8, 8], "datatype": "FP32",
        "data": [0.0]}]}).encode(), {}, 400, "limit"),
    ("POST", "/v2/models/tiny/infer", b'{"inputs": []}', {"Inference-Header-Content-Length":
                                                          "99999"}, 400, "Inference-Header"),
    ("POST", "/v2/models/tiny/predict", b"", {"Content-Type": "image/png"}, 400, "empty"),
    ("POST", "/v2/models/tiny/predict", b"this is text, not a JPEG", {}, 400, "image"),
    ("POST", "/v2/models/tiny/predict", png_bytes()[:40], {}, 400, "image"),
    ("GET", "/v2/models/tiny/infer", None, {}, 405, "POST"),
    ("GET", "/nothing/here", None, {}, 404, "openapi"),
])
def test_bad_requests_get_json_errors_and_the_server_lives(
    server: BackgroundServer, method: str, path: str, body: bytes | None,
    headers: dict[str, str], status: int, words: str,
) -> None:
    got, answer = call_json(server, method, path, body=body, headers=headers)
    assert got == status, answer
    assert set(answer) == {"error"} and words.lower() in answer["error"].lower()
    assert call_json(server, "GET", "/v2/health/live") == (200, {"live": True})
    assert test_infer_json(server) is None  # the next valid request succeeds


def test_body_over_the_limit_is_413_json(server: BackgroundServer) -> None:
    status, answer = call_json(server, "POST", "/v2/models/tiny/infer",
                               body=b"0" * ((1 << 20) + 10))
    assert status == 413 and "limit" in answer["error"]


def test_multipart_with_too_many_parts_is_413(server: BackgroundServer) -> None:
    boundary = "b"
    parts = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n"
                    for i in range(100))
    status, answer = call_json(server, "POST", "/v2/models/tiny/predict",
                               body=(parts + f"--{boundary}--\r\n").encode(),
                               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 413 and "parts" in answer["error"]


def test_stalled_client_is_dropped_after_the_read_timeout(server: BackgroundServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000000\r\n\r\n{")
        started = time.monotonic()
        # the server closes the connection once the read timeout (2 s) passes, not before
        assert sock.recv(1024) == b""  # raises TimeoutError if it never lets go
        assert 1.5 < time.monotonic() - started < 8
    assert call_json(server, "GET", "/v2/health/live")[0] == 200


def test_metrics_count_requests_by_model_version_and_status(server: BackgroundServer) -> None:
    test_infer_json(server)
    call(server, "GET", "/v2/models/tiny/versions/1/infer")
    status, headers, body = call(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'model_agnostic_requests_total{endpoint="infer",model="tiny",status="200",' \
           'version="1"}' in text
    for name in ("request_duration_seconds", "queue_wait_seconds", "batch_size",
                 "inflight_requests"):
        assert f"model_agnostic_{name}" in text


def test_openapi_lists_every_endpoint(server: BackgroundServer) -> None:
    status, document = call_json(server, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{model_name}",
                 "/v2/models/{model_name}/infer", "/v2/models/{model_name}/ready",
                 "/v2/models/{model_name}/versions/{model_version}/infer",
                 "/v2/models/{model_name}/predict", "/v2/models/{model_name}/explain",
                 "/v2/models/{model_name}/versions/{model_version}/explain",
                 "/v1/models/{model_name}", "/v1/models/{model_name}/metadata",
                 "/v1/models/{model_name}:predict",
                 "/v1/models/{model_name}/versions/{model_version}:predict", "/metrics", "/ui"):
        assert path in document["paths"], path


def test_web_page_is_served(server: BackgroundServer) -> None:
    for path in ("/", "/ui"):
        status, headers, body = call(server, "GET", path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"<form" in body and b'"v2/repository/index"' in body  # relative: any mount


def test_repository_index_lists_served_versions(server: BackgroundServer) -> None:
    status, index = call_json(server, "POST", "/v2/repository/index")
    assert status == 200
    assert [(m["name"], m["versions"], m["state"]) for m in index] == [("tiny", ["1"], "READY")]


def test_binary_header_length_zero_is_one_raw_tensor(server: BackgroundServer) -> None:
    status, headers, body = call(server, "POST", "/v2/models/tiny/infer", IMAGE.tobytes(),
                                 {"Inference-Header-Content-Length": "0",
                                  "Content-Type": "application/octet-stream"})
    assert status == 200, body[:300]
    answer = json.loads(body)
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], (2, 4)),
                               expected_logits(IMAGE), rtol=1e-5)


def test_stop_closes_everything_even_when_the_loops_wake_up_pipe_is_gone(
        tmp_path: Path) -> None:
    config = write_tiny_model(tmp_path, serving='name = "tiny"')
    options = ServerOptions(port=0, threads=2)
    running = BackgroundServer(build_dataplane(config, options=options), options).start()
    url = running.url
    assert call(running, "GET", "/v2/health/live")[0] == 200
    trigger = running._server.trigger
    os.close(trigger.trigger)  # the write end, as if closed under the server
    started = time.monotonic()
    running.stop()  # must not raise
    assert time.monotonic() - started < 5
    assert running._thread is not None and not running._thread.is_alive()
    host, port = url.removeprefix("http://").split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.ImageDecodeError("not an image"), 400),
        (errors.TensorSpecError("wrong shape"), 400),
        (errors.ProtocolError("bad body"), 400),
        (errors.QueueFullError("busy"), 503),
        (errors.ModelNotFoundError("no such model"), 404),
        (errors.InferenceError("the graph failed"), 500),
        (errors.RemoteTimeoutError("upstream slow"), 504),
        (errors.RemoteStatusError("upstream said 500", 500), 502),
        (errors.RemoteConnectionError("upstream down"), 502),
        (errors.MissingDependencyError("pip install x"), 501),
    ],
)
def test_status_of_maps_each_error_kind_to_its_own_http_status(
    error: errors.ModelAgnosticError, status: int
) -> None:
    # the client's fault is 4xx; the model's or an upstream server's is 5xx
    assert status_of(error) == status
