"""The Open Inference Protocol over gRPC, end to end: tritonclient.grpc (and our own messages
on a bare channel) against the server on loopback, sharing the data plane with HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import protocol
from model_agnostic.errors import ConfigError, ProtocolError
from model_agnostic.protocol.grpc import convert
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.conftest import ROOT, XRAY
from tests.serving_fixtures import expected_logits, write_tiny_model

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
pytest.importorskip("waitress")
pytest.importorskip("prometheus_client")
from tritonclient.utils import InferenceServerException  # noqa: E402

pb = convert.messages()
IMAGE = np.random.default_rng(7).random((3, 3, 8, 8), dtype=np.float32)
LIMIT = 256 << 10  # max_request_bytes of the tiny server: 341 rows of IMAGE
TOKEN = "grpc-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = write_tiny_model(tmp_path_factory.mktemp("tiny"),
                              serving='name = "tiny"\nmax_queue_delay_ms = 1.0')
    options = ServerOptions(port=0, grpc_port=0, max_request_bytes=LIMIT, threads=4)
    with BackgroundServer(build_dataplane(config, options=options), options) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[Any]:
    triton = grpcclient.InferenceServerClient(str(server.grpc_address))
    yield triton
    triton.close()


def triton_input(array: np.ndarray, name: str = "image") -> Any:
    tensor = grpcclient.InferInput(name, list(array.shape), protocol.datatype_of(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


def rpc(address: str, method: str, request: Any, metadata: Any = None) -> Any:
    """One call with our own messages on a bare channel."""
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=getattr(pb, f"{method}Response").FromString)
        return call(request, metadata=metadata, timeout=30)


def refused(address: str, request: Any) -> tuple[Any, str]:
    with pytest.raises(grpc.RpcError) as caught:
        rpc(address, "ModelInfer", request)
    return caught.value.code(), caught.value.details()


def code_of(error: InferenceServerException) -> str:
    return str(error.status()).removeprefix("StatusCode.")


# ------------------------------------------------------------------------ health, metadata
@pytest.mark.interop(client="tritonclient", server="ours", transport="gRPC")
def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    with pytest.raises(InferenceServerException) as caught:  # like HTTP's 404
        client.is_model_ready("missing")
    assert code_of(caught.value) == "NOT_FOUND"
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "model_agnostic" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("tiny", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "image", "datatype": "FP32", "shape": ["-1", "3", "8", "8"]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "4"]}]


# ------------------------------------------------------------------------------ inference
@pytest.mark.interop(client="tritonclient", server="ours", transport="gRPC")
def test_raw_inference_equals_http_bit_for_bit(server: BackgroundServer, client: Any) -> None:
    result = client.infer("tiny", [triton_input(IMAGE)], request_id="g1",
                          outputs=[grpcclient.InferRequestedOutput("logits")])
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "g1")
    assert len(response.raw_output_contents) == 1  # raw, not typed contents
    over_grpc = result.as_numpy("logits")
    np.testing.assert_allclose(over_grpc, expected_logits(IMAGE), rtol=1e-5)
    http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = httpclient.InferInput("image", list(IMAGE.shape), "FP32")
    tensor.set_data_from_numpy(IMAGE, binary_data=True)
    over_http = http.infer("tiny", [tensor], model_version="1").as_numpy("logits")
    http.close()
    assert over_grpc.dtype == over_http.dtype and over_grpc.tobytes() == over_http.tobytes()


def test_typed_contents_and_our_client_direction(server: BackgroundServer) -> None:
    address = str(server.grpc_address)
    typed = pb.ModelInferRequest(model_name="tiny", id="t")
    typed.inputs.add(name="image", datatype="FP32", shape=IMAGE.shape).contents.fp32_contents.extend(
        IMAGE.reshape(-1).tolist())
    raw = convert.encode_infer_request("tiny", {"image": IMAGE}, model_version="1",
                                       outputs=["logits"], request_id="r")
    answers = [convert.decode_infer_response(rpc(address, "ModelInfer", m)) for m in (typed, raw)]
    (typed_out, typed_meta), (raw_out, raw_meta) = answers
    assert typed_out["logits"].tobytes() == raw_out["logits"].tobytes()
    np.testing.assert_allclose(raw_out["logits"], expected_logits(IMAGE), rtol=1e-5)
    assert (typed_meta["id"], raw_meta["id"], raw_meta["model_version"]) == ("t", "r", "1")


def _request(shape: Any = IMAGE.shape, raw: Any = (IMAGE.tobytes(),), datatype: str = "FP32",
             name: str = "image", model: str = "tiny", **typed: Any) -> Any:
    message = pb.ModelInferRequest(model_name=model, raw_input_contents=list(raw))
    tensor = message.inputs.add(name=name, datatype=datatype, shape=list(shape))
    for field, values in typed.items():
        getattr(tensor.contents, field).extend(values)
    return message


def _unknown_output() -> Any:
    message = _request()
    message.outputs.add(name="probs")
    return message


BAD = [
    ("short-raw", lambda: _request(raw=[b"\0" * 700]), "INVALID_ARGUMENT",
     "input 'image': raw_input_contents[0] has 700 bytes, expected 2304 for shape [3, 3, 8, 8] FP32"),
    ("typed-count", lambda: _request(raw=[], fp32_contents=[0.0] * 10), "INVALID_ARGUMENT",
     "contents.fp32_contents has 10 elements, expected 576"),
    ("typed-field", lambda: _request(raw=[], int64_contents=[0] * 576), "INVALID_ARGUMENT",
     "FP32 data go in contents.fp32_contents, got contents.int64_contents"),
    ("raw-count", lambda: _request(raw=[IMAGE.tobytes()] * 2), "INVALID_ARGUMENT",
     "2 raw_input_contents for 1 inputs"),
    ("unknown-input", lambda: _request(name="pixels"), "INVALID_ARGUMENT",
     "unknown input 'pixels'; the model's inputs are ['image']"),
    ("unknown-model", lambda: _request(model="missing"), "NOT_FOUND",
     "no model is named 'missing'"),
    ("wrong-datatype", lambda: _request(raw=[IMAGE.astype(np.float64).tobytes()],
                                        datatype="FP64"), "INVALID_ARGUMENT",
     "the model expects [-1, 3, 8, 8] FP32"),
    ("unknown-datatype", lambda: _request(datatype="FLOAT32"), "INVALID_ARGUMENT",
     "unknown datatype 'FLOAT32'; expected one of ['BOOL'"),
    ("element-limit", lambda: _request(shape=[1 << 14, 1 << 14, 3], raw=[b""]),
     "INVALID_ARGUMENT", "has 805306368 elements, more than the limit"),
    ("unknown-output", _unknown_output, "INVALID_ARGUMENT", "unknown output 'probs' requested"),
    ("no-inputs", lambda: pb.ModelInferRequest(model_name="tiny"), "INVALID_ARGUMENT",
     "the request has no inputs"),
]


@pytest.mark.parametrize("build, code, message", [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_requests_get_their_status_and_the_server_lives(
        server: BackgroundServer, client: Any, build: Callable[[], Any], code: str,
        message: str) -> None:
    got, details = refused(str(server.grpc_address), build())
    assert got.name == code and message in details, details
    assert client.infer("tiny", [triton_input(IMAGE)]).as_numpy("logits").shape == (3, 4)


def test_a_message_over_the_limit_is_resource_exhausted(client: Any) -> None:
    rows = np.zeros((400, 3, 8, 8), np.float32)  # 300 KiB > 256 KiB
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny", [triton_input(rows)])
    assert code_of(caught.value) == "RESOURCE_EXHAUSTED"
    assert client.infer("tiny", [triton_input(rows[:300])]).as_numpy("logits").shape == (300, 4)


def test_metrics_count_grpc_requests_by_status(server: BackgroundServer, client: Any) -> None:
    client.infer("tiny", [triton_input(IMAGE)])
    refused(str(server.grpc_address), _request(name="pixels"))
    assert server.dataplane.metrics is not None
    text = server.dataplane.metrics.exposition()[0].decode()
    for status in ("200", "400"):
        assert re.search(r'model_agnostic_requests_total\{endpoint="grpc_infer",model="tiny",'
                         rf'status="{status}",version="1"\}} [1-9]', text), text


def test_model_control_is_permission_denied_when_off(client: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("tiny")
    assert code_of(caught.value) == "PERMISSION_DENIED" and "model_control" in caught.value.message()


# ---------------------------------------------------------- repository, auth, hot swap
@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repository")
    write_tiny_model(root / "tiny" / "1")
    (root / "token").write_text(TOKEN)
    options = ServerOptions(port=0, grpc_port=0, auth_token_file=str(root / "token"),
                            model_control=True, poll_interval_s=0.1)
    with BackgroundServer(build_dataplane(root, options=options), options) as running:
        yield running


def test_the_token_is_needed_where_http_needs_it(repository: BackgroundServer) -> None:
    triton = grpcclient.InferenceServerClient(str(repository.grpc_address))
    assert triton.get_model_metadata("tiny", as_json=True)["name"] == "tiny"  # no token needed
    assert triton.get_model_repository_index(as_json=True)["models"]
    for headers, wanted in ((None, "'authorization: Bearer <token>'"),
                            ({"authorization": "Bearer wrong-token-0123456789"}, "not valid")):
        for call in (lambda h: triton.infer("tiny", [triton_input(IMAGE)], headers=h),
                     lambda h: triton.load_model("tiny", headers=h),
                     lambda h: triton.unload_model("tiny", headers=h)):
            with pytest.raises(InferenceServerException) as caught:
                call(headers)
            assert code_of(caught.value) == "UNAUTHENTICATED"
            assert wanted in caught.value.message()
    result = triton.infer("tiny", [triton_input(IMAGE)], headers=AUTH)
    np.testing.assert_allclose(result.as_numpy("logits"), expected_logits(IMAGE), rtol=1e-5)
    triton.close()


def test_repository_index_unload_and_load(repository: BackgroundServer) -> None:
    triton = grpcclient.InferenceServerClient(str(repository.grpc_address))
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": "tiny", "version": "1", "state": "READY"}]
    triton.unload_model("tiny", headers=AUTH)
    with pytest.raises(InferenceServerException) as caught:
        triton.is_model_ready("tiny")
    assert code_of(caught.value) == "NOT_FOUND"
    triton.load_model("tiny", headers=AUTH)
    assert triton.is_model_ready("tiny", "1")
    assert triton.infer("tiny", [triton_input(IMAGE)], headers=AUTH).as_numpy("logits").shape == (3, 4)
    triton.close()


def test_hot_swap_keeps_answering(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_tiny_model(root / "tiny" / "1", scale=1.0)
    options = ServerOptions(port=0, grpc_port=0, poll_interval_s=0.1)
    with BackgroundServer(build_dataplane(root, options=options), options) as server:
        triton = grpcclient.InferenceServerClient(str(server.grpc_address))
        seen: list[tuple[str, np.ndarray]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                try:
                    result = triton.infer("tiny", [triton_input(IMAGE)])
                    seen.append((result.get_response().model_version, result.as_numpy("logits")))
                except BaseException as exc:  # every failure counts
                    errors.append(exc)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            write_tiny_model(root / "tiny" / ".staging-2", scale=2.0)
            (root / "tiny" / ".staging-2").rename(root / "tiny" / "2")
            deadline = time.monotonic() + 30
            while not any(version == "2" for version, _ in seen[-1:]):
                assert time.monotonic() < deadline, "version 2 never answered"
                time.sleep(0.05)
        finally:
            stop.set()
            asker.join(30)
            triton.close()
    assert errors == [] and {version for version, _ in seen} == {"1", "2"}
    for version, logits in seen:
        np.testing.assert_allclose(logits, expected_logits(IMAGE, float(version)), rtol=1e-5)


# --------------------------------------------------------------------------------- CheXNet
@pytest.mark.slow
@pytest.mark.interop(client="tritonclient", server="ours", transport="gRPC")
def test_chexnet_over_grpc_equals_http_bit_for_bit(chexnet_onnx_config: Path) -> None:
    options = ServerOptions(port=0, grpc_port=0)
    with BackgroundServer(build_dataplane(chexnet_onnx_config, options=options), options) as server:
        with server.dataplane.repository.acquire("chexnet") as served:
            arrays = served.model.prepare(XRAY)  # TenCrop: 10 rows of [3, 224, 224]
        (name, array), = arrays.items()
        triton = grpcclient.InferenceServerClient(str(server.grpc_address))
        over_grpc = triton.infer("chexnet", [triton_input(array, name)]).get_response()
        triton.close()
        http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = httpclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=True)
        over_http = http.infer("chexnet", [tensor])
        http.close()
    outputs, _ = convert.decode_infer_response(over_grpc)
    assert list(outputs) == [o["name"] for o in over_http.get_response()["outputs"]]
    for output, value in outputs.items():
        assert value.shape[0] == 10
        assert value.tobytes() == over_http.as_numpy(output).tobytes()


# ------------------------------------------------------------------ CLI, SIGTERM, drain
def test_serve_grpc_port_drains_accepted_calls_on_sigterm(tmp_path: Path) -> None:
    # a lone request waits 1.5 s for batch-mates: calls stay in flight across the SIGTERM
    config = write_tiny_model(tmp_path, serving='name = "tiny"\nmax_queue_delay_ms = 1500.0')
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "model_agnostic", "serve", str(config), "--port", "0",
             "--grpc-port", "0", "--drain-timeout", "20"], cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=sink, stderr=sink, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 90
        while not (found := re.search(r"and gRPC on (127\.0\.0\.1:\d+) ", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        address = found[1]
        triton = grpcclient.InferenceServerClient(address)
        assert triton.is_server_ready()
        with ThreadPoolExecutor(3) as pool:
            pending = [pool.submit(triton.infer, "tiny", [triton_input(IMAGE)])
                       for _ in range(3)]
            time.sleep(0.5)  # accepted, each waiting for its batch
            process.send_signal(signal.SIGTERM)
            results = [job.result(timeout=30).as_numpy("logits") for job in pending]
        for logits in results:
            np.testing.assert_allclose(logits, expected_logits(IMAGE), rtol=1e-5)
        triton.close()
        assert process.wait(30) == 0, log.read_text()
        assert "every accepted request was answered" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_port_in_use_or_no_grpcio_is_a_clear_error(tmp_path: Path) -> None:
    config = write_tiny_model(tmp_path, serving='name = "tiny"')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = ServerOptions(port=0, grpc_port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match=r"cannot listen for gRPC on 127\.0\.0\.1:\d+"):
            BackgroundServer(build_dataplane(config, options=options), options).start()
    code = ("import sys\nsys.modules['grpc'] = None\n"
            "from model_agnostic import MissingDependencyError\n"
            "from model_agnostic.serving import BackgroundServer, DataPlane, ModelRepository\n"
            "from model_agnostic.serving import ServerOptions\n"
            "try:\n"
            "    BackgroundServer(DataPlane(ModelRepository()), ServerOptions(port=0, grpc_port=0)).start()\n"
            "except MissingDependencyError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'grpc' package" in done.stdout and "pip install 'model-agnostic[serve]'" in done.stdout


def test_grpc_port_in_the_config_and_not_with_ray(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from model_agnostic.cli import main
    from model_agnostic.config import resolve

    config = write_tiny_model(tmp_path, serving='name = "tiny"')
    config.write_text(config.read_text() + "\n[server]\ngrpc_port = 0\n")
    assert ServerOptions.from_config(resolve(config).server).grpc_port == 0
    assert main(["serve", str(config), "--engine", "ray"]) == 1
    assert "gRPC (--grpc-port, [server] grpc_port) is served by the built-in engine only" in (
        capsys.readouterr().err)
    config.write_text(config.read_text().replace("grpc_port = 0", 'grpc_port = "8001"'))
    with pytest.raises(ConfigError, match="grpc_port"):
        _ = resolve(config).server


# --------------------------------------------------------------- the messages themselves
def test_the_proto_is_wire_compatible_with_tritons() -> None:
    """Every RPC we serve has Triton's request and response types, field by field."""
    from tritonclient.grpc import service_pb2 as triton

    def fields(message: Any) -> dict[str, Any]:
        return {f.name: (f.number, f.type, f.is_repeated,
                         f.message_type and f.message_type.full_name,
                         f.containing_oneof and f.containing_oneof.name)
                for f in message.fields}

    def same(ours: Any, theirs: Any, seen: set[str]) -> list[str]:
        if ours.full_name in seen:
            return []
        seen.add(ours.full_name)
        wrong = [] if fields(ours) == fields(theirs) else [ours.full_name]
        for field in ours.fields:
            if field.message_type is not None:
                wrong += same(field.message_type,
                              theirs.fields_by_name[field.name].message_type, seen)
        return wrong

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert pb.DESCRIPTOR.package == "inference" and len(service.methods) == 9
    wrong: list[str] = []
    for method in service.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.client_streaming, method.server_streaming) == (False, False)
        wrong += same(method.input_type, other.input_type, set())
        wrong += same(method.output_type, other.output_type, set())
    assert wrong == []


def test_the_generated_code_is_what_the_readme_command_writes(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools regenerates the messages")
    folder = ROOT / "model_agnostic" / "protocol" / "grpc"
    (tmp_path / "inference.proto").write_bytes((folder / "inference.proto").read_bytes())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
                    "--pyi_out=.", "inference.proto"], cwd=tmp_path, check=True)
    generated = (tmp_path / "inference_pb2.py").read_text().replace(
        "_descriptor_pool.Default().AddSerializedFile(",
        "_descriptor_pool.DescriptorPool().AddSerializedFile(", 1)
    assert generated == (folder / "inference_pb2.py").read_text()
    assert (tmp_path / "inference_pb2.pyi").read_text() == (folder / "inference_pb2.pyi").read_text()


def test_conversion_both_ways_and_its_refusals() -> None:
    arrays = {"text": np.array([[b"a", b""], [b"\xff\x00", b"long" * 10]], dtype=object),
              "flags": np.array([True, False]), "half": np.arange(4, dtype=np.float16)}
    request = convert.encode_infer_request("m", arrays)
    decoded = convert.decode_infer_request(pb.ModelInferRequest.FromString(
        request.SerializeToString()))
    assert decoded.outputs is None and list(decoded.inputs) == list(arrays)
    for name, array in arrays.items():
        assert decoded.inputs[name].dtype == array.dtype
        assert decoded.inputs[name].tolist() == array.tolist()
    response = convert.encode_infer_response("m", "3", decoded, decoded.inputs)
    back, meta = convert.decode_infer_response(response)
    assert meta["model_version"] == "3" and back["text"].tolist() == arrays["text"].tolist()

    def refusal(message: Any) -> str:
        with pytest.raises(ProtocolError) as caught:
            convert.decode_infer_request(message, max_elements=100)
        return str(caught.value)

    assert "out of range for INT8 [-128, 127]" in refusal(_request([2], [], "INT8", int_contents=[1, 300]))
    assert "FP16 has no typed contents field" in refusal(_request([1], [], "FP16"))
    assert "must hold bytes 0 or 1" in refusal(_request([2], [b"\x01\x02"], "BOOL"))
    assert "both typed contents and raw_input_contents[0]" in refusal(
        _request([1], [b"\0" * 4], fp32_contents=[1.0]))
    assert "BYTES element 0 declares 9 bytes" in refusal(_request([1], [b"\x09\0\0\0ab"], "BYTES"))
    assert "more than the limit 100" in refusal(_request([11, 10], [b""]))
    with pytest.raises(ProtocolError, match="complex64 has no Open Inference"):
        convert.encode_infer_response("m", "1", decoded, {"text": np.zeros(2, np.complex64)})


def test_metadata_both_ways() -> None:
    document = {"name": "m", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                "outputs": [{"name": "y", "datatype": "INT64", "shape": None}],
                "parameters": {"parity": "passed"}}
    back = convert.metadata_document(convert.metadata_message(document))
    assert back["inputs"] == document["inputs"] and back["outputs"][0]["shape"] == []
    inputs, _ = protocol.specs_from_metadata(back)
    assert inputs[0].shape == (None, 3)
