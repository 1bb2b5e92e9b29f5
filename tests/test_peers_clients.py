"""Third-party clients against third-party servers, and RemoteModel over gRPC against
MLServer: the rest of the conformance matrix (docs/backends.md), with real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import load_model
from tests.conftest import ROOT
from tests.peers.servers import PeerServer

pytestmark = pytest.mark.slow

DIGITS = ROOT / "examples" / "digits"
ATOL = 1e-5


def digits_pixels(count: int) -> np.ndarray:
    with np.load(DIGITS / "test_split.npz") as split:
        images = split["X"][:count]
    return (images.astype(np.float32) / np.float32(16))[:, None]


@pytest.fixture(scope="module")
def local_digits() -> Any:
    return load_model(DIGITS / "artifact")


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> PeerServer:
    server: PeerServer = request.getfixturevalue(f"{request.param}_server")
    return server


def _cell(client: str, server: str, transport: str) -> pytest.MarkDecorator:
    return pytest.mark.interop(client=client, server=server, transport=transport)


# KServe reads an unlabelled body as binary tensors (tritonclient sends JSON without a
# Content-Type), MLServer has no binary tensors: each in the form it takes.
@pytest.mark.parametrize(("peer", "binary"), [
    pytest.param("kserve", True, marks=_cell("tritonclient", "KServe", "HTTP")),
    pytest.param("mlserver", False, marks=_cell("tritonclient", "MLServer", "HTTP")),
], indirect=["peer"])
def test_tritonclient_http_gets_the_local_logits_from_the_peer(
        peer: PeerServer, binary: bool, local_digits: Any) -> None:
    http = pytest.importorskip("tritonclient.http")
    pixels = digits_pixels(16)
    client = http.InferenceServerClient(peer.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_model_ready("digits")
        tensor = http.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        output = http.InferRequestedOutput("logits", binary_data=binary)
        logits = client.infer("digits", [tensor], outputs=[output]).as_numpy("logits")
    finally:
        client.close()
    np.testing.assert_allclose(logits, local_digits.infer({"pixels": pixels})["logits"],
                               rtol=0, atol=ATOL)


@pytest.mark.parametrize("peer", ["kserve"], indirect=True)
def test_kserve_fails_tritonclients_json_request_for_want_of_a_content_type(
        peer: PeerServer) -> None:
    http = pytest.importorskip("tritonclient.http")
    pixels = digits_pixels(2)
    client = http.InferenceServerClient(peer.url.removeprefix("http://"))
    try:
        tensor = http.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=False)
        with pytest.raises(http.InferenceServerException, match="inference-header-content-length"):
            client.infer("digits", [tensor],
                         outputs=[http.InferRequestedOutput("logits", binary_data=False)])
    finally:
        client.close()


@pytest.mark.parametrize("peer", [
    pytest.param("kserve", marks=_cell("tritonclient", "KServe", "gRPC")),
    pytest.param("mlserver", marks=_cell("tritonclient", "MLServer", "gRPC")),
], indirect=True)
def test_tritonclient_grpc_gets_the_local_logits_from_the_peer(
        peer: PeerServer, local_digits: Any) -> None:
    grpc = pytest.importorskip("tritonclient.grpc")
    pixels = digits_pixels(16)
    client = grpc.InferenceServerClient(str(peer.grpc_address))
    try:
        assert client.is_server_live()
        tensor = grpc.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        logits = client.infer("digits", [tensor],
                              outputs=[grpc.InferRequestedOutput("logits")]).as_numpy("logits")
    finally:
        client.close()
    np.testing.assert_allclose(logits, local_digits.infer({"pixels": pixels})["logits"],
                               rtol=0, atol=ATOL)


@pytest.mark.interop(client="RemoteModel", server="MLServer", transport="gRPC")
@pytest.mark.parametrize("peer", ["mlserver"], indirect=True)
def test_remote_model_over_grpc_gets_the_local_logits_from_mlserver(
        peer: PeerServer, local_digits: Any, tmp_path: Path) -> None:
    config = tmp_path / "digits.toml"
    config.write_text(
        f'backend = "remote"\n\n[model]\nclass = "{(DIGITS / "model.py").as_posix()}:Digits"\n\n'
        f'[remote]\nurl = "{peer.grpc_address}"\nmodel_name = "digits"\ntransport = "grpc"\n',
        encoding="utf-8")
    model = load_model(config)
    try:
        pixels = digits_pixels(16)
        logits = model.infer({"pixels": pixels})["logits"]
    finally:
        model.close()
    np.testing.assert_allclose(logits, local_digits.infer({"pixels": pixels})["logits"],
                               rtol=0, atol=ATOL)
