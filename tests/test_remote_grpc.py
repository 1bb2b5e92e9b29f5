"""RemoteModel over gRPC (``transport="grpc"``): against our server (the tiny model and
CheXNet), a fake gRPC server that answers wrongly on purpose, and KServe 0.21's gRPC
endpoint; and KServe's own ``InferenceGRPCClient`` against our server's gRPC port."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import load_model
from model_agnostic.backends.grpc_transport import GrpcTransport
from model_agnostic.backends.remote import RemoteModel
from model_agnostic.errors import (
    ConfigError,
    ModelLoadError,
    RemoteConnectionError,
    RemoteResponseError,
    RemoteStatusError,
    RemoteTimeoutError,
)
from model_agnostic.protocol.grpc import convert
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.conftest import ROOT, XRAY, assert_same_findings
from tests.peers.fixtures import peer_python
from tests.peers.servers import free_port
from tests.serving_fixtures import expected_logits, write_tiny_model
from tests.tiny_models import TinyNet

grpc = pytest.importorskip("grpc")
pytest.importorskip("waitress")
pytest.importorskip("prometheus_client")

pb = convert.messages()
IMAGE = np.random.default_rng(11).random((3, 3, 8, 8), dtype=np.float32)
TOKEN = "remote-grpc-token-0123456789"
ATOL = 1e-5
DIGITS = ROOT / "examples" / "digits"
KSERVE_CLIENT = ROOT / "tests" / "peers" / "kserve_grpc_client.py"


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"),
                            serving='name = "tiny"\nmax_queue_delay_ms = 1.0')


@pytest.fixture(scope="module")
def server(tiny_config: Path) -> Iterator[BackgroundServer]:
    options = ServerOptions(port=0, grpc_port=0, threads=4)
    with BackgroundServer(build_dataplane(tiny_config, options=options), options) as running:
        yield running


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path
            ) -> Iterator[BackgroundServer]:
    """The tiny model behind a bearer token."""
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(TOKEN)
    options = ServerOptions(port=0, grpc_port=0, auth_token_file=str(token))
    with BackgroundServer(build_dataplane(tiny_config, options=options), options) as running:
        yield running


def tiny(address: str, **settings: Any) -> RemoteModel:
    """TinyNet's hooks on the remote backend over gRPC."""
    model: RemoteModel = TinyNet.with_backend("remote")(
        url=address, model_name="tiny", transport="grpc", **settings)
    return model


@pytest.mark.interop(client="RemoteModel", server="ours", transport="gRPC")
# ------------------------------------------------------------------- against our server
def test_tiny_over_grpc_equals_local_and_http_binary_bit_for_bit(
        server: BackgroundServer, tiny_config: Path) -> None:
    with tiny(str(server.grpc_address)) as over_grpc, TinyNet.with_backend("remote")(
            url=server.url, model_name="tiny") as over_http:
        assert "gRPC" in over_grpc.transfer and "gRPC" in repr(over_grpc)
        assert over_grpc.url == f"grpc://{server.grpc_address}"
        assert over_http.transfer.startswith("binary")
        assert over_grpc.inputs == over_http.inputs and over_grpc.outputs == over_http.outputs
        logits = over_grpc.infer({"image": IMAGE})["logits"]
        assert over_grpc.last_model_version == "1"
        assert logits.tobytes() == over_http.infer({"image": IMAGE})["logits"].tobytes()
        np.testing.assert_allclose(logits, load_model(tiny_config).infer({"image": IMAGE})["logits"],
                                   rtol=0, atol=ATOL)
        assert over_grpc.predict_batch(list(IMAGE)) == over_http.predict_batch(list(IMAGE))


def test_grpc_url_forms_and_threads_sharing_one_channel(server: BackgroundServer) -> None:
    port = str(server.grpc_address).rsplit(":", 1)[1]
    for url in (f"grpc://127.0.0.1:{port}/", f"localhost:{port}"):
        with tiny(url) as model:
            np.testing.assert_allclose(model.infer({"image": IMAGE})["logits"],
                                       expected_logits(IMAGE), rtol=1e-5)
    with tiny(str(server.grpc_address)) as model, ThreadPoolExecutor(8) as pool:
        images = [IMAGE * np.float32(k) for k in range(16)]
        answers = list(pool.map(lambda x: model.infer({"image": x})["logits"], images))
    for image, logits in zip(images, answers):
        np.testing.assert_allclose(logits, expected_logits(image), rtol=1e-5, atol=1e-6)


def test_a_config_file_picks_grpc(server: BackgroundServer, write_config: Callable[..., Path]
                                  ) -> None:
    config = write_config(
        'backend = "remote"\n\n[model]\nclass = "tests.tiny_models:TinyNet"\n\n[remote]\n'
        f'url = "grpc://{server.grpc_address}"\nmodel_name = "tiny"\ntransport = "grpc"\n'
        "timeout_s = 10\n")
    with load_model(config) as model:
        assert isinstance(model, RemoteModel) and isinstance(model.transport, GrpcTransport)
        np.testing.assert_allclose(model.infer({"image": IMAGE})["logits"],
                                   expected_logits(IMAGE), rtol=1e-5)


def test_an_unknown_model_fails_to_load_naming_it(server: BackgroundServer) -> None:
    with pytest.raises(ModelLoadError, match=r"does not serve model 'missing' .*NOT_FOUND"):
        RemoteModel(str(server.grpc_address), "missing", transport="grpc")
    with pytest.raises(ModelLoadError, match=r"model 'tiny' version '9'"):
        RemoteModel(str(server.grpc_address), "tiny", model_version="9", transport="grpc")


def test_a_server_that_is_down_is_a_fast_connection_error_naming_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RemoteConnectionError, match=rf"grpc://{address} ModelMetadata failed"):
        tiny(address)
    assert time.monotonic() - started < 5


def test_the_http_port_given_as_the_grpc_one_says_so(server: BackgroundServer) -> None:
    with pytest.raises(RemoteConnectionError, match="answers HTTP/1, not gRPC"):
        tiny(server.url.removeprefix("http://"))


def test_the_token_travels_as_authorization_metadata(guarded: BackgroundServer) -> None:
    address = str(guarded.grpc_address)
    for headers, wanted in ((None, "UNAUTHENTICATED: .*authorization: Bearer <token>"),
                            ({"Authorization": "Bearer wrong-token-0123456789"}, "not valid")):
        with tiny(address, headers=headers) as model:  # metadata needs no token
            with pytest.raises(RemoteStatusError, match=wanted) as caught:
                model.infer({"image": IMAGE})
            assert caught.value.status == 401
    with tiny(address, headers={"Authorization": f"Bearer {TOKEN}"}) as model:
        np.testing.assert_allclose(model.infer({"image": IMAGE})["logits"],
                                   expected_logits(IMAGE), rtol=1e-5)


@pytest.mark.parametrize("settings, message", [
    ({"protocol": "v1"}, "protocol 'v1' has no gRPC form"),
    ({"binary": False}, "gRPC does not have"),
    ({"transport": "pigeon"}, r"transport 'pigeon' is not one of \['http', 'grpc'\]"),
    ({"url": "http://127.0.0.1:8001"}, "not a gRPC address"),
    ({"url": "grpcs://example.com:443"}, "TLS over gRPC is not supported"),
    ({"url": "127.0.0.1"}, "must be host:port"),
    ({"url": "grpc://127.0.0.1:8001/v2"}, "must be host:port"),
    ({"headers": {"Bad Header": "x"}}, "cannot be gRPC metadata"),
])
def test_bad_grpc_settings_are_config_errors(settings: dict[str, Any], message: str) -> None:
    kwargs = {"url": "127.0.0.1:1", "model_name": "tiny", "transport": "grpc", **settings}
    with pytest.raises(ConfigError, match=message):
        RemoteModel(**kwargs)


# --------------------------------------------------------------- a server that misbehaves
METADATA = {"name": "tiny", "versions": ["1"], "platform": "fake",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}]}


def answer(outputs: dict[str, np.ndarray], version: str = "1") -> Any:
    return convert.encode_infer_response("tiny", version, convert.DecodedRequest({}, None, ""),
                                         outputs)


@contextmanager
def fake_server(infer: Callable[[Any, Any], Any]) -> Iterator[str]:
    """A gRPC server with the tiny model's metadata whose ModelInfer is ``infer``."""

    def handler(method: Callable[[Any, Any], Any], name: str) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=getattr(pb, f"{name}Request").FromString,
            response_serializer=getattr(pb, f"{name}Response").SerializeToString)

    handlers = {"ModelMetadata": handler(lambda r, c: convert.metadata_message(METADATA),
                                         "ModelMetadata"),
                "ModelInfer": handler(infer, "ModelInfer")}
    server = grpc.server(ThreadPoolExecutor(4), handlers=[
        grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(10)


def test_what_is_sent_raw_contents_requested_outputs_and_metadata() -> None:
    seen: list[tuple[Any, Any]] = []

    def infer(request: Any, context: Any) -> Any:
        seen.append((request, dict(context.invocation_metadata())))
        return answer({"logits": expected_logits(IMAGE)}, version="7")

    with fake_server(infer) as address, tiny(address, headers={"X-Team": "radiology"}) as model:
        model.infer({"image": IMAGE})
        assert model.last_model_version == "7"
    (request, metadata), = seen
    assert request.model_name == "tiny" and request.model_version == ""
    assert [o.name for o in request.outputs] == ["logits"]
    assert list(request.raw_input_contents) == [IMAGE.tobytes()]
    assert not request.inputs[0].HasField("contents") and metadata["x-team"] == "radiology"


BAD_ANSWERS = [
    ("nan", lambda: answer({"logits": np.full((3, 4), np.nan, np.float32)}),
     "output 'logits' holds 12 non-finite value.*allow_non_finite = true"),
    ("dtype", lambda: answer({"logits": expected_logits(IMAGE).astype(np.float64)}),
     r"output 'logits' came back as \[3, 4\] float64, expected \[-1, 4\] float32 with 3 rows"),
    ("rows", lambda: answer({"logits": np.zeros((2, 4), np.float32)}),
     r"output 'logits' came back as \[2, 4\] float32"),
    ("missing", lambda: answer({"scores": np.zeros((3, 4), np.float32)}),
     r"lacks output 'logits'; it has \['scores'\]"),
    ("malformed", lambda: pb.ModelInferResponse(
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="logits", datatype="FP32",
                                                         shape=[3, 4])],
        raw_output_contents=[b"\0" * 5]), "malformed inference response: .*has 5 bytes"),
]


@pytest.mark.parametrize("build, message", [case[1:] for case in BAD_ANSWERS],
                         ids=[case[0] for case in BAD_ANSWERS])
def test_answers_that_do_not_fit_are_response_errors_naming_the_output(
        build: Callable[[], Any], message: str) -> None:
    with fake_server(lambda r, c: build()) as address, tiny(address) as model:
        with pytest.raises(RemoteResponseError, match=message) as caught:
            model.infer({"image": IMAGE})
    assert caught.match(r"grpc://127\.0\.0\.1:\d+ ModelInfer")


def test_non_finite_outputs_pass_when_allowed() -> None:
    logits = np.full((3, 4), np.inf, np.float32)
    with fake_server(lambda r, c: answer({"logits": logits}, "")) as address:
        with tiny(address, allow_non_finite=True) as model:
            assert np.isinf(model.infer({"image": IMAGE})["logits"]).all()
            assert model.last_model_version is None  # an empty version is none reported


def test_server_statuses_timeouts_and_busy_servers() -> None:
    def infer(request: Any, context: Any) -> Any:
        kind = dict(context.invocation_metadata()).get("kind")
        if kind == "slow":
            time.sleep(2)
        if kind == "busy":  # UNAVAILABLE sent by the server: a status, not a lost connection
            context.abort(grpc.StatusCode.UNAVAILABLE, "the queue is full")
        if kind == "quota":  # RESOURCE_EXHAUSTED for a quota is "busy", not "too large"
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests in flight")
        if kind == "bug":
            raise RuntimeError("boom")
        return answer({"logits": expected_logits(IMAGE)})

    with fake_server(infer) as address:
        with tiny(address, headers={"kind": "slow"}, timeout_s=0.3) as model:
            started = time.monotonic()
            with pytest.raises(RemoteTimeoutError, match=r"ModelInfer gave no answer within "
                                                         r"timeout_s=0\.3"):
                model.infer({"image": IMAGE})
            assert time.monotonic() - started < 1.5
        for kind, status, code in (("busy", 503, "UNAVAILABLE: the queue is full"),
                                   ("quota", 503, "RESOURCE_EXHAUSTED: too many"),
                                   ("bug", 500, "UNKNOWN")):
            with tiny(address, headers={"kind": kind}) as model:
                with pytest.raises(RemoteStatusError, match=f"answered gRPC {code}") as caught:
                    model.infer({"image": IMAGE})
                assert caught.value.status == status


# ----------------------------------------------------------- KServe's client against ours
def run_kserve_client(address: str, model: str, inputs: dict[str, np.ndarray],
                      folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """tests/peers/kserve_grpc_client.py in the kserve venv: its report and the outputs."""
    python = peer_python("kserve")
    np.savez(folder / "inputs.npz", **inputs)
    done = subprocess.run([str(python), str(KSERVE_CLIENT), address, model,
                           str(folder / "inputs.npz"), str(folder / "outputs.npz")],
                          capture_output=True, text=True, timeout=300, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(folder / "outputs.npz") as saved:
        return report, {name: saved[name] for name in saved.files}


@pytest.mark.interop(client="KServe InferenceGRPCClient", server="ours", transport="gRPC")
@pytest.mark.slow
def test_kserves_grpc_client_against_our_server(server: BackgroundServer, tiny_config: Path,
                                                tmp_path: Path) -> None:
    report, outputs = run_kserve_client(str(server.grpc_address), "tiny", {"image": IMAGE},
                                        tmp_path)
    assert (report["live"], report["ready"], report["model_ready"]) == (True, True, True)
    assert report["metadata"] == {**{k: METADATA[k] for k in ("name", "inputs", "outputs")},
                                  "platform": "onnxruntime_onnx"}
    assert report["raw_input_contents"] == 1 and report["id"] == "kserve"
    assert report["model_version"] == "1" and report["outputs"] == {"logits": ["float32", [3, 4]]}
    local = load_model(tiny_config).infer({"image": IMAGE})["logits"]
    np.testing.assert_allclose(outputs["logits"], local, rtol=0, atol=ATOL)


# --------------------------------------------------------------------------------- CheXNet
@pytest.fixture(scope="module")
def chexnet_server(chexnet_onnx_config: Path) -> Iterator[BackgroundServer]:
    options = ServerOptions(port=0, grpc_port=0)
    with BackgroundServer(build_dataplane(chexnet_onnx_config, options=options),
                          options) as running:
        yield running


@pytest.fixture(scope="module")
def local_chexnet(chexnet_onnx_config: Path) -> Any:
    return load_model(chexnet_onnx_config)


def remote_chexnet(local: Any, address: str, **settings: Any) -> Any:
    """The very class of the local model, on the remote backend."""
    return type(local).hooks_class.with_backend("remote")(url=address, model_name="chexnet",
                                                          **settings)


@pytest.mark.interop(client="RemoteModel", server="ours", transport="gRPC")
@pytest.mark.slow
def test_chexnet_over_grpc_equals_local_onnx_runtime_and_http_binary(
        chexnet_server: BackgroundServer, local_chexnet: Any) -> None:
    theirs = local_chexnet.predict(XRAY)
    crops = {"image": local_chexnet.prepare(XRAY)["image"][:3]}
    with remote_chexnet(local_chexnet, str(chexnet_server.grpc_address),
                        transport="grpc") as over_grpc, \
            remote_chexnet(local_chexnet, chexnet_server.url, binary=True) as over_http:
        ours = over_grpc.predict(XRAY)
        assert_same_findings(ours, theirs, atol=ATOL)
        both = over_grpc.infer(crops)
        assert sorted(both) == ["features", "probabilities"]
        for name, array in over_http.infer(crops).items():
            assert both[name].dtype == array.dtype and both[name].tobytes() == array.tobytes()
        local = local_chexnet.infer(crops)
        for name, array in both.items():
            np.testing.assert_allclose(array, local[name], rtol=0, atol=ATOL)
        only = over_grpc.infer(crops, outputs=["probabilities"])
        assert list(only) == ["probabilities"]
        assert only["probabilities"].tobytes() == both["probabilities"].tobytes()


@pytest.mark.interop(client="KServe InferenceGRPCClient", server="ours", transport="gRPC")
@pytest.mark.slow
def test_kserves_grpc_client_gets_chexnet_from_our_server(
        chexnet_server: BackgroundServer, local_chexnet: Any, tmp_path: Path) -> None:
    crops = {"image": local_chexnet.prepare(XRAY)["image"][:2]}
    report, outputs = run_kserve_client(str(chexnet_server.grpc_address), "chexnet", crops,
                                        tmp_path)
    assert report["raw_input_contents"] == 1
    assert [t["name"] for t in report["metadata"]["outputs"]] == ["probabilities", "features"]
    for name, array in local_chexnet.infer(crops).items():
        np.testing.assert_allclose(outputs[name], array, rtol=0, atol=ATOL)


# --------------------------------------------------------------- against KServe's gRPC
@pytest.fixture(scope="module")
def kserve_grpc(kserve_server: Any) -> str:
    """The gRPC address of KServe's ModelServer hosting ``peer_models`` (the session's)."""
    address = kserve_server.grpc_address
    with grpc.insecure_channel(address) as channel:  # its start waited for HTTP only
        grpc.channel_ready_future(channel).result(timeout=60)
    return str(address)


@pytest.mark.interop(client="RemoteModel", server="KServe", transport="gRPC")
@pytest.mark.slow
def test_kserve_grpc_chexnet_equals_local_onnx_runtime(kserve_grpc: str,
                                                       local_chexnet: Any) -> None:
    with remote_chexnet(local_chexnet, kserve_grpc, transport="grpc") as remote:
        ours = remote.predict(XRAY)  # ten crops, 6 MB: under KServe's 8 MiB message limit
        crops = {"image": local_chexnet.prepare(XRAY)["image"][:2]}
        outputs = remote.infer(crops)
        assert remote.last_model_version is None  # KServe reports none
    theirs = local_chexnet.predict(XRAY)
    assert_same_findings(ours, theirs, atol=ATOL)
    for name, array in local_chexnet.infer(crops).items():
        assert outputs[name].dtype == np.float32
        np.testing.assert_allclose(outputs[name], array, rtol=0, atol=ATOL)


@pytest.mark.interop(client="RemoteModel", server="KServe", transport="gRPC")
@pytest.mark.slow
def test_kserve_grpc_digits_from_a_config_equals_local(kserve_grpc: str,
                                                       write_config: Callable[..., Path]) -> None:
    config = write_config(
        f'backend = "remote"\n\n[model]\nclass = "{(DIGITS / "model.py").as_posix()}:Digits"\n\n'
        f'[remote]\nurl = "grpc://{kserve_grpc}"\nmodel_name = "digits"\ntransport = "grpc"\n')
    local = load_model(DIGITS / "artifact")
    with np.load(DIGITS / "test_split.npz") as split:
        images = list(split["X"][:64])
    with load_model(config) as remote:
        ours = remote.predict_batch(images)  # one request of 64 rows
        pixels = np.stack([local.prepare(image)["pixels"][0] for image in images[:8]])
        logits = remote.infer({"pixels": pixels})["logits"]
    theirs = local.predict_batch(images)
    assert [r["digit"] for r in ours] == [r["digit"] for r in theirs]
    np.testing.assert_allclose([r["probabilities"] for r in ours],
                               [r["probabilities"] for r in theirs], rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits, local.infer({"pixels": pixels})["logits"], rtol=0,
                               atol=ATOL)


@pytest.mark.slow
def test_kserve_unknown_model_over_grpc_is_a_load_error(kserve_grpc: str) -> None:
    with pytest.raises(ModelLoadError, match="does not serve model 'missing'.*NOT_FOUND"):
        RemoteModel(kserve_grpc, "missing", transport="grpc")
