"""Model signatures in the Open Inference Protocol: the model metadata document, both ways.

A server writes it from a model's :class:`~model_agnostic.tensors.TensorSpec` list
(:func:`model_metadata`); a client reads the specs back (:func:`specs_from_metadata`).
Malformed documents raise :class:`~model_agnostic.errors.ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from ..errors import ProtocolError
from ..tensors import TensorSpec, is_fixed
from .codec import DATATYPES, datatype_of, describe

__all__ = ["model_metadata", "specs_from_metadata", "tensor_metadata"]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` with variable dimensions as -1 (null: unknown rank)."""
    try:
        datatype = datatype_of(spec.dtype)
    except ProtocolError as error:
        raise ProtocolError(f"tensor {spec.name!r}: {error}", status=500) from None
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
        raise ProtocolError(f"model metadata must be a JSON object, got {describe(doc)}")
    found: list[list[TensorSpec]] = []
    for key in ("inputs", "outputs"):
        entries = doc.get(key)
        if not isinstance(entries, list):
            raise ProtocolError(
                f"model metadata: {key!r} must be a list of tensors, got {describe(entries)}"
            )
        found.append([_spec_from_entry(entry, f"{key}[{i}]") for i, entry in enumerate(entries)])
    return found[0], found[1]


def _spec_from_entry(entry: Any, label: str) -> TensorSpec:
    where = f"model metadata {label}"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError(f"{where} must be an object with a string 'name'")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: unknown datatype {describe(datatype)}; expected one of {list(DATATYPES)}"
        )
    shape = entry.get("shape")
    if shape is None:
        return TensorSpec(entry["name"], _native(datatype), cast(Any, None))
    if not isinstance(shape, list) or not all(type(d) is int and d >= -1 for d in shape):
        raise ProtocolError(
            f"{where}: 'shape' must be a list of integers (-1 for variable), got {describe(shape)}"
        )
    dims = tuple(None if d == -1 else d for d in shape)
    return TensorSpec(entry["name"], _native(datatype), dims)


def _native(datatype: str) -> np.dtype:
    return DATATYPES[datatype].newbyteorder("=")
