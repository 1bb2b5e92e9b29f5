"""The v1 (TF Serving REST / KServe v1) ``:predict`` JSON messages.

Request ``{"instances": [...]}``: one instance per row, a nested list for a single input or
an object ``{input_name: row}`` for several. Answer ``{"predictions": [...]}``: a list of rows
(single output) or of objects keyed by output name. I/O-free: bytes and arrays only. A
malformed answer raises :class:`~model_agnostic.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import rows
from ..errors import ProtocolError, TensorSpecError
from ..tensors import TensorSpec

Arrays = dict[str, np.ndarray]

__all__ = ["encode_v1_request", "decode_v1_response"]


def encode_v1_request(inputs: Arrays, names: Sequence[str]) -> bytes:
    """``{"instances": [...]}``: one row per instance, a dict per row with several inputs."""
    _check_v1_inputs(inputs, names)
    if len(names) == 1:
        instances: list[Any] = inputs[names[0]].tolist()
    else:
        columns = {name: inputs[name].tolist() for name in names}
        rows = len(columns[names[0]])
        instances = [{name: columns[name][row] for name in names} for row in range(rows)]
    try:
        return json.dumps({"instances": instances}, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TensorSpecError(
            f"the inputs cannot be sent as v1 JSON ({exc}); v1 carries finite numbers, "
            "booleans and strings only"
        ) from None


def decode_v1_response(doc: Any, specs: Sequence[TensorSpec], rows: int, where: str) -> Arrays:
    """The outputs in a v1 ``{"predictions": [...]}`` answer, checked against ``specs``."""
    predictions = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise ProtocolError(
            f"{where}: expected a JSON object with a 'predictions' list of {rows} rows, got "
            f"{_preview(doc)}"
        )
    names = [spec.name for spec in specs]
    if all(isinstance(row, dict) for row in predictions):
        columns = {}
        for name in names:
            if not all(name in row for row in predictions):
                raise ProtocolError(
                    f"{where}: every prediction needs output {name!r}, got keys "
                    f"{sorted(predictions[0]) if predictions else []}"
                )
            columns[name] = [row[name] for row in predictions]
    elif len(names) == 1:
        columns = {names[0]: predictions}
    else:
        raise ProtocolError(
            f"{where}: the model has outputs {names}, so each prediction must be an object "
            f"keyed by output name; got {_preview(predictions[0])}"
        )
    result = {}
    for spec in specs:
        try:
            result[spec.name] = np.asarray(columns[spec.name], dtype=spec.dtype)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"{where}: output {spec.name!r} is not a rectangular array of {spec.dtype} ({exc})"
            ) from None
    return result


def _check_v1_inputs(inputs: Arrays, names: Sequence[str]) -> None:
    if set(inputs) != set(names):
        raise TensorSpecError(f"got inputs {sorted(inputs)}, the model expects {list(names)}")
    for name in names:
        if not isinstance(inputs[name], np.ndarray):
            raise TensorSpecError(
                f"input {name!r} must be a numpy array with a leading batch axis, "
                f"got {type(inputs[name]).__name__}"
            )
    rows.count(inputs)


def _preview(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)
    return text if len(text) <= 100 else text[:100] + "..."
