"""Task-level agreement, reported beside the numbers: do both sides make the same decisions?

For classifiers, top-1 and top-k agreement; for multi-label outputs (values in [0, 1] that
do not sum to 1, like CheXNet's sigmoids), decisions flipped at the threshold. Counted over
every row of every sample; reported, not gated (a flip between two values inside the
tolerance is not a bug).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Arrays
from .report import Tolerances

__all__ = ["task_agreement"]


def task_agreement(want: Arrays, got: Arrays, tol: Tolerances) -> dict[str, Any]:
    """Per output: top-1 / top-k agreement (classification) or decisions flipped at the
    threshold (multi-label), counted over every row of every sample."""
    task: dict[str, Any] = {}
    for name, ref in want.items():
        cand = got.get(name)
        kind = _task_kind(ref, tol.task)
        if kind is None or cand is None or cand.shape != ref.shape:
            continue
        if kind == "multilabel":
            flipped = (ref >= tol.threshold) != (cand >= tol.threshold)
            task[name] = {
                "kind": kind,
                "rows": int(ref.shape[0]),
                "decisions": int(ref.size),
                "threshold": tol.threshold,
                "flips": int(flipped.sum()),
                "flips_per_class": flipped.reshape(ref.shape[0], -1).sum(0).tolist(),
            }
        else:
            k = min(tol.topk, ref.shape[1])
            top_ref, top_cand = np.argsort(-ref, axis=1), np.argsort(-cand, axis=1)
            topk = [set(a[:k]) == set(b[:k]) for a, b in zip(top_ref, top_cand)]
            task[name] = {
                "kind": kind,
                "rows": int(ref.shape[0]),
                "k": int(k),
                "top1_agree": int(np.sum(top_ref[:, 0] == top_cand[:, 0])),
                "topk_agree": int(sum(topk)),
            }
    return task


def _task_kind(array: np.ndarray, setting: str) -> str | None:
    if setting == "none" or array.ndim != 2 or array.dtype.kind != "f" or array.size == 0:
        return None
    if setting != "auto":
        return setting
    in_unit = bool(np.all((array >= 0) & (array <= 1)))
    sums_to_one = bool(np.allclose(array.sum(axis=1), 1.0, atol=1e-3))
    if in_unit and not sums_to_one:
        return "multilabel"
    return "classification" if array.shape[1] >= 2 else None
