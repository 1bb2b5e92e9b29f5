"""TF Serving's REST API, the server side: ``:predict`` requests in both forms, the
answers, model status and signature metadata. I/O-free, like the rest of the package.

* Row form: ``{"instances": [row, ...]}``; a row is a value (one input) or an object
  ``{input: value}``; the answer is ``{"predictions": [...]}`` in the same shape.
* Columnar form: ``{"inputs": tensor}`` or ``{"inputs": {input: tensor}}``, each tensor
  with its batch axis; the answer is ``{"outputs": ...}`` in the same shape.
* Binary values travel as ``{"b64": "<base64>"}`` and decode to ``bytes``.

A malformed request raises :class:`~model_agnostic.errors.ProtocolError` (status hint
400) naming what was wrong; the server answers errors as TF Serving does, ``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..tensors import TensorSpec, format_shape, is_fixed
from .codec import MAX_RANK, array_from_json, check_shape, datatype_of, describe
from .v2 import DEFAULT_MAX_ELEMENTS

__all__ = [
    "PredictRequest",
    "decode_predict_request",
    "encode_predict_response",
    "model_status",
    "signature_metadata",
]

Arrays = dict[str, np.ndarray]

#: numpy dtype kind/size -> TF Serving's DataType name, for the signature metadata.
_TF_DTYPES = {
    ("f", 2): "DT_HALF",
    ("f", 4): "DT_FLOAT",
    ("f", 8): "DT_DOUBLE",
    ("i", 1): "DT_INT8",
    ("i", 2): "DT_INT16",
    ("i", 4): "DT_INT32",
    ("i", 8): "DT_INT64",
    ("u", 1): "DT_UINT8",
    ("u", 2): "DT_UINT16",
    ("u", 4): "DT_UINT32",
    ("u", 8): "DT_UINT64",
    ("b", 1): "DT_BOOL",
}


@dataclass(frozen=True)
class PredictRequest:
    """A decoded ``:predict`` request: the arrays, and the form to answer in."""

    inputs: Arrays
    columnar: bool
    #: whether the request named its inputs (an object per row / an ``inputs`` object)
    named: bool


def decode_predict_request(
    doc: Any, specs: Sequence[TensorSpec], max_elements: int = DEFAULT_MAX_ELEMENTS
) -> PredictRequest:
    """The arrays of a ``:predict`` body, shaped and typed by the model's input ``specs``;
    an input of more than ``max_elements`` values is refused."""
    if not isinstance(doc, dict):
        raise ProtocolError(f"the request must be a JSON object, got {describe(doc)}")
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows == has_columns:
        raise ProtocolError(
            "the request needs exactly one of 'instances' (row form) or 'inputs' (columnar form)"
        )
    names = [spec.name for spec in specs]
    if has_rows:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise ProtocolError(f"'instances' must be a non-empty list, got {describe(rows)}")
        named = all(isinstance(row, dict) and not _is_b64(row) for row in rows)
        if named:
            columns = {
                name: [_row_value(row, name, i) for i, row in enumerate(rows)] for name in names
            }
            _no_extra_keys(rows[0], names)
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise ProtocolError(
                f"the model has inputs {names}: each instance must be an object keyed by input name"
            )
    else:
        value = doc["inputs"]
        named = isinstance(value, dict) and not _is_b64(value)
        if named:
            _no_extra_keys(value, names)
            missing = [n for n in names if n not in value]
            if missing:
                raise ProtocolError(f"'inputs' lacks {missing}; the model's inputs are {names}")
            columns = {name: value[name] for name in names}
        elif len(names) == 1:
            columns = {names[0]: value}
        else:
            raise ProtocolError(
                f"the model has inputs {names}: 'inputs' must be an object keyed by input name"
            )
    arrays = {spec.name: _array(spec, columns[spec.name], max_elements) for spec in specs}
    return PredictRequest(arrays, columnar=has_columns, named=named)


def encode_predict_response(outputs: Arrays, request: PredictRequest) -> dict[str, Any]:
    """``{"predictions": ...}`` or ``{"outputs": ...}``, as the request's form asks."""
    values = {name: _jsonable(array) for name, array in outputs.items()}
    single = len(values) == 1
    if request.columnar:
        return {"outputs": next(iter(values.values())) if single else values}
    if single:
        return {"predictions": next(iter(values.values()))}
    count = len(next(iter(values.values())))
    return {
        "predictions": [{name: column[i] for name, column in values.items()} for i in range(count)]
    }


def model_status(versions: Sequence[str]) -> dict[str, Any]:
    """``GET /v1/models/{name}[/versions/{v}]``: each served version AVAILABLE."""
    return {
        "model_version_status": [
            {
                "version": version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version in versions
        ]
    }


def signature_metadata(
    name: str, version: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """``GET .../metadata``: a ``serving_default`` signature like TF Serving's."""

    def tensors(specs: Sequence[TensorSpec]) -> dict[str, Any]:
        return {spec.name: _tensor_info(spec) for spec in specs}

    signature = {
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": version},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
    }


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dtype = np.dtype(spec.dtype)
    name = (
        "DT_STRING"
        if dtype.kind in "OSU"
        else _TF_DTYPES.get((dtype.kind, dtype.itemsize), "DT_INVALID")
    )
    info: dict[str, Any] = {"dtype": name, "name": f"{spec.name}:0"}
    if spec.shape is None:
        info["tensor_shape"] = {"unknown_rank": True}
    else:
        info["tensor_shape"] = {
            "dim": [{"size": str(d if is_fixed(d) else -1), "name": ""} for d in spec.shape]
        }
    return info


def _row_value(row: Mapping[str, Any], name: str, index: int) -> Any:
    if name not in row:
        raise ProtocolError(f"instance {index} has no input {name!r}; it has {sorted(row)}")
    return row[name]


def _no_extra_keys(value: Mapping[str, Any], names: Sequence[str]) -> None:
    extra = [key for key in value if key not in names]
    if extra:
        raise ProtocolError(f"unknown input(s) {extra}; the model's inputs are {list(names)}")


def _array(spec: TensorSpec, value: Any, max_elements: int) -> np.ndarray:
    """One input's values as an array of the spec's dtype, every value checked as the v2
    JSON path checks it (no ``true`` for a number, no ``1.5`` for an integer, nothing
    ragged); ``{"b64": ...}`` objects become bytes."""
    where = f"input {spec.name!r}"
    dtype = np.dtype(spec.dtype)
    shape = check_shape(where, _nested_shape(value), max_elements)
    if dtype.kind in "OSU":
        array = np.array(_bytes(where, value), dtype=object)
    elif _holds_objects(value):
        raise ProtocolError(
            f"{where}: expected numbers for {dtype}, got an object "
            '(binary {"b64": ...} values are for string inputs)'
        )
    else:
        data = value if isinstance(value, list) else [value]
        array = array_from_json(where, data, shape, datatype_of(dtype))
    if array.shape != shape:  # bytes: np.array found a different (ragged) shape
        raise ProtocolError(f"{where}: not a rectangular array ({format_shape(shape)} expected)")
    if spec.shape is not None and (
        array.ndim != len(spec.shape)
        or any(is_fixed(w) and w != g for w, g in zip(spec.shape, array.shape))
    ):
        raise ProtocolError(
            f"{where}: shape {format_shape(array.shape)}, the model expects "
            f"{format_shape(spec.shape)} (the batch axis first)"
        )
    return array


def _nested_shape(value: Any) -> list[int]:
    """The shape a nested list claims through its first items (checked in full later)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_RANK or not value:
            break
        value = value[0]
    return shape


def _is_b64(value: Any) -> bool:
    """``{"b64": ...}``: a binary value, not an object keyed by input name."""
    return isinstance(value, dict) and set(value) == {"b64"}


def _holds_objects(value: Any) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, dict)


def _bytes(where: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_bytes(where, item) for item in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise ProtocolError(
                f'{where}: a binary value must be {{"b64": "<base64>"}}, got {describe(value)}'
            )
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise ProtocolError(f"{where}: 'b64' is not valid base64") from None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise ProtocolError(
        f'{where}: expected strings or {{"b64": ...}} values, got {describe(value)}'
    )


def _jsonable(array: np.ndarray) -> Any:
    """An output as JSON values; bytes that are not UTF-8 go as ``{"b64": ...}``."""
    if array.dtype.kind not in "OSU":
        return np.ascontiguousarray(array)  # orjson writes numpy arrays natively
    return _strings(array.tolist())


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(item) for item in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value
