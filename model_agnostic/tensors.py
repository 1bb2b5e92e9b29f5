"""Tensor signatures: what a model's inputs and outputs look like, and checking arrays against them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import TensorSpecError

__all__ = ["TensorSpec", "check_arrays"]

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
        if self.shape is None:
            return f"any shape {self.dtype}"
        dims = ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"[{dims}] {self.dtype}"

    def check(self, array: np.ndarray, source: str = "preprocessing") -> None:
        """Raise :class:`TensorSpecError` unless ``array`` fits this spec."""
        fits = array.dtype == self.dtype and (self.shape is None or (
            array.ndim == len(self.shape)
            and all(
                not isinstance(want, int) or want < 0 or want == got
                for want, got in zip(self.shape, array.shape)
            )
        ))
        if not fits:
            hint = ""
            if self.shape is not None and array.ndim + 1 == len(self.shape):
                hint = "; add the leading batch axis (array[None])"
            elif array.dtype != self.dtype:
                hint = f"; convert with array.astype(np.{self.dtype})"
            raise TensorSpecError(
                f"input {self.name!r}: {source} gave shape {tuple(array.shape)} "
                f"{array.dtype}, but the model expects {self.describe()}{hint}"
            )


def check_arrays(
    specs: Sequence[TensorSpec], arrays: Mapping[str, np.ndarray], source: str = "preprocessing"
) -> None:
    """Check that ``arrays`` has exactly the inputs ``specs`` names, each fitting its spec."""
    names = [spec.name for spec in specs]
    if set(arrays) != set(names):
        raise TensorSpecError(
            f"{source} gave inputs {sorted(arrays)}, but the model expects {names}"
        )
    for spec in specs:
        array = arrays[spec.name]
        if not isinstance(array, np.ndarray):
            raise TensorSpecError(
                f"input {spec.name!r}: {source} gave {type(array).__name__}, "
                f"expected a numpy array {spec.describe()}"
            )
        spec.check(array, source)
