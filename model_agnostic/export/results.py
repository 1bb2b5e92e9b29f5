"""Final results compared leaf by leaf: labels, keys and order equal, numbers within tolerance.

``process_result`` may return anything; :func:`leaves` flattens it to comparable leaves (keys
as strings, arrays as numbers, anything else not JSON-like as its ``repr``), the same way in
the torch-free artifact process, which sends its leaves back as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .referee import compare
from .report import FAIL, Comparison, Tolerances

__all__ = ["compare_results", "leaves"]


def compare_results(
    name: str, want: Any, got: Any, tol: Tolerances, exact: Callable[[], Any] | None = None
) -> Comparison:
    """Two final results, leaf by leaf: labels, keys and order equal, numbers within
    tolerance (refereed by the result computed from float64 outputs when given)."""
    want_leaves, got_leaves = leaves(want), leaves(got)
    if len(want_leaves) != len(got_leaves) or [w for w in want_leaves if not _is_number(w)] != [
        g for g in got_leaves if not _is_number(g)
    ]:
        return Comparison(
            name,
            math.inf,
            math.inf,
            FAIL,
            "results differ in structure, labels or order: "
            f"{_preview(want_leaves)} vs {_preview(got_leaves)}",
        )
    mask = [_is_number(w) and _is_number(g) for w, g in zip(want_leaves, got_leaves)]
    if any(_is_number(w) != _is_number(g) for w, g in zip(want_leaves, got_leaves)):
        return Comparison(
            name, math.inf, math.inf, FAIL, "a number on one side is not on the other"
        )
    numbers = [(float(w), float(g)) for (w, g), m in zip(zip(want_leaves, got_leaves), mask) if m]
    want_numbers = np.array([w for w, _ in numbers], dtype=np.float64)
    got_numbers = np.array([g for _, g in numbers], dtype=np.float64)

    def exact_numbers() -> np.ndarray | None:
        result = exact() if exact is not None else None
        if result is None:
            return None
        exact_leaves = leaves(result)
        if len(exact_leaves) != len(want_leaves):
            return None
        return np.array([float(e) for e, m in zip(exact_leaves, mask) if m and _is_number(e)])

    return compare(
        name,
        got_numbers,
        want_numbers,
        tol.atol,
        tol.rtol,
        exact_numbers if exact is not None else None,
        tol.noise_factor,
    )


def leaves(value: Any) -> list[Any]:
    """A result flattened to comparable leaves: keys as strings, arrays as numbers,
    numpy scalars as Python numbers, anything else not JSON-like as its ``repr``."""
    out: list[Any] = []
    _flatten(value, out)
    return out


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            out.append(str(key))
            _flatten(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _flatten(item, out)
    elif isinstance(value, np.ndarray):
        out.extend(value.ravel().tolist())
    elif isinstance(value, np.generic):
        out.append(value.item())
    elif value is None or isinstance(value, (str, bool, int, float)):
        out.append(value)
    else:
        out.append(repr(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _preview(values: list[Any]) -> str:
    text = repr(values[:6])
    return text[:-1] + ", ...]" if len(values) > 6 else text
