"""Batch-axis arithmetic: count the rows of one input, merge many, split outputs back.

Every array a model exchanges carries a leading batch axis. One raw input contributes
``count(arrays)`` rows (1 for most models, 10 for TenCrop); many inputs are merged into
one backend call and the outputs are split back by the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InferenceError, TensorSpecError

__all__ = ["count", "merge", "split"]

Arrays = dict[str, np.ndarray]


def count(arrays: Mapping[str, np.ndarray]) -> int:
    """The rows one input contributes; every array must agree on it."""
    sizes = {name: (array.shape[0] if array.ndim else None) for name, array in arrays.items()}
    if not sizes:
        raise TensorSpecError("no arrays: expected at least one input with a batch axis")
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise TensorSpecError(
            f"inputs with different batch sizes {sizes}; every input of one example must "
            "have the same leading (batch) axis"
        )
    return int(next(iter(sizes.values())) or 0)


def merge(parts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> Arrays:
    """Concatenate the inputs of many examples along the batch axis (no copy for one)."""
    if len(parts) == 1:
        return {name: parts[0][name] for name in names}
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


def split(outputs: Mapping[str, np.ndarray], counts: Sequence[int]) -> list[Arrays]:
    """Outputs of a merged call, cut back into one ``{name: rows}`` per example."""
    total = int(sum(counts))
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceError(
                f"output {name!r} has shape {tuple(array.shape)}, but the batch had {total} "
                "rows; every output needs the batch as its leading axis"
            )
    bounds = np.cumsum([0, *counts])
    return [
        {name: array[start:stop] for name, array in outputs.items()}
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
