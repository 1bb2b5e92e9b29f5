"""The remote backend against in-process fake servers (v2 binary and JSON, v1) and their faults."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import (
    ConfigError,
    Model,
    ModelLoadError,
    RemoteConnectionError,
    RemoteModel,
    RemoteResponseError,
    RemoteStatusError,
    RemoteTimeoutError,
    TensorSpec,
    TensorSpecError,
    load_model,
)
from model_agnostic.backends import bind
from model_agnostic.backends.remote import HTTPTransport, MockTransport, Response
from model_agnostic import protocol

NAME = "doubler"
X_SPEC = TensorSpec("x", np.dtype(np.float32), (-1, 3))
Y_SPEC = TensorSpec("y", np.dtype(np.float32), (-1, 3))

DOUBLER_SOURCE = '''
import numpy as np
from model_agnostic import Model


class Doubler(Model):
    """y = x * 2 on a server; one raw input is a list of three numbers."""

    input_names = ("x",)
    output_names = ("y",)

    def preprocessing(self, raw):
        return np.asarray(raw, dtype=np.float32)[None]

    def process_result(self, outputs):
        return outputs["y"][0]
'''
_namespace: dict[str, Any] = {"__name__": __name__}
exec(compile(DOUBLER_SOURCE, "doubler_model.py", "exec"), _namespace)
Doubler: type[Model] = _namespace["Doubler"]
RemoteDoubler = bind(Doubler, "remote")


# --------------------------------------------------------------------------- fake server
class FakeServer(ThreadingHTTPServer):
    """Serves model ``doubler`` (y = x * 2) over v2 and v1; ``fault`` breaks its infer answers."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fault = ""
        #: GET /v2: the extensions advertised, or None for a server without that endpoint.
        self.extensions: list[str] | None = ["binary_tensor_data"]
        #: Extra fields merged into every infer answer's JSON (e.g. KServe's nulls).
        self.answer_extra: dict[str, Any] = {}
        self.output_scale = 2.0
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.connections = self.open = self.max_open = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def infer_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[0] == "POST"]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the timeout tests) is expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    timeout = 5
    server: FakeServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.server.open += 1
            self.server.max_open = max(self.server.max_open, self.server.open)

    def finish(self) -> None:
        with self.server.lock:
            self.server.open -= 1
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._record()
        if self.path in (f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/1"):
            doc = protocol.model_metadata(NAME, ["1"], "fake", [X_SPEC], [Y_SPEC])
            self._send(200, json.dumps(doc).encode())
        elif self.path == "/v2" and self.server.extensions is not None:
            doc = {"name": "fake", "version": "1", "extensions": self.server.extensions}
            self._send(200, json.dumps(doc).encode())
        else:
            self._send(404, json.dumps({"error": f"no model at {self.path}"}).encode())
        self._after()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._record()
        fault = self.server.fault
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "slow":
            self.server.release.wait(5)
        if fault in _FAULTS:
            self._send(*_FAULTS[fault])
        elif self.path.startswith("/v1/"):
            rows = np.asarray(json.loads(body)["instances"], dtype=np.float32)
            self._send(200, json.dumps({"predictions": (rows * 2).tolist()}).encode())
        else:
            decoded = protocol.decode_infer_request(body, self.headers.get(protocol.HEADER_LENGTH))
            with np.errstate(invalid="ignore"):  # inf * 0 is NaN on purpose in one test
                outputs = {"y": decoded.inputs["x"] * np.float32(self.server.output_scale)}
            answer, headers = protocol.encode_infer_response(NAME, "1", decoded, outputs)
            if self.server.answer_extra:  # rewrite the JSON part, keep any binary tail
                split = int(headers.get(protocol.HEADER_LENGTH, len(answer)))
                doc = json.loads(answer[:split])
                for key, value in self.server.answer_extra.items():
                    if key == "output_parameters":  # JSON outputs only: binary ones need theirs
                        for entry in doc["outputs"]:
                            if "data" in entry:
                                entry["parameters"] = value
                    else:
                        doc[key] = value
                head = json.dumps(doc).encode()
                answer = head + answer[split:]
                if protocol.HEADER_LENGTH in headers:
                    headers[protocol.HEADER_LENGTH] = str(len(head))
            self._send(200, answer, headers)
        self._after()

    def _record(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers)))

    def _after(self) -> None:
        if self.server.fault == "close_idle":  # keep-alive announced, then the socket closed
            self.close_connection = True

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _v2_json(name: str, array: np.ndarray, datatype: str = "FP32") -> tuple[int, bytes]:
    output = {"name": name, "shape": list(array.shape), "datatype": datatype,
              "data": array.ravel().tolist()}
    return 200, json.dumps({"model_name": NAME, "outputs": [output]}).encode()


_FAULTS: dict[str, tuple[int, bytes]] = {
    "boom": (500, b'{"error": "boom"}'),
    "html": (502, b"<html><body>Bad gateway" + b"!" * 500 + b"</body></html>"),
    "malformed": (200, b'{"model_name": "doubler", "outputs": [{"name": '),
    "wrong_shape": _v2_json("y", np.zeros((2, 3), np.float32)),
    "wrong_dtype": _v2_json("y", np.zeros((1, 3)), "FP64"),
    "missing": _v2_json("z", np.zeros((1, 3), np.float32)),
}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield fake
    fake.release.set()
    fake.shutdown()
    fake.server_close()
    thread.join(5)


@pytest.fixture
def remote(server: FakeServer) -> Iterator[Callable[..., Any]]:
    """Build ``RemoteDoubler``s (or another class) on the fake server; all closed afterwards."""
    made: list[RemoteModel] = []

    def build(cls: type[Model] = RemoteDoubler, url: str = "", **kwargs: Any) -> Any:
        kwargs.setdefault("model_name", NAME)
        model = cls(url or server.url, **kwargs)
        made.append(model)
        return model

    yield build
    for model in made:
        model.close()


# ---------------------------------------------------------------------------- protocols
@pytest.mark.parametrize("binary", [True, False])
def test_v2_predicts_with_binary_or_json_tensors(
    server: FakeServer, remote: Callable[..., Any], binary: bool
) -> None:
    model = remote(binary=binary)
    np.testing.assert_array_equal(model.predict([1, 2, 3]), [2, 4, 6])
    results = model.predict_batch([[1, 1, 1], [0, -1, 5]])
    np.testing.assert_array_equal(np.stack(results), [[2, 2, 2], [0, -2, 10]])
    sent_binary = [protocol.HEADER_LENGTH in h for _, _, h in server.infer_requests()]
    assert sent_binary == [binary, binary]


def test_v2_reads_the_signature_from_the_server(remote: Callable[..., Any]) -> None:
    model = remote()
    assert [(s.name, s.dtype, s.shape) for s in model.inputs + model.outputs] == [
        ("x", np.float32, (None, 3)), ("y", np.float32, (None, 3))
    ]
    assert model.input_names == ("x",) and model.output_names == ("y",)


def test_v2_plain_remote_model_adopts_the_server_names(remote: Callable[..., Any]) -> None:
    model = remote(RemoteModel)
    assert model.input_names == ("x",) and model.output_names == ("y",)
    out = model.infer({"x": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((2, 3), 2, np.float32))


def test_v2_pinned_version_uses_version_routes_and_reports_it(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote(model_version="1")
    assert model.last_model_version is None
    model.predict([1, 2, 3])
    assert server.requests[-1][1] == f"/v2/models/{NAME}/versions/1/infer"
    assert model.last_model_version == "1"
    seen: list[str | None] = []
    thread = threading.Thread(target=lambda: seen.append(model.last_model_version))
    thread.start()
    thread.join()
    assert seen == [None]  # per thread: another thread has not inferred yet


def test_v1_predicts_through_the_predict_route(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote(protocol="v1")
    np.testing.assert_array_equal(model.predict([1, 2, 3]), [2, 4, 6])
    method, path, _ = server.requests[-1]
    assert (method, path) == ("POST", f"/v1/models/{NAME}:predict")
    assert [spec.shape for spec in model.inputs + model.outputs] == [None, None]


def test_load_model_builds_a_remote_model_from_a_config(
    server: FakeServer, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    (tmp_path / "doubler_model.py").write_text(DOUBLER_SOURCE, encoding="utf-8")
    config = write_config(
        'backend = "remote"\n[model]\nclass = "doubler_model.py:Doubler"\n'
        f'[remote]\nurl = "{server.url}"\nmodel_name = "{NAME}"\ntimeout_s = 5\n'
        'max_connections = 2\n[remote.headers]\nX-Token = "abc"\n'
    )
    model = load_model(config)
    try:
        assert isinstance(model, RemoteModel) and model.backend_name == "remote"
        np.testing.assert_array_equal(model.predict([0.5, 1, 2]), [1, 2, 4])
    finally:
        model.close()
    assert all(h.get("X-Token") == "abc" for _, _, h in server.requests)


# ------------------------------------------------------------------ pooling, concurrency
def test_sequential_calls_reuse_one_keep_alive_connection(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote()
    for i in range(5):
        np.testing.assert_array_equal(model.predict([i, i, i]), [2 * i] * 3)
    assert server.connections == 1 and len(server.requests) == 7  # /v2, metadata, 5 infers


def test_concurrent_threads_share_a_bounded_pool(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote(max_connections=4)

    def work(seed: int) -> bool:
        rng = np.random.default_rng(seed)
        for _ in range(20):
            raw = rng.random(3, dtype=np.float32)
            if not np.array_equal(model.predict(raw), raw * 2):
                return False
        return True

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(work, range(16)))
    assert len(server.infer_requests()) == 16 * 20
    assert server.max_open <= 4
    assert model.transport.idle_connections <= 4


def test_closed_model_releases_its_connections(remote: Callable[..., Any]) -> None:
    with remote() as model:
        model.predict([1, 2, 3])
        assert model.transport.idle_connections == 1
    assert model.transport.idle_connections == 0
    with pytest.raises(RemoteConnectionError, match="closed"):
        model.predict([1, 2, 3])


def test_stale_keep_alive_connection_is_retried_once_transparently(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    server.fault = "close_idle"
    model = remote()
    for i in range(3):
        np.testing.assert_array_equal(model.predict([i, 0, 1]), [2 * i, 0, 2])
    assert server.connections == 5  # /v2, metadata, then a fresh connection per infer
    assert len(server.requests) == 5  # the stale attempts never reached the handler


def test_a_dropped_request_is_retried_only_on_a_reused_connection(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote()
    server.fault = "drop"
    with pytest.raises(RemoteConnectionError, match="without answering"):
        model.predict([1, 2, 3])
    assert len(server.infer_requests()) == 2  # reused connection, then one fresh retry
    with pytest.raises(RemoteConnectionError):
        model.predict([1, 2, 3])
    assert len(server.infer_requests()) == 3  # a fresh connection is never retried


# ------------------------------------------------------------------------------ faults
def test_connection_refused_is_a_fast_connection_error() -> None:
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RemoteConnectionError, match="is the server running") as info:
            RemoteDoubler(url, NAME, timeout_s=5)
    assert time.monotonic() - started < 1
    assert url in str(info.value)


def test_slow_server_is_a_timeout_error_within_the_timeout(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote(timeout_s=0.3)
    server.fault = "slow"
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match="0.3 s"):
        model.predict([1, 2, 3])
    assert 0.25 < time.monotonic() - started < 0.8


def test_waiting_for_a_busy_pool_is_bounded_by_the_timeout(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    shared = HTTPTransport(server.url, max_connections=1)
    patient = remote(timeout_s=5, transport=shared)
    hasty = remote(timeout_s=0.3, transport=shared)
    server.fault = "slow"
    holder = threading.Thread(target=patient.predict, args=([1, 2, 3],))
    holder.start()  # holds the only connection until the server is released
    while not server.infer_requests():
        time.sleep(0.005)
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match="busy"):
        hasty.predict([1, 2, 3])
    assert 0.25 < time.monotonic() - started < 0.8
    server.release.set()
    holder.join()
    assert server.max_open == 1 and len(server.infer_requests()) == 1


def test_server_error_carries_its_status_and_message(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote()
    server.fault = "boom"
    with pytest.raises(RemoteStatusError, match="boom") as info:
        model.predict([1, 2, 3])
    assert info.value.status == 500


def test_non_json_error_body_is_quoted_briefly(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote()
    server.fault = "html"
    with pytest.raises(RemoteStatusError, match="Bad gateway") as info:
        model.predict([1, 2, 3])
    assert info.value.status == 502 and "</html>" not in str(info.value)


@pytest.mark.parametrize(
    ("fault", "binary", "message"),
    [
        ("malformed", True, "malformed"),
        ("malformed", False, "malformed"),
        ("wrong_shape", True, "2 rows|1 rows"),
        ("wrong_dtype", True, "float64"),
        ("missing", True, "lacks output 'y'"),
    ],
)
def test_malformed_or_mismatched_answers_are_response_errors(
    server: FakeServer, remote: Callable[..., Any], fault: str, binary: bool, message: str
) -> None:
    model = remote(binary=binary)
    server.fault = fault
    with pytest.raises(RemoteResponseError, match=message):
        model.predict([1, 2, 3])
    server.fault = ""
    np.testing.assert_array_equal(model.predict([1, 2, 3]), [2, 4, 6])


def test_unknown_model_fails_to_load(remote: Callable[..., Any]) -> None:
    with pytest.raises(ModelLoadError, match="does not serve model 'nope'"):
        remote(model_name="nope")


def test_names_that_differ_from_the_server_fail_to_load(remote: Callable[..., Any]) -> None:
    class Images(Model):
        input_names = ("image",)

    with pytest.raises(ModelLoadError, match=r"\['image'\].*inputs \['x'\]"):
        remote(bind(Images, "remote"))


def test_inputs_are_checked_before_sending(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    model = remote()
    with pytest.raises(TensorSpecError, match=r"input 'x': preprocessing gave .* float32.* the model "
                                              r"expects \[-1, 3\] float32"):
        model.predict(np.ones((1, 4), np.float32))
    with pytest.raises(TensorSpecError, match="the request gave"):
        model.check_inputs({"x": np.ones((1, 4), np.float32)}, "the request")
    assert server.infer_requests() == []


@pytest.mark.parametrize(
    "settings",
    [{"protocol": "v3"}, {"url": "ftp://example.com"}, {"timeout_s": 0},
     {"max_connections": 0}],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any]) -> None:
    kwargs = {"url": "http://127.0.0.1:1", "model_name": NAME, **settings}
    with pytest.raises(ConfigError):
        RemoteDoubler(**kwargs)


# ------------------------------------------------------------------ v1 over MockTransport
class Pair(Model):
    input_names = ("a", "b")
    output_names = ("p", "q")
    v1_dtypes = {"q": "int64"}


def _recording(answer: Any, calls: list[tuple[str, str, Any, Mapping[str, str]]]) -> MockTransport:
    def handler(method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Response:
        calls.append((method, path, json.loads(body or b"null"), headers))
        return Response(200, {"Content-Type": "application/json"}, json.dumps(answer).encode())

    return MockTransport(handler)


def test_v1_single_input_sends_rows_as_instances() -> None:
    calls: list[Any] = []
    transport = _recording({"predictions": [[1.5, 2], [3, 4]]}, calls)
    model = RemoteModel("http://x", "m", protocol="v1", transport=transport,
                        headers={"Authorization": "Bearer t"})
    out = model.infer({"input": np.array([[1, 2], [3, 4]], np.float32)})
    (method, path, body, headers), = calls
    assert (method, path, body) == ("POST", "/v1/models/m:predict", {"instances": [[1, 2], [3, 4]]})
    assert headers["Authorization"] == "Bearer t"
    assert out["output"].dtype == np.float32
    np.testing.assert_array_equal(out["output"], [[1.5, 2], [3, 4]])


def test_v1_several_inputs_and_outputs_go_by_name() -> None:
    calls: list[Any] = []
    answer = {"predictions": [{"p": [0.5], "q": 3}, {"p": [1.5], "q": 4}]}
    model = bind(Pair, "remote")("http://x", "m", protocol="v1", model_version="7",
                                 transport=_recording(answer, calls))
    out = model.infer({"a": np.array([[1], [2]]), "b": np.array([True, False])})
    assert calls[0][1] == "/v1/models/m/versions/7:predict"
    assert calls[0][2] == {"instances": [{"a": [1], "b": True}, {"a": [2], "b": False}]}
    assert out["p"].dtype == np.float32 and out["q"].dtype == np.int64
    np.testing.assert_array_equal(out["q"], [3, 4])


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"predictions": [[1.0]]}, "2 rows"),
        ({"outputs": [[1.0], [2.0]]}, "'predictions'"),
        ({"predictions": [[1.0], [2.0, 3.0]]}, "rectangular"),
        ({"predictions": [{"other": 1}, {"other": 2}]}, "'output'"),
    ],
)
def test_v1_answers_that_do_not_fit_are_response_errors(answer: Any, message: str) -> None:
    model = RemoteModel("http://x", "m", protocol="v1", transport=_recording(answer, []))
    with pytest.raises(RemoteResponseError, match=message):
        model.infer({"input": np.zeros((2, 1), np.float32)})


def test_v1_several_outputs_need_named_predictions() -> None:
    model = bind(Pair, "remote")("http://x", "m", protocol="v1",
                                 transport=_recording({"predictions": [[1], [2]]}, []))
    with pytest.raises(RemoteResponseError, match="keyed by output name"):
        model.infer({"a": np.zeros((2, 1)), "b": np.zeros((2, 1))})


def test_v1_non_finite_inputs_are_refused_before_sending() -> None:
    calls: list[Any] = []
    model = RemoteModel("http://x", "m", protocol="v1", transport=_recording({}, calls))
    with pytest.raises(TensorSpecError, match="finite"):
        model.infer({"input": np.array([[np.nan]], np.float32)})
    assert calls == []


def test_transport_exceptions_become_typed_remote_errors() -> None:
    def handler(method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Response:
        raise TimeoutError("took too long")

    model = RemoteModel("http://x", "m", protocol="v1", transport=MockTransport(handler))
    with pytest.raises(RemoteTimeoutError, match="timeout_s=30"):
        model.infer({"input": np.zeros((1, 1), np.float32)})


# --------------------------------------------------------------- negotiation, tolerance
@pytest.mark.parametrize(
    ("extensions", "binary", "sends_binary", "why"),
    [
        (["binary_tensor_data"], "auto", True, "advertises binary_tensor_data"),
        ([], "auto", False, "advertises no extensions"),
        (["model_repository"], "auto", False, "not binary_tensor_data"),
        (None, "auto", False, "GET /v2 answered 404"),
        ([], True, True, "forced"),
        (["binary_tensor_data"], False, False, "binary = false"),
    ],
)
def test_binary_tensors_only_where_the_server_advertises_them_or_the_user_forces_them(
    server: FakeServer, remote: Callable[..., Any], extensions: Any, binary: Any,
    sends_binary: bool, why: str,
) -> None:
    server.extensions = extensions
    model = remote(binary=binary)
    assert why in model.transfer and why in repr(model)
    np.testing.assert_array_equal(model.predict([1, 2, 3]), [2, 4, 6])
    assert [protocol.HEADER_LENGTH in h for _, _, h in server.infer_requests()] == [sends_binary]


def test_a_bad_binary_setting_is_a_config_error(remote: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError, match='true, false or "auto"'):
        remote(binary="yes")


@pytest.mark.parametrize("binary", [True, False])
def test_nulls_for_optional_fields_are_accepted_as_kserve_sends_them(
    server: FakeServer, remote: Callable[..., Any], binary: bool
) -> None:
    """KServe 0.21's server answers ``"parameters": null`` on each output and
    ``"model_version": null``; the client failed on it before (issue 12)."""
    server.answer_extra = {"output_parameters": None, "model_version": None, "id": None,
                           "parameters": None}
    model = remote(binary=binary)  # binary requested: KServe answers JSON, which is fine too
    np.testing.assert_array_equal(model.predict([1, 2, 3]), [2, 4, 6])
    assert model.last_model_version is None


def test_non_finite_outputs_are_refused_unless_allowed(
    server: FakeServer, remote: Callable[..., Any]
) -> None:
    server.output_scale = float("inf")
    with pytest.raises(RemoteResponseError, match=r"output 'y' holds 3 non-finite value\(s\)"):
        remote().predict([1, 2, 0])
    result = remote(allow_non_finite=True).predict([1, 2, 0])
    assert np.isinf(result[:2]).all() and np.isnan(result[2])
