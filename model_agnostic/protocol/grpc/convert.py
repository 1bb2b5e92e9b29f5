"""gRPC inference messages <-> numpy arrays, both directions; no I/O.

The server decodes a ``ModelInferRequest`` (:func:`decode_infer_request`) and encodes the
``ModelInferResponse`` (:func:`encode_infer_response`); a client does the reverse
(:func:`encode_infer_request`, :func:`decode_infer_response`). Tensor data travel as
``raw_input_contents`` / ``raw_output_contents`` in the byte layout of the HTTP binary
extension (:mod:`..codec`); typed ``contents`` (``fp32_contents``, ...) are accepted too.
Validation is the HTTP decoder's: datatype names, shape against element count, the element
limit before anything is allocated, BYTES length prefixes. Every failure is a
:class:`~model_agnostic.errors.ProtocolError` (status 400; 500 for outputs the protocol
cannot carry) that names the tensor and says what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import MissingDependencyError, ProtocolError
from ..codec import (
    DATATYPES,
    array_from_binary,
    array_to_binary,
    check_shape,
    datatype_of,
    describe,
    format_shape,
)

if TYPE_CHECKING:
    from . import inference_pb2 as pb

__all__ = [
    "DecodedRequest",
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
    "messages",
    "metadata_document",
    "metadata_message",
]

#: The typed ``InferTensorContents`` field of each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_RESPONSE_LIMIT = 1 << 40  # a response is bounded by its message size; this guards shapes


def messages() -> ModuleType:
    """The generated message classes (``inference_pb2``), imported on first use;
    :class:`~model_agnostic.errors.MissingDependencyError` without a recent enough protobuf."""
    try:
        from . import inference_pb2
    except Exception as exc:
        if not isinstance(exc, ImportError) and type(exc).__name__ != "VersionError":
            raise
        raise MissingDependencyError(  # no protobuf, or one older than the generated code
            f"the gRPC messages need protobuf >= 7.35.1 ({type(exc).__name__}: {exc}); "
            "install it with: pip install 'model-agnostic[serve]'"
        ) from None
    return inference_pb2


@dataclass(frozen=True)
class DecodedRequest:
    """A validated ``ModelInferRequest``: the inputs, the outputs asked for (None: all)."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None
    id: str


# ---------------------------------------------------------------------------- server side
def decode_infer_request(
    message: pb.ModelInferRequest, *, max_elements: int = 1 << 26
) -> DecodedRequest:
    """The request's arrays and requested outputs; :class:`ProtocolError` if malformed.

    Tensors over ``max_elements`` elements (their declared shape) are refused before
    anything is allocated. Arrays from raw contents are read-only views of the message's
    bytes."""
    if not message.inputs:
        raise ProtocolError("the request has no inputs; expected at least one tensor")
    inputs = _decode_tensors("input", message.inputs, message.raw_input_contents, max_elements)
    outputs: list[str] = []
    for index, output in enumerate(message.outputs):
        if not output.name:
            raise ProtocolError(f"outputs[{index}] has no name; expected an output's name")
        if output.name in outputs:
            raise ProtocolError(f"output {describe(output.name)} is requested twice")
        outputs.append(output.name)
    return DecodedRequest(inputs, outputs or None, message.id)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: DecodedRequest,
    outputs: Mapping[str, np.ndarray],
) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with the outputs ``request`` asked for, as raw contents.

    An unknown requested output is a :class:`ProtocolError` (400); an output the protocol
    cannot carry (complex dtype, a BYTES element that is not bytes or str) one with status
    500."""
    names = list(outputs) if request.outputs is None else request.outputs
    for name in names:
        if name not in outputs:
            raise ProtocolError(
                f"unknown output {describe(name)} requested; the model's outputs are "
                f"{list(outputs)}"
            )
    response = messages().ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request.id
    )
    _encode_tensors("output", [(name, outputs[name]) for name in names], response, 500)
    return response


# ---------------------------------------------------------------------------- client side
def encode_infer_request(
    model_name: str,
    inputs: Mapping[str, np.ndarray],
    *,
    model_version: str = "",
    outputs: Sequence[str] | None = None,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ``ModelInferRequest`` carrying ``inputs`` as raw contents; ``outputs=None`` asks
    for every output. A tensor the protocol cannot carry is a :class:`ProtocolError`."""
    if not inputs:
        raise ProtocolError("an inference request needs at least one input, got none")
    request = messages().ModelInferRequest(
        model_name=model_name, model_version=model_version, id=request_id
    )
    _encode_tensors("input", list(inputs.items()), request, None)
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def decode_infer_response(
    message: pb.ModelInferResponse,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Outputs by name (raw or typed contents) and ``{"model_name", "model_version", "id"}``;
    :class:`ProtocolError` if the response is malformed."""
    outputs = _decode_tensors("output", message.outputs, message.raw_output_contents, None)
    meta = {"model_name": message.model_name, "model_version": message.model_version}
    return outputs, {**meta, "id": message.id}


# ------------------------------------------------------------------------------ metadata
def metadata_message(document: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """The HTTP model metadata document (:func:`..metadata.model_metadata`) as a message.

    ``parameters`` has no place in the message and is left out; a tensor of unknown rank
    (``"shape": null``, a PyTorch model) gets an empty shape."""
    message = messages().ModelMetadataResponse(
        name=document["name"],
        versions=document.get("versions", []),
        platform=document.get("platform", ""),
    )
    for key in ("inputs", "outputs"):
        for tensor in document.get(key, []):
            getattr(message, key).add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"] or []
            )
    return message


def metadata_document(message: pb.ModelMetadataResponse) -> dict[str, Any]:
    """A ``ModelMetadataResponse`` as the HTTP document, for
    :func:`..metadata.specs_from_metadata` (which validates it)."""
    return {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        **{
            key: [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in getattr(message, key)
            ]
            for key in ("inputs", "outputs")
        },
    }


# -------------------------------------------------------------------------------- helpers
def _decode_tensors(
    kind: str, tensors: Sequence[Any], raw: Sequence[bytes], limit: int | None
) -> dict[str, np.ndarray]:
    """Check every tensor's header first, then read raw contents (if any) or typed ones."""
    field = f"raw_{kind}_contents"
    if raw and len(raw) != len(tensors):
        raise ProtocolError(
            f"the message has {len(raw)} {field} for {len(tensors)} {kind}s; send one per "
            f"{kind}, in the order of the {kind}s, or none (typed contents)"
        )
    headers: dict[str, tuple[str, tuple[int, ...], str]] = {}
    for index, tensor in enumerate(tensors):
        if not tensor.name:
            raise ProtocolError(f"{kind}s[{index}] has no name; every tensor needs one")
        where = f"{kind} {describe(tensor.name, 80)}"
        if tensor.name in headers:
            raise ProtocolError(f"{where} appears twice; tensor names must be unique")
        if tensor.datatype not in DATATYPES:
            raise ProtocolError(
                f"{where}: unknown datatype {describe(tensor.datatype)}; expected one of "
                f"{list(DATATYPES)}"
            )
        shape = check_shape(where, list(tensor.shape), _RESPONSE_LIMIT if limit is None else limit)
        if raw and tensor.HasField("contents") and tensor.contents.ListFields():
            raise ProtocolError(
                f"{where} has both typed contents and {field}[{index}]; send one of them"
            )
        headers[tensor.name] = (where, shape, tensor.datatype)
    arrays: dict[str, np.ndarray] = {}
    for index, (name, (where, shape, datatype)) in enumerate(headers.items()):
        if raw:
            arrays[name] = _from_raw(where, f"{field}[{index}]", raw[index], shape, datatype)
        else:
            arrays[name] = _from_contents(where, kind, tensors[index].contents, shape, datatype)
    return arrays


def _from_raw(
    where: str, label: str, chunk: bytes, shape: tuple[int, ...], datatype: str
) -> np.ndarray:
    """A tensor from its raw bytes, laid out as the HTTP binary extension's (little-endian
    row-major; BYTES length-prefixed); numeric ones are read-only views of ``chunk``."""
    expected = math.prod(shape) * DATATYPES[datatype].itemsize
    if datatype != "BYTES" and len(chunk) != expected:
        raise ProtocolError(
            f"{where}: {label} has {len(chunk)} bytes, expected {expected} for shape "
            f"{format_shape(shape)} {datatype}"
        )
    try:
        return array_from_binary(where, chunk, 0, len(chunk), shape, datatype)
    except ProtocolError as error:  # the codec speaks of HTTP's binary_data_size
        raise ProtocolError(str(error).replace("binary_data_size", f"{label}'s size")) from None


def _from_contents(
    where: str, kind: str, contents: Any, shape: tuple[int, ...], datatype: str
) -> np.ndarray:
    """A tensor from its typed contents: the one field its datatype uses, every value
    checked to fit."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise ProtocolError(
            f"{where}: {datatype} has no typed contents field; send it in raw_{kind}_contents"
        )
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise ProtocolError(
            f"{where}: {datatype} data go in contents.{field}, got contents.{others[0]}"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise ProtocolError(
            f"{where}: contents.{field} has {len(values)} elements, expected {count} for "
            f"shape {format_shape(shape)} {datatype} (or send raw_{kind}_contents)"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    native = DATATYPES[datatype].newbyteorder("=")
    if native.kind in "iu" and native.itemsize < 4 and count:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(native)
        bad = wide[(wide < info.min) | (wide > info.max)]
        if bad.size:
            raise ProtocolError(
                f"{where}: value {int(bad[0])} is out of range for {datatype} "
                f"[{info.min}, {info.max}]"
            )
        return wide.astype(native).reshape(shape)
    return np.array(values, dtype=native).reshape(shape)


def _encode_tensors(
    kind: str, tensors: Iterable[tuple[str, Any]], message: Any, status: int | None
) -> None:
    """Add each tensor's header to the message and its bytes to its raw contents."""
    raw = getattr(message, f"raw_{kind}_contents")
    entries = getattr(message, f"{kind}s")
    for name, value in tensors:
        where = f"{kind} {name!r}"
        array = np.asarray(value)
        try:
            datatype = datatype_of(array.dtype)
        except ProtocolError as error:
            raise ProtocolError(f"{where}: {error}", status=status) from None
        try:
            chunk = array_to_binary(where, array, datatype)
        except ProtocolError as error:
            raise ProtocolError(str(error), status=status) from None
        entries.add(name=name, datatype=datatype, shape=array.shape)
        raw.append(chunk.tobytes())
