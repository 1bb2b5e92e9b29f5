"""Protocol conformance with a real third-party client: tritonclient[http] against our server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.serving_fixtures import expected_logits, write_tiny_model

http = pytest.importorskip("tritonclient.http")
pytest.importorskip("waitress")

pytestmark = pytest.mark.interop(client="tritonclient", server="ours", transport="HTTP")

IMAGE = np.random.default_rng(7).random((3, 3, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = write_tiny_model(tmp_path_factory.mktemp("tiny"), serving='name = "tiny"')
    with BackgroundServer(build_dataplane(config), ServerOptions(port=0)) as server:
        triton = http.InferenceServerClient(server.url.removeprefix("http://"))
        yield triton
        triton.close()


def test_liveness_readiness_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("missing")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_model_metadata(client: Any) -> None:
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 3, 8, 8]}
    assert meta["outputs"][0]["name"] == "logits"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_inference(client: Any, binary: bool) -> None:
    tensor = http.InferInput("image", list(IMAGE.shape), "FP32")
    tensor.set_data_from_numpy(IMAGE, binary_data=binary)
    output = http.InferRequestedOutput("logits", binary_data=binary)
    result = client.infer("tiny", [tensor], outputs=[output], request_id="r1")
    np.testing.assert_allclose(result.as_numpy("logits"), expected_logits(IMAGE), rtol=1e-5)
    response = result.get_response()
    assert response["model_name"] == "tiny" and response["model_version"] == "1"
    assert response["id"] == "r1"


def test_inference_with_a_version_and_default_outputs(client: Any) -> None:
    tensor = http.InferInput("image", list(IMAGE.shape), "FP32")
    tensor.set_data_from_numpy(IMAGE)
    result = client.infer("tiny", [tensor], model_version="1")
    np.testing.assert_allclose(result.as_numpy("logits"), expected_logits(IMAGE), rtol=1e-5)


def test_errors_reach_the_client_as_messages(client: Any) -> None:
    from tritonclient.utils import InferenceServerException

    tensor = http.InferInput("image", [1, 3, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 8), np.float32))
    with pytest.raises(InferenceServerException, match="image"):
        client.infer("tiny", [tensor])
    with pytest.raises(InferenceServerException, match="missing"):
        client.get_model_metadata("missing")
