"""Interop with real third-party v2 servers: KServe 0.21's ModelServer and MLServer 1.7.

Both host the same ONNX files (CheXNet with seeded random weights, the shipped digits
artifact) with a small ONNX Runtime runtime (tests/peers), as real processes on loopback,
one per server for the whole session (tests/peers/fixtures.py). ``RemoteModel`` against
each must give what the local ONNX Runtime backend gives, within 1e-5. The raw protocol
checks below pin down each server's quirks (docs/backends.md, "Interop with KServe and
MLServer"), so a new server version that changes them shows up here.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import load_model
from model_agnostic.errors import RemoteStatusError
from model_agnostic.tensors import describe_spec
from tests.conftest import ROOT, XRAY
from tests.peers.servers import PeerServer

pytestmark = pytest.mark.slow

DIGITS = ROOT / "examples" / "digits"
DIGITS_CLASS = (DIGITS / "model.py").as_posix() + ":Digits"
ATOL = 1e-5
BINARY_HEADER = "inference-header-content-length"


# ------------------------------------------------------------------- helpers
@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(server: PeerServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Answer:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()


def post_json(server: PeerServer, path: str, doc: dict[str, Any]) -> Answer:
    return call(server, "POST", path, json.dumps(doc).encode(),
                {"Content-Type": "application/json"})


def digits_pixels(count: int) -> np.ndarray:
    """The first ``count`` test images, preprocessed: float32 [count, 1, 8, 8]."""
    with np.load(DIGITS / "test_split.npz") as split:
        images = split["X"][:count]
    return (images.astype(np.float32) / np.float32(16))[:, None]


def digits_request(pixels: np.ndarray, **extra: Any) -> dict[str, Any]:
    """A JSON v2 request for the digits model."""
    return {"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                        "data": pixels.ravel().tolist()}], **extra}


def binary_request(pixels: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The same request with the input as binary tensor data, asking for a binary output."""
    header = json.dumps({
        "inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": pixels.nbytes}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }).encode()
    return header + pixels.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def peer(request: pytest.FixtureRequest) -> PeerServer:
    """The session's server of the kind named by the test's parameter."""
    server: PeerServer = request.getfixturevalue(f"{request.param}_server")
    return server


@pytest.fixture(scope="module")
def local_chexnet(chexnet_onnx_config: Path) -> Any:
    return load_model(chexnet_onnx_config)


@pytest.fixture(scope="module")
def local_digits() -> Any:
    return load_model(DIGITS / "artifact")


def remote_chexnet(local: Any, server: PeerServer, binary: bool | str) -> Any:
    """The very class of the local model, on the remote backend."""
    return type(local).hooks_class.with_backend("remote")(
        url=server.url, model_name="chexnet", binary=binary)


@pytest.fixture
def remote_digits(tmp_path: Path) -> Iterator[Any]:
    """``remote_digits(server, binary)``: Digits from a config file with backend "remote"."""
    made: list[Any] = []

    def make(server: PeerServer, binary: bool | str) -> Any:
        config = tmp_path / f"digits-{server.kind}-{binary}.toml"
        value = f'"{binary}"' if isinstance(binary, str) else str(binary).lower()
        config.write_text(
            f'backend = "remote"\n\n[model]\nclass = "{DIGITS_CLASS}"\n\n[remote]\n'
            f'url = "{server.url}"\nmodel_name = "digits"\nbinary = {value}\n',
            encoding="utf-8")
        model = load_model(config)
        made.append(model)
        return model

    yield make
    for model in made:
        model.close()


# Where each server takes binary tensors (KServe does, MLServer does not) and plain JSON.
def _cell(server: str, transport: str) -> pytest.MarkDecorator:
    return pytest.mark.interop(client="RemoteModel", server=server, transport=transport)


MODES = [pytest.param("kserve", False, id="kserve-json", marks=_cell("KServe", "HTTP JSON")),
         pytest.param("kserve", True, id="kserve-binary", marks=_cell("KServe", "HTTP binary")),
         pytest.param("mlserver", False, id="mlserver-json", marks=_cell("MLServer", "HTTP JSON"))]


# ------------------------------------------- RemoteModel == local ONNX Runtime
@pytest.mark.parametrize(("peer", "binary"), MODES, indirect=["peer"])
def test_remote_chexnet_predicts_what_local_onnx_runtime_predicts(
        peer: PeerServer, binary: bool, local_chexnet: Any) -> None:
    with remote_chexnet(local_chexnet, peer, binary) as remote:
        ours = {f["finding"]: f["probability"] for f in remote.predict(XRAY)}
    theirs = {f["finding"]: f["probability"] for f in local_chexnet.predict(XRAY)}
    assert sorted(ours) == sorted(theirs)
    np.testing.assert_allclose([ours[k] for k in theirs], list(theirs.values()), rtol=0,
                               atol=ATOL)


@pytest.mark.parametrize(("peer", "binary"), MODES, indirect=["peer"])
def test_remote_chexnet_infer_outputs_equal_local_onnx_runtime(
        peer: PeerServer, binary: bool, local_chexnet: Any) -> None:
    inputs = {"image": local_chexnet.prepare(XRAY)["image"][:2]}  # two of the ten crops
    with remote_chexnet(local_chexnet, peer, binary) as remote:
        outputs = remote.infer(inputs)
    expected = local_chexnet.infer(inputs)["probabilities"]
    assert outputs["probabilities"].dtype == np.float32
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("peer", "binary"), MODES, indirect=["peer"])
def test_remote_digits_predicts_what_local_onnx_runtime_predicts(
        peer: PeerServer, binary: bool, local_digits: Any, remote_digits: Any) -> None:
    with np.load(DIGITS / "test_split.npz") as split:
        images = list(split["X"][:64])
    ours = remote_digits(peer, binary).predict_batch(images)  # one request of 64 rows
    theirs = local_digits.predict_batch(images)
    assert [r["digit"] for r in ours] == [r["digit"] for r in theirs]
    np.testing.assert_allclose([r["probabilities"] for r in ours],
                               [r["probabilities"] for r in theirs], rtol=0, atol=ATOL)


@pytest.mark.parametrize(("peer", "binary"), MODES, indirect=["peer"])
def test_remote_digits_infer_outputs_equal_local_onnx_runtime(
        peer: PeerServer, binary: bool, local_digits: Any, remote_digits: Any) -> None:
    inputs = {"pixels": digits_pixels(64)}
    logits = remote_digits(peer, binary).infer(inputs)["logits"]
    assert logits.shape == (64, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, local_digits.infer(inputs)["logits"], rtol=0, atol=ATOL)


@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_remote_model_negotiates_json_with_mlserver_which_lacks_binary(
        peer: PeerServer, local_chexnet: Any, local_digits: Any, remote_digits: Any) -> None:
    """``binary="auto"`` is the default; MLServer does not advertise ``binary_tensor_data``
    (and answers a binary request with a 500), so RemoteModel speaks JSON to it and says so;
    forcing ``binary=True`` gets the server's error, not a silent fallback."""
    with remote_chexnet(local_chexnet, peer, binary="auto") as remote:
        assert remote.binary is False and "not binary_tensor_data" in remote.transfer
        ours = {f["finding"]: f["probability"] for f in remote.predict(XRAY)}
    theirs = {f["finding"]: f["probability"] for f in local_chexnet.predict(XRAY)}
    np.testing.assert_allclose([ours[k] for k in theirs], list(theirs.values()), rtol=0,
                               atol=ATOL)
    inputs = {"pixels": digits_pixels(8)}
    np.testing.assert_allclose(remote_digits(peer, "auto").infer(inputs)["logits"],
                               local_digits.infer(inputs)["logits"], rtol=0, atol=ATOL)
    with pytest.raises(RemoteStatusError, match="HTTP 500"):
        remote_digits(peer, True).infer(inputs)


@pytest.mark.parametrize("peer", ["kserve", "mlserver"], indirect=True)
def test_remote_model_reads_the_signature_from_the_peers_metadata(
        peer: PeerServer, remote_digits: Any) -> None:
    model = remote_digits(peer, False)
    assert [(s.name, describe_spec(s)) for s in model.inputs] == [
        ("pixels", "[-1, 1, 8, 8] float32")]
    assert [(s.name, describe_spec(s)) for s in model.outputs] == [("logits", "[-1, 10] float32")]
    model.infer({"pixels": digits_pixels(1)})
    assert model.last_model_version is None  # neither server versions these models


# --------------------------------------------------------- KServe 0.21 quirks
@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_does_not_advertise_binary_tensor_data_though_it_speaks_it(
        peer: PeerServer) -> None:
    assert call(peer, "GET", "/v2").json() == {
        "name": "kserve", "version": "0.21.0", "extensions": ["model_repository_extension"]}
    pixels = digits_pixels(2)
    body, headers = binary_request(pixels)
    answer = call(peer, "POST", "/v2/models/digits/infer", body,
                  {**headers, "Content-Type": "application/octet-stream"})
    assert answer.status == 200, answer.body[:300]
    assert int(answer.headers[BINARY_HEADER]) < len(answer.body)


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_metadata_has_the_graph_signature_and_null_versions(peer: PeerServer) -> None:
    assert call(peer, "GET", "/v2/models/digits").json() == {
        "name": "digits", "versions": None, "platform": "",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_json_answer_sends_null_parameters_and_model_version(
        peer: PeerServer, local_digits: Any) -> None:
    pixels = digits_pixels(2)
    answer = post_json(peer, "/v2/models/digits/infer", digits_request(pixels))
    assert answer.status == 200, answer.body[:300]
    doc = answer.json()
    assert doc["model_version"] is None and doc["parameters"] is None  # null, not absent
    assert isinstance(doc["id"], str) and doc["id"]  # made up: the request had none
    (output,) = doc["outputs"]
    assert {k: output[k] for k in ("name", "shape", "datatype", "parameters")} == {
        "name": "logits", "shape": [2, 10], "datatype": "FP32", "parameters": None}
    np.testing.assert_array_equal(np.float32(output["data"]).reshape(2, 10),
                                  local_digits.infer({"pixels": pixels})["logits"])


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_sends_binary_outputs_when_an_output_asks_for_binary_data(
        peer: PeerServer, local_digits: Any) -> None:
    pixels = digits_pixels(2)
    doc = digits_request(pixels, outputs=[{"name": "logits", "parameters": {"binary_data": True}}])
    answer = post_json(peer, "/v2/models/digits/infer", doc)
    assert answer.status == 200, answer.body[:300]
    split = int(answer.headers[BINARY_HEADER])
    header = json.loads(answer.body[:split])
    assert header["model_version"] is None and "parameters" not in header
    assert header["outputs"] == [{"name": "logits", "shape": [2, 10], "datatype": "FP32",
                                  "parameters": {"binary_data_size": 80}}]
    np.testing.assert_array_equal(
        np.frombuffer(answer.body[split:], "<f4").reshape(2, 10),
        local_digits.infer({"pixels": pixels})["logits"])


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_ignores_request_level_binary_data_output_once_outputs_are_listed(
        peer: PeerServer) -> None:
    alone = post_json(peer, "/v2/models/digits/infer",
                      digits_request(digits_pixels(1), parameters={"binary_data_output": True}))
    assert BINARY_HEADER in alone.headers  # honoured when no output is listed
    listed = post_json(peer, "/v2/models/digits/infer",
                       digits_request(digits_pixels(1), parameters={"binary_data_output": True},
                                      outputs=[{"name": "logits"}]))
    assert listed.status == 200 and BINARY_HEADER not in listed.headers
    assert len(listed.json()["outputs"][0]["data"]) == 10  # JSON, against the spec's default


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_takes_binary_requests_only_when_not_labelled_json(peer: PeerServer) -> None:
    body, headers = binary_request(digits_pixels(1))
    answer = call(peer, "POST", "/v2/models/digits/infer", body,
                  {**headers, "Content-Type": "application/json"})
    assert (answer.status, answer.json()) == (
        400, {"detail": "There was an error parsing the body"})


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_answers_any_model_version_with_501(peer: PeerServer) -> None:
    answer = call(peer, "GET", "/v2/models/digits/versions/1")
    assert (answer.status, answer.json()) == (501, {"error": "Model versioning not supported yet."})


# -------------------------------------------------------- MLServer 1.7 quirks
@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_mlserver_advertises_no_extensions(peer: PeerServer) -> None:
    assert call(peer, "GET", "/v2").json() == {
        "name": "mlserver", "version": "1.7.1", "extensions": []}


@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_mlserver_metadata_repeats_the_declared_signature(peer: PeerServer) -> None:
    assert call(peer, "GET", "/v2/models/digits").json() == {
        "name": "digits", "versions": [], "platform": "", "parameters": {},
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}


@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_mlserver_json_answer_omits_model_version_and_tags_outputs_with_a_codec(
        peer: PeerServer, local_digits: Any) -> None:
    pixels = digits_pixels(2)
    answer = post_json(peer, "/v2/models/digits/infer", digits_request(pixels))
    assert answer.status == 200, answer.body[:300]
    doc = answer.json()
    assert "model_version" not in doc and doc["parameters"] == {}
    assert answer.headers["ce-id"] == doc["id"]  # CloudEvents headers on every answer
    (output,) = doc["outputs"]
    assert output["parameters"] == {"content_type": "np"}
    np.testing.assert_array_equal(np.float32(output["data"]).reshape(2, 10),
                                  local_digits.infer({"pixels": pixels})["logits"])


@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_mlserver_answers_json_when_binary_outputs_are_asked_for(peer: PeerServer) -> None:
    doc = digits_request(digits_pixels(1), parameters={"binary_data_output": True},
                         outputs=[{"name": "logits", "parameters": {"binary_data": True}}])
    answer = post_json(peer, "/v2/models/digits/infer", doc)
    assert answer.status == 200 and BINARY_HEADER not in answer.headers
    assert len(answer.json()["outputs"][0]["data"]) == 10


@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_mlserver_fails_a_binary_tensor_request_with_a_plain_text_500(peer: PeerServer) -> None:
    """FastAPI rejects the non-JSON body, then its 422 handler crashes decoding the raw
    bytes as UTF-8: the client gets a bare 500 (422 if the bytes happen to be UTF-8)."""
    body, headers = binary_request(digits_pixels(1))
    answer = call(peer, "POST", "/v2/models/digits/infer", body,
                  {**headers, "Content-Type": "application/octet-stream"})
    assert (answer.status, answer.body) == (500, b"Internal Server Error")
    assert answer.headers["content-type"].startswith("text/plain")
    labelled_json = call(peer, "POST", "/v2/models/digits/infer", body,
                         {**headers, "Content-Type": "application/json"})
    assert labelled_json.status == 422
    assert labelled_json.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_mlserver_answers_an_unknown_model_version_with_404(peer: PeerServer) -> None:
    answer = call(peer, "GET", "/v2/models/digits/versions/1")
    assert answer.status == 404
    assert answer.json() == {"error": "Model digits with version 1 not found"}
