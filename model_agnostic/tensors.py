"""Tensor signatures: what a model's inputs and outputs look like, and the one check of
arrays against them.

Every caller that validates inputs (``Model.predict_batch``, the server's data plane) uses
:func:`check_arrays`, which raises :class:`~model_agnostic.errors.TensorSpecError` (an
input error: HTTP 400 on a server) naming the input, what it got and what was expected.
Backends' ``infer`` trusts its caller and does not check again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TensorSpecError

__all__ = ["TensorSpec", "check_arrays", "describe_spec", "format_shape", "is_fixed"]

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: numpy dtype and shape, where a ``str``/``None`` dim is variable.

    ``shape`` is None when even the rank is unknown (a PyTorch network, a v1 server).
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None

    def describe(self) -> str:
        """``[-1, 3, 224, 224] float32`` (``any shape float32`` for an unknown rank)."""
        return describe_spec(self)


def is_fixed(dim: Any) -> bool:
    """Whether a spec dimension is a fixed size (not ``None``, a name or negative)."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def format_shape(shape: Iterable[Any]) -> str:
    """``[1, 3, 224]``; a variable dimension (a name, None, negative) shows as -1."""
    return "[" + ", ".join(str(d) if is_fixed(d) else "-1" for d in shape) + "]"


DtypeNames = Callable[[np.dtype], str]


def _numpy_name(dtype: np.dtype) -> str:
    return str(np.dtype(dtype))


def describe_spec(spec: TensorSpec, name_dtype: DtypeNames = _numpy_name) -> str:
    """``[-1, 3, 224, 224] float32`` for messages (``FP32`` with the protocol's namer)."""
    if spec.shape is None:
        return f"any shape {name_dtype(spec.dtype)}"
    return f"{format_shape(spec.shape)} {name_dtype(spec.dtype)}"


def check_arrays(
    specs: Sequence[TensorSpec],
    arrays: Mapping[str, Any],
    source: str = "preprocessing",
    name_dtype: DtypeNames = _numpy_name,
) -> None:
    """Check that ``arrays`` holds exactly the inputs ``specs`` names, each a numpy array of
    the spec's dtype, rank and fixed dimensions. ``source`` says who gave the arrays;
    ``name_dtype`` names dtypes in messages (numpy's names by default; a server passes the
    protocol's, ``FP32``)."""
    names = [spec.name for spec in specs]
    for name in arrays:
        if name not in names:
            raise TensorSpecError(
                f"{source} gave an unknown input {str(name)[:80]!r}; the model's inputs are {names}"
            )
    for spec in specs:
        if spec.name not in arrays:
            raise TensorSpecError(
                f"{source} gave no input {spec.name!r} ({describe_spec(spec, name_dtype)}); "
                f"it gave {list(arrays)}"
            )
        _check_one(spec, arrays[spec.name], source, name_dtype)


def _check_one(spec: TensorSpec, array: Any, source: str, name_dtype: DtypeNames) -> None:
    where, expected = f"input {spec.name!r}", describe_spec(spec, name_dtype)
    if not isinstance(array, np.ndarray):
        raise TensorSpecError(
            f"{where}: {source} gave {type(array).__name__}, expected a numpy array {expected}"
        )
    got = f"{source} gave {format_shape(array.shape)} {_safe_name(name_dtype, array.dtype)}"
    if array.dtype != spec.dtype:
        hint = (
            f"; convert with array.astype(np.{np.dtype(spec.dtype)})"
            if name_dtype is _numpy_name
            else ""
        )
        raise TensorSpecError(f"{where}: {got}, the model expects {expected}{hint}")
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        hint = (
            "; add the leading batch axis (array[None])"
            if array.ndim + 1 == len(spec.shape)
            else ""
        )
        raise TensorSpecError(
            f"{where}: {got} of rank {array.ndim}, the model expects {expected}{hint}"
        )
    for axis, (want, have) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if is_fixed(want) and want != have:
            raise TensorSpecError(
                f"{where}: {got} with {have} in dimension {axis}, the model expects {expected}"
            )


def _safe_name(name_dtype: DtypeNames, dtype: np.dtype) -> str:
    try:
        return name_dtype(dtype)
    except Exception:
        return str(dtype)
