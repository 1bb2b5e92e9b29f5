"""The Open Inference Protocol (KServe v2) REST messages, with Triton's binary tensor extension.

An I/O-free codec shared by the server (:func:`decode_infer_request`,
:func:`encode_infer_response`) and the remote backend (:func:`encode_infer_request`,
:func:`decode_infer_response`). It knows bytes, header values and numpy arrays, nothing of
HTTP. Anything malformed raises :class:`~model_agnostic.errors.ProtocolError` whose
``status`` hints the HTTP status a server answers (400; 500 for outputs that cannot be
encoded); the client translates it at its boundary. See ``docs/serving.md`` ("Protocol").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ..errors import ProtocolError
from ..tensors import TensorSpec, describe_spec, is_fixed
from .codec import (
    DATATYPES,
    array_from_binary,
    array_from_json,
    array_to_binary,
    array_to_json,
    check_shape,
    datatype_of,
    describe,
    numeric_from_json,
    split_bytes,
)
from .json_body import (
    DEFAULT_MAX_DEPTH,
    HEADER_LENGTH,
    as_bytes,
    dumps,
    header_split,
    json_depth,
    load_object,
    parse_fast,
    plain_numbers,
)

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "InferRequest",
    "RequestedOutput",
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
]

#: Elements one tensor may have (its declared shape), checked before anything is allocated.
DEFAULT_MAX_ELEMENTS = 1 << 26

_JSON = "application/json"
_BINARY = "application/octet-stream"
_RESPONSE_LIMIT = 1 << 40  # responses are bounded by their body; this only guards shapes


@dataclass(frozen=True)
class RequestedOutput:
    """An output a request asks for; ``binary`` asks for it as binary data."""

    name: str
    binary: bool = False


@dataclass
class InferRequest:
    """A decoded inference request.

    An output is sent as binary data if its ``RequestedOutput.binary`` or ``binary_output``
    is true. :func:`decode_infer_request` folds the request-level ``binary_data_output`` into
    each listed output (a per-output ``binary_data`` wins, as the spec says), so there
    ``binary_output`` is true only when ``outputs`` is ``None`` (all outputs).
    """

    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False


# ---------------------------------------------------------------------------- server side
def decode_infer_request(
    body: bytes,
    header_length: str | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    raw_input: TensorSpec | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> InferRequest:
    """Decode and validate an infer request body; :class:`ProtocolError` (400) if malformed.

    ``header_length`` is the ``Inference-Header-Content-Length`` header, if sent. ``"0"``
    marks a raw binary body: one tensor, no JSON, decoded with ``raw_input`` (the spec of
    the model's single input, its first dimension inferred from the byte count when
    variable); without ``raw_input`` such a request is refused. Tensors over
    ``max_elements`` elements are refused before anything is allocated, JSON nested deeper
    than ``max_depth`` before it is parsed. JSON tensors come back writable; binary ones
    are read-only views of ``body``.
    """
    body = as_bytes(body, "request")
    split = header_split(header_length, len(body))
    if split == 0:
        return InferRequest(inputs=_decode_raw(body, raw_input, max_elements))
    text = body if split is None else body[:split]
    doc, tensors = _parse_and_decode(text, "request", "input", body, split, max_elements, max_depth)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"request 'id' must be a string, got {describe(request_id)}")
    parameters = _parameters(doc, "request")
    binary_output = _flag(parameters, "binary_data_output", "request parameters")
    outputs = _requested_outputs(doc.get("outputs"), binary_output)
    return InferRequest(
        inputs=tensors,
        id=request_id,
        parameters=parameters,
        outputs=outputs,
        binary_output=binary_output and outputs is None,
    )


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for ``outputs``, as ``request`` asked for them.

    An unknown requested output is a :class:`ProtocolError` (400); an output the protocol
    cannot carry (complex dtype, non-UTF-8 BYTES asked for as JSON) a ``ProtocolError``
    with status 500 that says what to do.
    """
    if request.outputs is None:
        selected = [(name, request.binary_output) for name in outputs]
    else:
        for wanted in request.outputs:
            if wanted.name not in outputs:
                raise ProtocolError(
                    f"unknown output {describe(wanted.name)} requested; the model's outputs "
                    f"are {list(outputs)}"
                )
        selected = [(o.name, o.binary or request.binary_output) for o in request.outputs]
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    doc["id"] = request.id or ""
    doc["outputs"], chunks = _encode_tensors(
        "output", [(name, outputs[name], binary) for name, binary in selected]
    )
    return _assemble(doc, chunks)


# ---------------------------------------------------------------------------- client side
def encode_infer_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary: bool = True,
    outputs: Sequence[str] | None = None,
    binary_outputs: bool = True,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an infer request; ``outputs=None`` asks for all outputs."""
    if not inputs:
        raise ProtocolError("an inference request needs at least one input, got none")
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    doc["inputs"], chunks = _encode_tensors(
        "input", [(name, array, binary) for name, array in inputs.items()]
    )
    if outputs is not None:
        doc["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary_outputs}} for name in outputs
        ]
    elif binary_outputs:
        doc["parameters"] = {"binary_data_output": True}
    return _assemble(doc, chunks)


def decode_infer_response(
    body: bytes, header_length: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Outputs by name and ``{"model_name", "model_version", "id", "parameters"}``.

    Raises :class:`ProtocolError` if the response is malformed in any way.
    """
    body = as_bytes(body, "response")
    split = header_split(header_length, len(body))
    if split == 0:
        raise ProtocolError(f"a response cannot be a raw binary body ({HEADER_LENGTH}: 0)")
    text = body if split is None else body[:split]
    doc, outputs = _parse_and_decode(text, "response", "output", body, split, _RESPONSE_LIMIT, None)
    meta: dict[str, Any] = {"parameters": _parameters(doc, "response")}
    for key in ("model_name", "model_version", "id"):
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(f"response {key!r} must be a string, got {describe(value)}")
        meta[key] = value
    return outputs, meta


# -------------------------------------------------------------------------------- helpers
def _parameters(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An entry's ``parameters``; ``null`` reads as absent (KServe's server sends it)."""
    parameters = entry.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{where} 'parameters' must be an object, got {describe(parameters)}")
    return parameters


def _flag(parameters: Mapping[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: {key!r} must be true or false, got {describe(value)}")
    return value


def _requested_outputs(entries: Any, binary_output: bool) -> list[RequestedOutput] | None:
    """The request's ``outputs``; an absent or empty list means all outputs."""
    if entries is None or entries == []:
        return None
    if not isinstance(entries, list):
        raise ProtocolError(f"request 'outputs' must be a list, got {describe(entries)}")
    requested: dict[str, RequestedOutput] = {}
    for index, entry in enumerate(entries):
        where = f"outputs[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{where} must be an object with a non-empty string 'name'")
        if name in requested:
            raise ProtocolError(f"output {describe(name)} is requested twice")
        parameters = _parameters(entry, f"output {name!r}")
        binary = binary_output
        if "binary_data" in parameters:
            binary = _flag(parameters, "binary_data", f"output {name!r} parameters")
        requested[name] = RequestedOutput(name, binary)
    return list(requested.values())


class _NotPlain(Exception):
    """The fast path cannot decode this body exactly; the checking path will."""


def _parse_and_decode(
    text: bytes,
    what: str,
    kind: str,
    body: bytes,
    split: int | None,
    limit: int,
    max_depth: int | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The document and its tensors. The fast path (orjson, then numpy in one call per
    tensor) takes plain bodies: strict JSON whose tensor data are numbers and nulls only,
    no deeper than ``max_depth``. Anything else, errors included, is decoded again by the
    checking path (depth scanned before parsing, the standard library's parser, every value
    checked), so what it accepts and the messages it gives are the same as ever."""
    fast = parse_fast(text)
    if fast is not None:
        try:
            if what == "response":
                _refuse_error_document(fast)
            plain = plain_numbers(text, fast, max_depth)
            if not plain and max_depth is not None and json_depth(text, max_depth) > max_depth:
                raise _NotPlain  # the checking path refuses it, saying how deep
            tensors = _decode_tensors(fast.get(f"{kind}s"), kind, body, split, limit, plain=plain)
        except (_NotPlain, ProtocolError):
            pass
        else:
            return fast, tensors
    doc = load_object(text, what, max_depth, fast=False)
    if what == "response":
        _refuse_error_document(doc)
    return doc, _decode_tensors(doc.get(f"{kind}s"), kind, body, split, limit)


def _refuse_error_document(doc: dict[str, Any]) -> None:
    if "outputs" not in doc and "error" in doc:
        raise ProtocolError(f"the server answered with an error: {describe(doc['error'], 200)}")


def _decode_tensors(
    entries: Any,
    kind: str,
    body: bytes,
    split: int | None,
    limit: int,
    plain: bool | None = None,
) -> dict[str, np.ndarray]:
    """Decode the ``inputs`` (or ``outputs``) list, JSON data first, then the binary tail.

    ``plain`` (the fast path): JSON data go through numpy in one call, and anything it
    cannot take exactly raises :class:`_NotPlain`, as does JSON data when ``plain`` is
    False. ``None``: the checking path."""
    if not isinstance(entries, list) or (kind == "input" and not entries):
        wanted = "a non-empty list" if kind == "input" else "a list"
        raise ProtocolError(f"'{kind}s' must be {wanted} of tensors, got {describe(entries)}")
    arrays: dict[str, np.ndarray | None] = {}
    binary: list[tuple[str, str, tuple[int, ...], str, int]] = []
    for index, entry in enumerate(entries):
        name, where, shape, datatype, size = _tensor_header(entry, kind, index, limit)
        if name in arrays:
            raise ProtocolError(f"{where} appears twice; tensor names must be unique")
        arrays[name] = None
        if size is None and plain is not None:
            array = numeric_from_json(entry["data"], shape, datatype) if plain else None
            if array is None:
                raise _NotPlain
            arrays[name] = array
        elif size is None:
            arrays[name] = array_from_json(where, entry["data"], shape, datatype)
        else:
            binary.append((name, where, shape, datatype, size))
    offset = len(body) if split is None else split
    declared = sum(item[4] for item in binary)
    if declared != len(body) - offset:
        hint = f" and no {HEADER_LENGTH} header" if split is None else ""
        raise ProtocolError(
            f"the {kind}s declare {declared} bytes of binary data (parameters.binary_data_size),"
            f" but the body has {len(body) - offset} bytes after the JSON{hint}"
        )
    for name, where, shape, datatype, size in binary:
        arrays[name] = array_from_binary(where, body, offset, size, shape, datatype)
        offset += size
    return cast("dict[str, np.ndarray]", arrays)


def _tensor_header(
    entry: Any, kind: str, index: int, limit: int
) -> tuple[str, str, tuple[int, ...], str, int | None]:
    """Validate one tensor's name, datatype, shape and data/binary_data_size fields."""
    label = f"{kind}s[{index}]"
    if not isinstance(entry, dict):
        raise ProtocolError(
            f"{label} must be an object with 'name', 'shape', 'datatype' and 'data', "
            f"got {describe(entry)}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        missing = "has no 'name'" if name is None else "'name' must be a non-empty string"
        raise ProtocolError(f"{label} {missing}")
    where = f"{kind} {describe(name, 80)}"
    for key in ("shape", "datatype"):
        if key not in entry:
            raise ProtocolError(f"{where} ({label}) has no {key!r}")
    datatype = entry["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: unknown datatype {describe(datatype)}; expected one of {list(DATATYPES)}"
        )
    shape = check_shape(where, entry["shape"], limit)
    size = _parameters(entry, where).get("binary_data_size")
    if size is None:
        if "data" not in entry:
            raise ProtocolError(
                f"{where} ({label}) has no 'data' (nor parameters.binary_data_size for binary data)"
            )
    elif type(size) is not int or size < 0:
        raise ProtocolError(
            f"{where}: binary_data_size must be a non-negative integer, got {describe(size)}"
        )
    elif "data" in entry:
        raise ProtocolError(f"{where} has both 'data' and binary_data_size; send one of them")
    return name, where, shape, datatype, size


def _decode_raw(body: bytes, spec: TensorSpec | None, limit: int) -> dict[str, np.ndarray]:
    """A raw binary body (``Inference-Header-Content-Length: 0``): the single input's bytes."""
    if spec is None:
        raise ProtocolError(
            f"{HEADER_LENGTH}: 0 marks a raw binary body, which only a model with exactly one "
            "input accepts; send a JSON inference request instead"
        )
    where = f"input {spec.name!r} (raw binary body)"
    datatype = datatype_of(spec.dtype)
    if datatype != "BYTES":
        shape = _raw_shape(where, spec, len(body), DATATYPES[datatype].itemsize, limit, "bytes")
        return {spec.name: array_from_binary(where, body, 0, len(body), shape, datatype)}
    items = split_bytes(where, memoryview(body), None)
    shape = _raw_shape(where, spec, len(items), 1, limit, "elements")
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return {spec.name: array.reshape(shape)}


def _raw_shape(
    where: str, spec: TensorSpec, total: int, unit: int, limit: int, what: str
) -> tuple[int, ...]:
    """The shape of a raw body: ``total`` bytes of ``unit`` bytes each, or BYTES elements."""
    dims = spec.shape
    if dims is None or not all(is_fixed(d) for d in dims[1:]):
        raise ProtocolError(
            f"{where}: the model expects {describe_spec(spec)}; a raw body can only leave "
            "the first dimension variable, send a JSON header with the shape instead"
        )
    item = math.prod(cast("tuple[int, ...]", dims[1:])) * unit
    shape = list(cast("tuple[int, ...]", dims))
    if dims and not is_fixed(dims[0]):
        shape[0] = total // item if item else 0
    if math.prod(shape) * unit != total:
        raise ProtocolError(f"{where}: {total} {what} do not fit the model's {describe_spec(spec)}")
    return check_shape(where, shape, limit)


def _encode_tensors(
    kind: str, tensors: Sequence[tuple[str, Any, bool]]
) -> tuple[list[dict[str, Any]], list[memoryview]]:
    """The JSON entries of ``tensors`` and the binary chunks that follow the JSON."""
    entries: list[dict[str, Any]] = []
    chunks: list[memoryview] = []
    for name, value, binary in tensors:
        where = f"{kind} {name!r}"
        array = np.asarray(value)
        try:
            datatype = datatype_of(array.dtype)
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}", status=500) from None
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunk = array_to_binary(where, array, datatype)
            entry["parameters"] = {"binary_data_size": chunk.nbytes}
            chunks.append(chunk)
        else:
            # numbers go to orjson as the array itself (non-finite as null, strict JSON)
            entry["data"] = (
                array_to_json(where, array, datatype)
                if datatype == "BYTES"
                else np.ascontiguousarray(array).reshape(-1)
            )
        entries.append(entry)
    return entries, chunks


def _assemble(doc: dict[str, Any], chunks: list[memoryview]) -> tuple[bytes, dict[str, str]]:
    """The body (JSON, then any binary chunks) and its headers."""
    header = dumps(doc)
    if not chunks:
        return header, {"Content-Type": _JSON}
    body = b"".join([header, *chunks])
    return body, {"Content-Type": _BINARY, HEADER_LENGTH: str(len(header))}
