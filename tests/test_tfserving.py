"""TF Serving's REST API on our server: status, metadata, ``:predict`` in row and columnar
form, b64 values, TF Serving's error shape; and RemoteModel's v1 mode end to end."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic.errors import ProtocolError
from model_agnostic.protocol import tfserving
from model_agnostic.tensors import TensorSpec
from tests.conftest import XRAY, assert_same_findings, predict_over_v1

pytest.importorskip("waitress")


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """TinyNet exported to ONNX, served as "tiny" with a bearer token; and the local model."""
    pytest.importorskip("torch")
    from model_agnostic import export_onnx, load_model
    from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane

    folder = tmp_path_factory.mktemp("tfserving")
    tests = Path(__file__).resolve().parent.as_posix()
    pytorch = folder / "pytorch.toml"
    pytorch.write_text(f'backend = "pytorch"\n[model]\nclass = "{tests}/tiny_models.py:TinyNet"\n')
    export_onnx(load_model(pytorch), folder / "tiny.onnx", np.zeros((3, 8, 8), np.float32))
    config = folder / "onnx.toml"
    config.write_text(
        f'backend = "onnxruntime"\n[model]\nclass = "{tests}/tiny_models.py:TinyNet"\n'
        '[onnxruntime]\npath = "tiny.onnx"\n[serving]\nname = "tiny"\n'
    )
    (folder / "token").write_text("s3cret-token-for-tests")
    options = ServerOptions(port=0, auth_token_file=str(folder / "token"))
    with BackgroundServer(build_dataplane(config, options=options), options) as server:
        yield server.url, load_model(config)


def call(url: str, method: str, path: str, body: Any = None, token: str | None = "s3cret-token-for-tests",
         raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, 3, 8, 8), dtype=np.float32)


def test_status_lists_the_served_versions_as_available(tiny_server: tuple[str, Any]) -> None:
    url, _ = tiny_server
    assert call(url, "GET", "/v1/models/tiny") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert call(url, "GET", "/v1/models/tiny/versions/1")[0] == 200
    status, doc = call(url, "GET", "/v1/models/nope")
    assert status == 404 and set(doc) == {"error"} and "nope" in doc["error"]


def test_metadata_is_a_serving_default_signature(tiny_server: tuple[str, Any]) -> None:
    url, _ = tiny_server
    status, doc = call(url, "GET", "/v1/models/tiny/metadata")
    assert status == 200 and doc["model_spec"] == {"name": "tiny", "signature_name": "",
                                                   "version": "1"}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT" and image["name"] == "image:0"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "3", "8", "8"]
    assert signature["outputs"]["logits"]["dtype"] == "DT_FLOAT"


@pytest.mark.interop(client="TF Serving REST client", server="ours", transport="TF Serving REST (v1)")
@pytest.mark.parametrize("form", ["rows", "named_rows", "columns", "named_columns"])
def test_predict_in_every_form_answers_like_the_local_model(
    tiny_server: tuple[str, Any], form: str
) -> None:
    url, local = tiny_server
    x = batch(3)
    body = {
        "rows": {"instances": x.tolist()},
        "named_rows": {"instances": [{"image": row} for row in x.tolist()]},
        "columns": {"inputs": x.tolist()},
        "named_columns": {"inputs": {"image": x.tolist()}},
    }[form]
    status, doc = call(url, "POST", "/v1/models/tiny:predict", body)
    assert status == 200, doc
    key = "outputs" if form.endswith("columns") else "predictions"
    assert set(doc) == {key}
    expected = local.infer({"image": x})["logits"]
    np.testing.assert_allclose(np.asarray(doc[key], np.float32), expected, rtol=0, atol=1e-6)
    status, again = call(url, "POST", "/v1/models/tiny/versions/1:predict", body)
    assert (status, again) == (200, doc)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"instances": [[0]], "inputs": [[0]]}, 400, "exactly one of 'instances'"),
        ({"instances": []}, 400, "non-empty list"),
        ({"instances": [[[0.0] * 8] * 8]}, 400, "shape [1, 8, 8]"),
        ({"instances": [{"b64": "AAAA"}]}, 400, "binary {\"b64\": ...} values are for string"),
        ({"instances": [{"picture": 1}]}, 400, "has no input 'image'"),
        ({"signature_name": "x"}, 400, "exactly one of"),
    ],
)
def test_bad_predict_requests_get_tf_serving_errors(
    tiny_server: tuple[str, Any], body: Any, status: int, message: str
) -> None:
    url, _ = tiny_server
    got, doc = call(url, "POST", "/v1/models/tiny:predict", body)
    assert got == status and set(doc) == {"error"} and message in doc["error"], doc


def test_predict_needs_the_token_and_json(tiny_server: tuple[str, Any]) -> None:
    url, _ = tiny_server
    body = {"instances": batch(1).tolist()}
    assert call(url, "POST", "/v1/models/tiny:predict", body, token=None)[0] == 401
    assert call(url, "POST", "/v1/models/tiny:predict", body, token="wrong")[0] == 401
    status, doc = call(url, "POST", "/v1/models/tiny:predict", raw=b"{not json")
    assert status == 400 and "not valid JSON" in doc["error"]
    assert call(url, "POST", "/v1/models/tiny/versions/7:predict", body)[0] == 404
    assert call(url, "GET", "/v1/models/tiny:predict")[0] == 405


def test_b64_values_become_bytes_for_string_inputs() -> None:
    spec = TensorSpec("text", np.dtype(object), (-1,))
    doc = {"instances": [{"b64": base64.b64encode(b"\x00\xffraw").decode()}, "plain"]}
    decoded = tfserving.decode_predict_request(doc, [spec])
    assert decoded.inputs["text"].tolist() == [b"\x00\xffraw", b"plain"]
    with pytest.raises(ProtocolError, match="not valid base64"):
        tfserving.decode_predict_request({"instances": [{"b64": "%%"}]}, [spec])
    answer = tfserving.encode_predict_response(
        {"text": np.array([b"ok", b"\xff"], dtype=object)}, decoded)
    assert answer == {"predictions": ["ok", {"b64": "/w=="}]}


@pytest.mark.parametrize(
    ("dtype", "values", "message"),
    [
        (np.float32, [[1.0, True]], "FP32 data must be numbers"),
        (np.float32, [[1.0, "2"]], "FP32 data must be numbers"),
        (np.int64, [[1, 1.5]], "INT64 data must be integers"),
        (np.uint8, [[1, 300]], "out of range for UINT8"),
        (np.float32, [[1.0, 2.0], [3.0]], "ragged"),
        (np.float32, [[1.0, [2.0]]], "mixes arrays and values"),
        (np.float32, [[0.0] * 3] * 4, "more than the limit 10"),
    ],
)
def test_predict_values_are_checked_not_coerced(dtype: Any, values: Any, message: str) -> None:
    spec = TensorSpec("x", np.dtype(dtype), (-1, -1))
    with pytest.raises(ProtocolError, match=re.escape(message)):
        tfserving.decode_predict_request({"instances": values}, [spec], max_elements=10)
    with pytest.raises(ProtocolError, match=re.escape(message)):
        tfserving.decode_predict_request({"inputs": values}, [spec], max_elements=10)


def test_predict_values_keep_their_exact_type() -> None:
    ints = tfserving.decode_predict_request(
        {"instances": [[2**40, -3]]}, [TensorSpec("x", np.dtype(np.int64), (-1, 2))])
    assert ints.inputs["x"].dtype == np.int64 and ints.inputs["x"].tolist() == [[2**40, -3]]
    floats = tfserving.decode_predict_request(
        {"inputs": [[1, None]]}, [TensorSpec("x", np.dtype(np.float32), (-1, 2))])
    assert floats.inputs["x"][0, 0] == 1.0 and np.isnan(floats.inputs["x"][0, 1])


@pytest.mark.interop(client="RemoteModel", server="ours", transport="TF Serving REST (v1)")
def test_remote_model_v1_runs_chexnet_against_our_tf_serving_api(chexnet_onnx_config: Path) -> None:
    from model_agnostic import load_model

    local = load_model(chexnet_onnx_config)
    ours = predict_over_v1(local, chexnet_onnx_config, XRAY)
    assert_same_findings(ours, local.predict(XRAY), atol=1e-5)
