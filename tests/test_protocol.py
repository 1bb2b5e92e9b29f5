"""The Open Inference Protocol codec: round trips, the binary extension, every bad input."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_agnostic.errors import ProtocolError
from model_agnostic import protocol
from model_agnostic.protocol import tfserving
from model_agnostic.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    datatype_of,
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    model_metadata,
    specs_from_metadata,
    tensor_metadata,
)
from model_agnostic.tensors import TensorSpec

Arrays = dict[str, np.ndarray]


def sample(datatype: str, rng: np.random.Generator, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """A random array of ``datatype`` that includes the type's extreme values."""
    dtype = DATATYPES[datatype]
    count = math.prod(shape)
    if datatype == "BOOL":
        return rng.random(shape) > 0.5
    if datatype == "BYTES":
        words = [b"", b"cat", "caf\u00e9".encode(), b"x" * 300, b"0", b"\xe2\x82\xac"]
        array = np.empty(count, dtype=object)
        array[:] = [words[i % len(words)] for i in range(count)]
        return array.reshape(shape)
    if dtype.kind == "f":
        values = rng.standard_normal(count).astype(dtype)
        floats = np.finfo(dtype)
        values[:3] = [floats.max, floats.tiny, -0.0][:count]
        return values.reshape(shape)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)
    values[:2] = [info.min, info.max][:count]
    return values.reshape(shape)


def serve(inputs: Arrays, **options: Any) -> tuple[Arrays, dict[str, Any]]:
    """Client encode -> server decode -> identity model -> server encode -> client decode."""
    body, headers = encode_infer_request(inputs, request_id="r1", **options)
    request = decode_infer_request(body, headers.get(HEADER_LENGTH))
    response, response_headers = encode_infer_response("m", "3", request, request.inputs)
    return decode_infer_response(response, response_headers.get(HEADER_LENGTH))


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.dtype(DATATYPES[datatype_of(want.dtype)]).newbyteorder("=")
    assert got.shape == want.shape
    assert got.flags.c_contiguous and got.dtype.isnative
    if want.dtype.kind == "f":
        bits = f"u{want.itemsize}"
        np.testing.assert_array_equal(got.view(bits), want.view(bits))
    else:
        assert got.tolist() == want.tolist()


def request_json(*inputs: Any, **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def fp32(name: str = "x", shape: Any = (2, 2), data: Any = (1, 2, 3, 4)) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "datatype": "FP32", "data": list(data)}


def binary_request(inputs: list[dict[str, Any]], tail: bytes, **extra: Any) -> tuple[bytes, str]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + tail, str(len(header))


# ------------------------------------------------------------------------------ datatypes
def test_every_datatype_maps_to_its_dtype_and_back() -> None:
    for name, dtype in DATATYPES.items():
        assert datatype_of(dtype) == name
    assert datatype_of(np.dtype(">f4")) == "FP32"
    assert datatype_of(np.dtype("U5")) == datatype_of(np.dtype("S2")) == "BYTES"


@pytest.mark.parametrize("dtype", ["complex64", "datetime64[s]", "timedelta64", "V4"])
def test_datatype_of_refuses_dtypes_the_protocol_cannot_carry(dtype: str) -> None:
    with pytest.raises(ProtocolError, match="no Open Inference Protocol datatype") as error:
        datatype_of(np.dtype(dtype))
    assert error.value.status == 400


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_exactly(
    datatype: str, binary: bool, rng: np.random.Generator
) -> None:
    array = sample(datatype, rng)
    outputs, meta = serve({"x": array}, binary=binary, binary_outputs=binary)
    assert list(outputs) == ["x"]
    assert_same(outputs["x"], array)
    assert meta == {"model_name": "m", "model_version": "3", "id": "r1", "parameters": {}}


@pytest.mark.parametrize("shape", [(), (0,), (4, 0, 2), (1, 1, 1, 5)])
def test_scalars_and_empty_tensors_round_trip(
    shape: tuple[int, ...], rng: np.random.Generator
) -> None:
    array = sample("INT16", rng, shape)
    for binary in (False, True):
        outputs, _ = serve({"x": array}, binary=binary, binary_outputs=binary)
        assert_same(outputs["x"], array)


def test_nested_and_flat_json_data_decode_alike() -> None:
    flat = decode_infer_request(request_json(fp32(shape=(2, 3), data=range(6))))
    nested = decode_infer_request(
        request_json(fp32(shape=(2, 3), data=[[0, 1, 2], [3, 4, 5]]))
    )
    rows = decode_infer_request(request_json(fp32(shape=(2, 1, 3), data=[[0, 1, 2], [3, 4, 5]])))
    np.testing.assert_array_equal(flat.inputs["x"], nested.inputs["x"])
    np.testing.assert_array_equal(rows.inputs["x"].reshape(2, 3), flat.inputs["x"])
    assert flat.inputs["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_json_tensors_are_writable_and_binary_ones_read_only_views() -> None:
    request = decode_infer_request(request_json(fp32()))
    assert request.inputs["x"].flags.writeable
    body, headers = encode_infer_request({"x": np.ones((2, 2), np.float32)})
    binary = decode_infer_request(body, headers[HEADER_LENGTH]).inputs["x"]
    assert not binary.flags.writeable and binary.base is not None


def test_a_bytearray_body_is_copied_so_later_changes_do_not_leak(rng: np.random.Generator) -> None:
    body, headers = encode_infer_request({"x": sample("FP32", rng)})
    buffer: Any = bytearray(body)
    decoded = decode_infer_request(buffer, headers[HEADER_LENGTH]).inputs["x"].copy()
    view = decode_infer_request(buffer, headers[HEADER_LENGTH]).inputs["x"]
    buffer[-8:] = b"\xff" * 8
    np.testing.assert_array_equal(view, decoded)


def test_multiple_inputs_with_mixed_binary_and_json_outputs(rng: np.random.Generator) -> None:
    inputs = {"image": sample("FP32", rng, (2, 3, 4)), "mask": sample("BOOL", rng, (2, 4))}
    decoded = decode_infer_request(*_as_request(encode_infer_request(inputs, binary=True)))
    request = InferRequest(
        decoded.inputs, outputs=[RequestedOutput("probs", binary=True), RequestedOutput("label")]
    )
    results = {
        "label": np.array([b"cat", b"dog"], dtype=object),
        "probs": request.inputs["image"].sum(axis=(1, 2)),
        "unused": np.zeros(3),
    }
    body, headers = encode_infer_response("m", None, request, results)
    header = json.loads(body[: int(headers[HEADER_LENGTH])])
    assert headers["Content-Type"] == "application/octet-stream"
    assert [o["name"] for o in header["outputs"]] == ["probs", "label"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == ["cat", "dog"]
    assert "model_version" not in header
    outputs, _ = decode_infer_response(body, headers[HEADER_LENGTH])
    assert list(outputs) == ["probs", "label"]
    assert_same(outputs["probs"], results["probs"])
    assert_same(outputs["label"], results["label"])


def test_per_output_binary_data_overrides_the_request_level_flag() -> None:
    doc = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    }
    request = decode_infer_request(request_json(fp32(), **doc))
    assert request.outputs == [RequestedOutput("a", False), RequestedOutput("b", True)]
    body, headers = encode_infer_response("m", None, request, {"a": np.ones(2), "b": np.ones(2)})
    header = json.loads(body[: int(headers[HEADER_LENGTH])])
    assert "data" in header["outputs"][0] and "parameters" in header["outputs"][1]


def test_request_level_binary_output_applies_to_all_outputs() -> None:
    request = decode_infer_request(
        request_json(fp32(), parameters={"binary_data_output": True, "priority": 2})
    )
    assert request.outputs is None and request.binary_output
    assert request.parameters == {"binary_data_output": True, "priority": 2}
    body, headers = encode_infer_response("m", "1", request, {"y": np.arange(3)})
    assert json.loads(body[: int(headers[HEADER_LENGTH])])["outputs"][0]["parameters"] == {
        "binary_data_size": 24
    }


def test_an_all_json_response_has_a_json_content_type_and_echoes_the_id() -> None:
    request = decode_infer_request(request_json(fp32(), id="abc", outputs=[]))
    assert request.outputs is None
    body, headers = encode_infer_response("m", "2", request, {"y": np.arange(2, dtype=np.int8)})
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {
        "model_name": "m", "model_version": "2", "id": "abc",
        "outputs": [{"name": "y", "datatype": "INT8", "shape": [2], "data": [0, 1]}],
    }
    no_id = decode_infer_request(request_json(fp32()))
    assert json.loads(encode_infer_response("m", None, no_id, {})[0])["id"] == ""


def test_an_unknown_requested_output_is_refused_naming_the_model_outputs() -> None:
    request = InferRequest({"x": np.ones(1)}, outputs=[RequestedOutput("prob")])
    with pytest.raises(ProtocolError, match=r"unknown output 'prob'.*\['probs', 'label'\]") as e:
        encode_infer_response("m", None, request, {"probs": np.ones(1), "label": np.ones(1)})
    assert e.value.status == 400


def test_nan_and_infinity_are_null_in_json_and_exact_in_binary() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    request = InferRequest({"x": values})
    body, _ = encode_infer_response("m", None, request, {"y": values})

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    assert json.loads(body, parse_constant=refuse)["outputs"][0]["data"] == [None] * 3 + [1.5]
    decoded, _ = decode_infer_response(body)
    np.testing.assert_array_equal(decoded["y"], [np.nan, np.nan, np.nan, 1.5])
    outputs, _ = serve({"y": values}, binary=True, binary_outputs=True)
    np.testing.assert_array_equal(outputs["y"], values)


def test_json_null_decodes_as_nan_for_floats_and_big_numbers_as_infinity() -> None:
    body = _typed("FP16", [None, 1.0, -1.0, None])
    body = body.replace(b"1.0", b"1e400").replace(b"null]", b"NaN]")
    array = decode_infer_request(body).inputs["x"]
    assert array.dtype == np.float16
    np.testing.assert_array_equal(array, [np.nan, np.inf, -np.inf, np.nan])


def test_bytes_as_json_are_utf8_strings_and_as_binary_any_bytes() -> None:
    body = request_json({"name": "t", "shape": [2], "datatype": "BYTES", "data": ["\u00e9", ""]})
    assert decode_infer_request(body).inputs["t"].tolist() == ["\u00e9".encode(), b""]
    raw = np.array([b"\x00\xff", b"png"], dtype=object)
    outputs, _ = serve({"t": raw}, binary=True, binary_outputs=True)
    assert outputs["t"].tolist() == raw.tolist()
    texts = np.array(["ab", "\u20ac"])
    outputs, _ = serve({"t": texts}, binary=False, binary_outputs=False)
    assert outputs["t"].tolist() == [b"ab", "\u20ac".encode()]


def test_triton_client_bodies_decode_and_our_responses_parse_in_it(
    rng: np.random.Generator,
) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    image, label = sample("FP32", rng, (2, 3)), sample("BYTES", rng, (2,))
    first = httpclient.InferInput("image", list(image.shape), "FP32")
    first.set_data_from_numpy(image, binary_data=True)
    second = httpclient.InferInput("label", [2], "BYTES")
    second.set_data_from_numpy(label, binary_data=True)
    wanted = [httpclient.InferRequestedOutput("y", binary_data=True),
              httpclient.InferRequestedOutput("z", binary_data=False)]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [first, second], outputs=wanted, request_id="t1")
    request = decode_infer_request(body, None if json_size is None else str(json_size))
    assert_same(request.inputs["image"], image)
    assert_same(request.inputs["label"], label)
    response, headers = encode_infer_response(
        "m", "1", request, {"y": -request.inputs["image"], "z": np.arange(3)})
    length = headers.get(HEADER_LENGTH)
    result = httpclient.InferenceServerClient.parse_response_body(
        response, header_length=None if length is None else int(length))
    np.testing.assert_array_equal(result.as_numpy("y"), -image)
    np.testing.assert_array_equal(result.as_numpy("z"), np.arange(3))
    assert result.get_response()["id"] == "t1"


# ----------------------------------------------------------------------------- raw bodies
def test_a_raw_binary_body_is_the_single_input_with_the_batch_inferred() -> None:
    spec = TensorSpec("x", np.dtype(np.float32), (None, 3))
    values = np.arange(12, dtype="<f4")
    request = decode_infer_request(values.tobytes(), "0", raw_input=spec)
    np.testing.assert_array_equal(request.inputs["x"], values.reshape(4, 3))
    assert request.outputs is None and not request.binary_output
    fixed = TensorSpec("x", np.dtype(np.uint8), (2, 2))
    raw_fixed = decode_infer_request(b"\x01\x02\x03\x04", "0", raw_input=fixed)
    assert raw_fixed.inputs["x"].tolist() == [[1, 2], [3, 4]]
    strings = TensorSpec("s", np.dtype(object), ("batch",))
    raw = b"\x02\x00\x00\x00hi\x00\x00\x00\x00"
    assert decode_infer_request(raw, "0", raw_input=strings).inputs["s"].tolist() == [b"hi", b""]


@pytest.mark.parametrize(
    ("spec", "body", "message"),
    [
        (None, b"\x00" * 4, "only a model with exactly one input"),
        (TensorSpec("x", np.dtype("f4"), (None, None)), b"\x00" * 8, "only leave the first"),
        (TensorSpec("x", np.dtype("f4"), (None, 3)), b"\x00" * 10, "10 bytes do not fit"),
        (TensorSpec("x", np.dtype("f4"), (2, 3)), b"\x00" * 28, "28 bytes do not fit"),
        (TensorSpec("x", np.dtype("f4"), (None, 0)), b"\x00" * 4, "4 bytes do not fit"),
        (TensorSpec("s", np.dtype(object), (3,)), b"\x00" * 8, "2 elements do not fit"),
        (TensorSpec("s", np.dtype(object), (None,)), b"\x09\x00\x00\x00ab", "declares 9 bytes"),
    ],
)
def test_bad_raw_binary_bodies_are_refused(
    spec: TensorSpec | None, body: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message) as error:
        decode_infer_request(body, "0", raw_input=spec)
    assert error.value.status == 400


# ------------------------------------------------------------------------------- metadata
def test_metadata_round_trips_with_variable_dims_as_minus_one() -> None:
    inputs = [TensorSpec("image", np.dtype(np.float32), ("batch", 3, None, -1))]
    outputs = [TensorSpec("label", np.dtype(object), (None,)),
               TensorSpec("any", np.dtype(np.int64), cast(Any, None))]
    doc = model_metadata("m", ["1", "2"], "onnxruntime_onnx", inputs, outputs)
    assert doc["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert doc["outputs"][1]["shape"] is None
    assert doc["versions"] == ["1", "2"]
    assert "versions" not in model_metadata("m", [], "pytorch_libtorch", inputs, outputs)
    got_in, got_out = specs_from_metadata(json.loads(json.dumps(doc)))
    assert got_in == [TensorSpec("image", np.dtype(np.float32), (None, 3, None, None))]
    assert got_out == [TensorSpec("label", np.dtype(object), (None,)),
                       TensorSpec("any", np.dtype(np.int64), cast(Any, None))]


def test_tensor_metadata_of_an_unsupported_dtype_is_a_server_error() -> None:
    with pytest.raises(ProtocolError, match="'z'.*complex") as error:
        tensor_metadata(TensorSpec("z", np.dtype(np.complex64), (2,)))
    assert error.value.status == 500


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({"inputs": []}, "'outputs' must be a list"),
        ({"inputs": {}, "outputs": []}, "'inputs' must be a list"),
        ({"inputs": [{"datatype": "FP32", "shape": [1]}], "outputs": []}, "string 'name'"),
        ({"inputs": [{"name": "x", "datatype": "F32", "shape": [1]}], "outputs": []},
         "unknown datatype 'F32'"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}], "outputs": []},
         "-1 for variable"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": "1"}], "outputs": []},
         "-1 for variable"),
    ],
)
def test_malformed_metadata_is_a_protocol_error(doc: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        specs_from_metadata(doc)


# ------------------------------------------------------------------------ bad requests
def _as_request(encoded: tuple[bytes, dict[str, str]]) -> tuple[bytes, str | None]:
    return encoded[0], encoded[1].get(HEADER_LENGTH)


def _typed(datatype: Any, data: Any, shape: Any = None) -> bytes:
    shape = [len(data)] if shape is None else shape
    return request_json({"name": "x", "shape": shape, "datatype": datatype, "data": data})


BAD_JSON_REQUESTS = [
    (b"", "body is empty"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"inputs": [', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got an array"),
    (b"[" * 100_000 + b"]" * 100_000, "over the limit of 64"),
    (b"{}", "'inputs' must be a non-empty list of tensors, got null"),
    (b'{"inputs": {}}', "'inputs' must be a non-empty list"),
    (b'{"inputs": []}', "'inputs' must be a non-empty list"),
    (request_json(7), "inputs[0] must be an object"),
    (request_json({"shape": [1], "datatype": "FP32", "data": [1]}), "inputs[0] has no 'name'"),
    (request_json({"name": 5, "shape": [1], "datatype": "FP32", "data": [1]}),
     "'name' must be a non-empty string"),
    (request_json({"name": "x", "datatype": "FP32", "data": [1]}),
     "input 'x' (inputs[0]) has no 'shape'"),
    (request_json({"name": "x", "shape": [1], "data": [1]}), "has no 'datatype'"),
    (request_json({"name": "x", "shape": [1], "datatype": "FP32"}), "has no 'data'"),
    (_typed("FLOAT32", [1]), "unknown datatype 'FLOAT32'; expected one of ['BOOL', 'UINT8'"),
    (_typed("fp32", [1]), "unknown datatype 'fp32'"),
    (_typed(["FP32"], [1]), "unknown datatype an array"),
    (_typed("FP32", [1], [-1]), "negative dimension -1"),
    (_typed("FP32", [1], [1.0]), "'shape' must be a list of non-negative integers, got an array"),
    (_typed("FP32", [1], [True]), "'shape' must be a list of non-negative integers"),
    (_typed("FP32", [1], "1"), "'shape' must be a list"),
    (_typed("FP32", [1], [1] * 40), "at most 32"),
    (_typed("FP32", [1], [1 << 20, 1 << 20]), "has 1099511627776 elements, more than the limit"),
    (_typed("FP32", [1], [0, 10**30]), "more than the element limit"),
    (_typed("FP32", [1, 2, 3], [2, 2]), "expected 4 elements for shape [2, 2], got 3"),
    (_typed("FP32", [[1, 2], [3]], [2, 2]), "ragged nested data"),
    (_typed("FP32", [[1, 2], [3, 4, 5]], [2, 2]), "expected 4 elements for shape [2, 2], got 5"),
    (_typed("FP32", [[1, 2], 3], [3]), "mixes arrays and values"),
    (_typed("FP32", [[[1]]], [1, 1]), "nested deeper than the 2 dimensions"),
    (_typed("FP32", [[[1]]], []), "nested deeper than the 0 dimensions"),
    (_typed("FP32", [[1, 2], [3, 4], [5, 6]], [2, 3]), "nested 'data' has dimensions [3, 2]"),
    (_typed("FP32", 1.0, [1]), "'data' must be a JSON array, got 1.0"),
    (_typed("FP32", ["1.0"]), "FP32 data must be numbers (null for NaN), got '1.0'"),
    (_typed("FP32", [True]), "FP32 data must be numbers (null for NaN), got true"),
    (_typed("FP64", [10**400]), "too large for FP64"),
    (_typed("UINT8", [255, 300]), "value 300 is out of range for UINT8 [0, 255]"),
    (_typed("UINT32", [-1]), "value -1 is out of range for UINT32"),
    (_typed("INT64", [2**63]), "out of range for INT64"),
    (_typed("INT32", [1, True]), "INT32 data must be integers, got true"),
    (_typed("INT32", [1.5]), "INT32 data must be integers, got 1.5"),
    (b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1e400]}]}',
     "INT32 data must be integers, got inf"),
    (b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[NaN]}]}',
     "INT8 data must be integers, got nan"),
    (_typed("INT16", [None]), "INT16 data must be integers, got null"),
    (_typed("BOOL", [1, 0]), "BOOL data must be true or false, got 1"),
    (_typed("BOOL", [None]), "BOOL data must be true or false, got null"),
    (_typed("BYTES", [1]), "BYTES data must be strings, got 1"),
    (_typed("BYTES", ["\ud800"]), "not valid Unicode text"),
    (_typed("FP32", [{}]), "got an object"),
    (request_json(fp32(), fp32()), "input 'x' appears twice"),
    (request_json(fp32(), id=5), "request 'id' must be a string, got 5"),
    (request_json(fp32(), parameters=[]), "'parameters' must be an object"),
    (request_json(fp32(), parameters={"binary_data_output": 1}),
     "'binary_data_output' must be true"),
    (request_json({**fp32(), "parameters": 3}), "input 'x' 'parameters' must be an object"),
    (request_json(fp32(), outputs={}), "request 'outputs' must be a list"),
    (request_json(fp32(), outputs=[{}]), "outputs[0] must be an object with a non-empty string"),
    (request_json(fp32(), outputs=["y"]), "outputs[0] must be an object"),
    (request_json(fp32(), outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
     "'binary_data' must be true or false, got 'yes'"),
    (request_json(fp32(), outputs=[{"name": "y"}, {"name": "y"}]), "output 'y' is requested twice"),
]


@pytest.mark.parametrize(("body", "message"), BAD_JSON_REQUESTS)
def test_bad_json_requests_are_400_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as error:
        decode_infer_request(body)
    assert error.value.status == 400
    assert message in str(error.value)


def _binary(datatype: str, shape: list[int], size: Any, **entry: Any) -> dict[str, Any]:
    return {"name": "x", "shape": shape, "datatype": datatype,
            "parameters": {"binary_data_size": size}, **entry}


BAD_BINARY_REQUESTS = [
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "-1", "non-negative decimal integer, got '-1'"),
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "abc", "got 'abc'"),
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "1e3", "got '1e3'"),
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "\u0661\u0662", "non-negative decimal integer"),
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "", "non-negative decimal integer"),
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "99999", "is 99999, but the body has only"),
    ([_binary("FP32", [2], 8)], b"\x00" * 8, "9" * 30, "non-negative decimal integer"),
    ([_binary("FP32", [2], -8)], b"", None, "binary_data_size must be a non-negative integer"),
    ([_binary("FP32", [2], 8.0)], b"\x00" * 8, None, "got 8.0"),
    ([_binary("FP32", [2], True)], b"\x00" * 8, None, "got true"),
    ([_binary("FP32", [2], 8, data=[1, 2])], b"\x00" * 8, None, "both 'data' and binary"),
    ([_binary("FP32", [2], 8)], b"\x00" * 7, None, "declare 8 bytes of binary data"),
    ([_binary("FP32", [2], 8)], b"\x00" * 9, None, "but the body has 9 bytes after the JSON"),
    ([fp32()], b"\x00" * 3, None, "declare 0 bytes of binary data"),
    ([_binary("FP32", [2], 6)], b"\x00" * 6, None, "is 6 bytes, expected 8 for shape [2] FP32"),
    ([_binary("BOOL", [2], 2)], b"\x01\x02", None, "BOOL binary data must hold bytes 0 or 1"),
    ([_binary("BYTES", [1], 6)], b"\x05\x00\x00\x00ab", None, "declares 5 bytes, 2 remain"),
    ([_binary("BYTES", [1], 7)], b"\x01\x00\x00\x00abc", None, "2 bytes are left over"),
    ([_binary("BYTES", [2], 6)], b"\x00\x00\x00\x00ab", None, "2 BYTES elements need at least 8"),
    ([_binary("BYTES", [2], 8)], b"\x02\x00\x00\x00ab\x00\x00", None, "element 1 is cut off"),
]


@pytest.mark.parametrize(("inputs", "tail", "header", "message"), BAD_BINARY_REQUESTS)
def test_bad_binary_requests_are_400_naming_the_problem(
    inputs: list[dict[str, Any]], tail: bytes, header: str | None, message: str
) -> None:
    body, length = binary_request(inputs, tail)
    with pytest.raises(ProtocolError) as error:
        decode_infer_request(body, length if header is None else header)
    assert error.value.status == 400
    assert message in str(error.value)


def test_binary_inputs_without_the_header_are_refused_naming_it() -> None:
    body, _ = binary_request([_binary("FP32", [2], 8)], b"\x00" * 8)
    with pytest.raises(ProtocolError, match=f"Extra data.*binary.*{HEADER_LENGTH} header"):
        decode_infer_request(body)
    header_only, _ = binary_request([_binary("FP32", [2], 8)], b"")
    with pytest.raises(ProtocolError, match=f"declare 8 bytes.*no {HEADER_LENGTH} header"):
        decode_infer_request(header_only)


def test_a_huge_shape_with_tiny_data_is_refused_quickly_without_allocating() -> None:
    huge = _typed("FP32", [1.0], [1 << 20, 1 << 20])  # 2**40 elements
    near_limit = _typed("FP32", [1.0], [1 << 14, 1 << 14])  # under the limit, 1 value
    binary, length = binary_request([_binary("FP32", [1 << 27], 4)], b"\x00" * 4)
    tracemalloc.start()
    started = time.perf_counter()
    for body, header in ((huge, None), (near_limit, None), (binary, length)):
        with pytest.raises(ProtocolError, match="limit|expected"):
            decode_infer_request(body, header)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20


def test_a_10x3x224x224_fp32_binary_round_trip_is_exact(rng: np.random.Generator) -> None:
    batch = rng.standard_normal((10, 3, 224, 224), dtype=np.float32)
    outputs, _ = serve({"image": batch}, binary=True, binary_outputs=True)
    assert outputs["image"].dtype == np.float32 and outputs["image"].shape == batch.shape
    np.testing.assert_array_equal(outputs["image"], batch)


def test_json_encoding_keeps_float32_values_exact(rng: np.random.Generator) -> None:
    batch = rng.standard_normal((4, 3, 32, 32), dtype=np.float32)
    outputs, _ = serve({"image": batch}, binary=False, binary_outputs=False)
    np.testing.assert_array_equal(outputs["image"], batch)


# ------------------------------------------------------------------------ client errors
def test_encode_infer_request_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ProtocolError, match="at least one input"):
        encode_infer_request({})
    with pytest.raises(ProtocolError, match="input 'z'.*complex"):
        encode_infer_request({"z": np.zeros(2, np.complex64)})
    with pytest.raises(ProtocolError, match="not UTF-8 text.*binary"):
        encode_infer_request({"t": np.array([b"\xff"], dtype=object)}, binary=False)
    with pytest.raises(ProtocolError, match="bytes or str, got int"):
        encode_infer_request({"t": np.array([1, b"a"], dtype=object)})


def test_encode_infer_request_asks_for_outputs_as_told() -> None:
    body, headers = encode_infer_request(
        {"x": np.ones(2, np.float32)}, binary=False, outputs=["y"], binary_outputs=False
    )
    assert headers == {"Content-Type": "application/json"}
    doc = json.loads(body)
    assert doc["outputs"] == [{"name": "y", "parameters": {"binary_data": False}}]
    assert "id" not in doc and "parameters" not in doc
    body, _ = encode_infer_request({"x": np.ones(2, np.float32)}, binary=False)
    assert json.loads(body)["parameters"] == {"binary_data_output": True}


def test_outputs_the_protocol_cannot_carry_are_errors_with_status_500() -> None:
    request = InferRequest({"x": np.ones(1)})
    with pytest.raises(ProtocolError, match="output 'z'.*complex") as error:
        encode_infer_response("m", None, request, {"z": np.zeros(1, np.complex128)})
    assert error.value.status == 500
    with pytest.raises(ProtocolError, match="not UTF-8 text.*binary") as error:
        encode_infer_response("m", None, request, {"t": np.array([b"\x80"], dtype=object)})
    assert error.value.status == 500


def _response(outputs: list[Any], tail: bytes = b"", **extra: Any) -> tuple[bytes, str]:
    header = json.dumps({"model_name": "m", "outputs": outputs, **extra}).encode()
    return header + tail, str(len(header))


BAD_RESPONSES = [
    (b"", None, "body is empty"),
    (b"<html>502</html>", None, "not valid JSON"),
    (b'{"error": "model exploded"}', None, "the server answered with an error: 'model exploded'"),
    (b'{"model_name": "m"}', None, "'outputs' must be a list"),
    (b'{"outputs": []}', "0", "cannot be a raw binary body"),
    (*_response([{"name": "y", "shape": [2], "datatype": "FP32", "data": [1]}]),
     "expected 2 elements"),
    (*_response([{"name": "y", "shape": [1], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}], b"\x00" * 2), "declare 4 bytes"),
    (*_response([], model_version=3), "'model_version' must be a string"),
    (*_response([], parameters=[]), "'parameters' must be an object"),
]


@pytest.mark.parametrize(("body", "header", "message"), BAD_RESPONSES)
def test_malformed_responses_are_protocol_errors(
    body: bytes, header: str | None, message: str
) -> None:
    with pytest.raises(ProtocolError) as error:
        decode_infer_response(body, header)
    assert message in str(error.value)


# ------------------------------------------------------------------------------- fuzzing
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
SHAPES = st.lists(st.integers(-2, 4), max_size=4) | JSON_VALUES
DATATYPE_NAMES = st.sampled_from([*DATATYPES, "FP8", "fp32"]) | JSON_VALUES
TENSORS = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "y", ""]) | JSON_VALUES, "shape": SHAPES,
     "datatype": DATATYPE_NAMES},
    optional={
        "data": st.lists(JSON_VALUES, max_size=8) | JSON_VALUES,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 16) | JSON_VALUES}) | JSON_VALUES,
    },
)
REQUESTS = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS, max_size=3) | JSON_VALUES},
    optional={"id": JSON_VALUES, "parameters": JSON_VALUES, "outputs": JSON_VALUES},
)
FUZZ = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _decodes_or_400(body: bytes, header: str | None, **options: Any) -> None:
    try:
        request = decode_infer_request(body, header, **options)
    except ProtocolError as error:
        assert error.status == 400 and str(error)
    else:
        assert isinstance(request, InferRequest)
        assert all(isinstance(a, np.ndarray) for a in request.inputs.values())


@FUZZ
@given(body=st.binary(max_size=64), header=st.none() | st.text(max_size=4))
def test_fuzz_arbitrary_bytes_decode_or_give_400(body: bytes, header: str | None) -> None:
    _decodes_or_400(body, header)
    _decodes_or_400(body, "0", raw_input=TensorSpec("x", np.dtype(object), (None,)))
    _decodes_or_400(body, "0", raw_input=TensorSpec("x", np.dtype(np.int16), (None, 2)))
    try:
        decode_infer_response(body, header)
    except ProtocolError:
        pass


@FUZZ
@given(doc=REQUESTS | JSON_VALUES, tail=st.binary(max_size=16), split=st.booleans())
def test_fuzz_json_requests_decode_or_give_400(doc: Any, tail: bytes, split: bool) -> None:
    header = json.dumps(doc).encode()
    body = header + tail if split else header
    _decodes_or_400(body, str(len(header)) if split else None, max_elements=64)
    try:
        decode_infer_response(body, str(len(header)) if split else None)
    except ProtocolError:
        pass


SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=3)
)


@st.composite
def near_valid_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    """Well-formed requests whose values, counts and binary sizes are often slightly off."""
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    count, datatype = math.prod(shape), draw(st.sampled_from(list(DATATYPES)))
    entry: dict[str, Any] = {"name": "x", "shape": shape, "datatype": datatype}
    tail = b""
    if draw(st.booleans()):
        tail = draw(st.binary(max_size=40))
        exact = count * DATATYPES[datatype].itemsize if datatype != "BYTES" else len(tail)
        entry["parameters"] = {"binary_data_size": draw(st.sampled_from([len(tail), exact]))}
        if datatype != "BYTES" and draw(st.booleans()):
            tail = bytes(exact)
    else:
        flat = draw(st.lists(SCALARS, min_size=max(0, count - 1), max_size=count + 1))
        if datatype == "FP32" and draw(st.booleans()):
            flat = draw(st.lists(st.floats(width=32), min_size=count, max_size=count))
        entry["data"] = flat
    wanted = st.fixed_dictionaries({"name": st.just("x")}, optional={
        "parameters": st.fixed_dictionaries({"binary_data": st.booleans() | SCALARS})})
    header = json.dumps({"inputs": [entry], "outputs": draw(st.lists(wanted, max_size=1))})
    return header.encode() + tail, str(len(header))


@FUZZ
@given(case=near_valid_requests())
def test_fuzz_near_valid_requests_round_trip_or_give_400(case: tuple[bytes, str]) -> None:
    body, header = case
    try:
        request = decode_infer_request(body, header)
    except ProtocolError as error:
        assert error.status == 400
        return
    try:
        response, headers = encode_infer_response("m", None, request, request.inputs)
    except ProtocolError as error:  # a BYTES element that is not UTF-8, asked for as JSON
        assert error.status == 500 and "binary" in str(error)
        return
    outputs, _ = decode_infer_response(response, headers.get(HEADER_LENGTH))
    got, sent = outputs["x"], request.inputs["x"]
    assert got.dtype == sent.dtype and got.shape == sent.shape
    if sent.dtype.kind != "f":
        assert got.tolist() == sent.tolist()


def test_module_exports_exactly_its_public_api() -> None:
    assert sorted(protocol.__all__) == sorted([
        "DATATYPES", "DEFAULT_MAX_DEPTH", "DEFAULT_MAX_ELEMENTS", "HEADER_LENGTH", "InferRequest",
        "RequestedOutput", "datatype_of", "decode_infer_request", "decode_infer_response",
        "decode_v1_response", "dumps", "encode_infer_request", "encode_infer_response",
        "encode_v1_request", "json_depth", "load_object", "model_metadata", "specs_from_metadata",
        "tensor_metadata",
    ])
    assert all(hasattr(protocol, name) for name in protocol.__all__)


def test_json_nested_past_the_parser_without_a_depth_limit_is_still_400() -> None:
    with pytest.raises(ProtocolError, match="nested too deeply"):
        decode_infer_request(b"[" * 100_000 + b"]" * 100_000, max_depth=10**9)


def test_json_depth_limit_counts_brackets_before_parsing() -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32",
                                   "data": [[[1.0]]]}]}).encode()
    assert decode_infer_request(body, max_depth=6).inputs["x"].shape == (1, 1, 1)
    with pytest.raises(ProtocolError, match="nested 6 levels deep or more, over the limit of 5"):
        decode_infer_request(body, max_depth=5)


@pytest.mark.parametrize("dtype", [">f4", ">i8", "<f8", ">f2"])
def test_json_answers_carry_outputs_of_either_byte_order_and_any_strides(dtype: str) -> None:
    values = np.arange(12).reshape(3, 4).astype(dtype)
    for array in (values, values[:, ::2], values.T):
        text = protocol.json_body.dumps({"data": array, "tfserving": tfserving._jsonable(array)})
        doc = json.loads(text)
        assert doc["data"] == doc["tfserving"] == array.tolist()


# --------------------------------------------------------------- the JSON fast path
def _data_holds_non_numbers(doc: Any) -> bool:
    """Ground truth: some tensor's ``data`` holds a boolean, a string or an object."""
    if isinstance(doc, dict):
        data = doc.get("data") if "datatype" in doc else None
        flat: list[Any] = []
        stack = [data] if isinstance(data, list) else []
        while stack:
            for item in stack.pop():
                (stack if isinstance(item, list) else flat).append(item)
        if any(isinstance(x, (bool, str, dict)) for x in flat):
            return True
        return any(_data_holds_non_numbers(v) for k, v in doc.items()
                   if not ("datatype" in doc and k == "data"))
    if isinstance(doc, list):
        return any(_data_holds_non_numbers(v) for v in doc)
    return False


_WORD = st.text(alphabet="useltrfa\"\\[]{}n_ 0é", max_size=8)
_SCALAR = st.one_of(st.booleans(), st.none(), st.integers(-5, 5), st.floats(allow_nan=False,
                    allow_infinity=False, width=32), _WORD)
_DATA = st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32),
                           st.integers(-3, 3), st.none(),
                           st.sampled_from([True, False, "s", "true", "use"])), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=_DATA,
    nested=st.booleans(),
    parameters=st.dictionaries(_WORD, _SCALAR, max_size=3),
    outputs=st.lists(st.dictionaries(_WORD, _SCALAR, max_size=2), max_size=2),
    ascii_only=st.booleans(),
)
def test_the_fast_path_never_takes_a_boolean_or_string_in_data(
    data: list[Any], nested: bool, parameters: dict[str, Any], outputs: list[Any],
    ascii_only: bool,
) -> None:
    """Whatever strings and booleans sit outside the tensors (and however they are
    escaped), ``plain_numbers`` says plain only when every ``data`` is numbers and nulls."""
    from model_agnostic.protocol.json_body import parse_fast, plain_numbers

    entry = {"name": "x", "datatype": "FP32", "shape": [len(data)],
             "data": [data] if nested else data, "parameters": parameters}
    doc = {"id": "queue", "inputs": [entry], "outputs": outputs}
    text = json.dumps(doc, ensure_ascii=ascii_only).encode()
    parsed = parse_fast(text)
    assert parsed is not None
    if plain_numbers(text, parsed, 64):
        assert not _data_holds_non_numbers(parsed), text


def test_tritonclients_json_request_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """tritonclient sends ``"binary_data": false`` for every output it wants as JSON; that
    boolean (outside the data) used to send the whole body down the checking path, 3.5x
    slower on a CheXNet-sized tensor."""
    http = pytest.importorskip("tritonclient.http")
    from model_agnostic.protocol import v2

    image = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    tensor = http.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=False)
    wanted = http.InferRequestedOutput("probabilities", binary_data=False)
    body, json_size = http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[wanted], request_id="queue-1")
    assert json_size is None and b'"binary_data":false' in body.replace(b" ", b"")

    def no_checking_path(*args: Any) -> Any:
        raise AssertionError("the checking path ran")

    monkeypatch.setattr(v2, "array_from_json", no_checking_path)
    request = decode_infer_request(body)
    np.testing.assert_array_equal(request.inputs["image"], image)
    assert request.outputs == [RequestedOutput("probabilities", False)]
    spoiled = body.replace(b"]}]", b", true]}]", 1)  # a boolean in the data
    with pytest.raises(AssertionError, match="the checking path ran"):
        decode_infer_request(spoiled)


def test_an_escape_cannot_hide_a_boolean_in_data_from_the_fast_path() -> None:
    """``"s\\u0065"`` is the key ``"se"`` with its pair hidden by the escape; it would make
    room for a ``true`` in the data. Any backslash sends the body down the checking path."""
    body = (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1.0,true],'
            b'"parameters":{"s\\u0065":1}}]}')
    with pytest.raises(ProtocolError, match="FP32 data must be numbers"):
        decode_infer_request(body)
