"""Model signatures in the Open Inference Protocol: metadata documents and input checks.

Part of :mod:`model_agnostic.serving.protocol`, which re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from ..errors import ProtocolError, RemoteResponseError, ServingError
from ..tensors import TensorSpec
from ._codec import DATATYPES, datatype_of, describe, format_shape

__all__ = [
    "check_inputs",
    "describe_spec",
    "is_fixed",
    "model_metadata",
    "specs_from_metadata",
    "tensor_metadata",
]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` with variable dimensions as -1 (null: unknown rank)."""
    try:
        datatype = datatype_of(spec.dtype)
    except ProtocolError as error:
        raise ServingError(f"tensor {spec.name!r}: {error}") from None
    shape = None if spec.shape is None else [d if is_fixed(d) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": datatype, "shape": shape}


def model_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> dict[str, Any]:
    """The model metadata document; ``versions`` is left out when empty."""
    doc: dict[str, Any] = {"name": name}
    if versions:
        doc["versions"] = list(versions)
    doc["platform"] = platform
    doc["inputs"] = [tensor_metadata(spec) for spec in inputs]
    doc["outputs"] = [tensor_metadata(spec) for spec in outputs]
    return doc


def specs_from_metadata(doc: Mapping[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs from a model metadata document (-1 dims become ``None``)."""
    if not isinstance(doc, Mapping):
        raise RemoteResponseError(f"model metadata must be a JSON object, got {describe(doc)}")
    found: list[list[TensorSpec]] = []
    for key in ("inputs", "outputs"):
        entries = doc.get(key)
        if not isinstance(entries, list):
            raise RemoteResponseError(
                f"model metadata: {key!r} must be a list of tensors, got {describe(entries)}"
            )
        found.append([_spec_from_entry(entry, f"{key}[{i}]") for i, entry in enumerate(entries)])
    return found[0], found[1]


def check_inputs(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Check names, datatypes, ranks and fixed dimensions; :class:`ProtocolError` (400) if off.

    A spec whose shape is ``None`` (unknown rank) checks only the name and datatype.
    """
    names = [spec.name for spec in specs]
    for name in inputs:
        if name not in names:
            raise ProtocolError(
                f"unknown input {describe(name)}; the model's inputs are {names}"
            )
    for spec in specs:
        if spec.name not in inputs:
            raise ProtocolError(
                f"missing input {spec.name!r} ({describe_spec(spec)}); the request has "
                f"{list(inputs)}"
            )
        array = np.asarray(inputs[spec.name])
        given, shape = _datatype_name(array.dtype), format_shape(array.shape)
        if given != _datatype_name(spec.dtype):
            raise ProtocolError(
                f"input {spec.name!r}: datatype {given}, the model expects {describe_spec(spec)}"
            )
        if spec.shape is None:
            continue
        if array.ndim != len(spec.shape):
            raise ProtocolError(
                f"input {spec.name!r}: shape {shape} has rank {array.ndim}, the model expects "
                f"{describe_spec(spec)}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
            if is_fixed(want) and want != got:
                raise ProtocolError(
                    f"input {spec.name!r}: shape {shape} has {got} in dimension {axis}, the "
                    f"model expects {describe_spec(spec)}"
                )


def _spec_from_entry(entry: Any, label: str) -> TensorSpec:
    where = f"model metadata {label}"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RemoteResponseError(f"{where} must be an object with a string 'name'")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RemoteResponseError(
            f"{where}: unknown datatype {describe(datatype)}; expected one of {list(DATATYPES)}"
        )
    shape = entry.get("shape")
    if shape is None:
        return TensorSpec(entry["name"], _native(datatype), cast(Any, None))
    if not isinstance(shape, list) or not all(type(d) is int and d >= -1 for d in shape):
        raise RemoteResponseError(
            f"{where}: 'shape' must be a list of integers (-1 for variable), got "
            f"{describe(shape)}"
        )
    dims = tuple(None if d == -1 else d for d in shape)
    return TensorSpec(entry["name"], _native(datatype), dims)


def _native(datatype: str) -> np.dtype:
    return DATATYPES[datatype].newbyteorder("=")


def is_fixed(dim: Any) -> bool:
    """Whether a spec dimension is a fixed size (not ``None``, a name or negative)."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def _datatype_name(dtype: np.dtype) -> str:
    try:
        return datatype_of(dtype)
    except ProtocolError:
        return str(dtype)


def describe_spec(spec: TensorSpec) -> str:
    """``[-1, 3, 224, 224] FP32`` for error messages."""
    shape = "[unknown rank]" if spec.shape is None else format_shape(
        d if is_fixed(d) else -1 for d in spec.shape
    )
    return f"{shape} {_datatype_name(spec.dtype)}"
