"""Verify stage ``heatmaps`` (models with :attr:`~model_agnostic.Model.cam`): the class
activation maps of every class, computed from each side's own feature map and its own
classifier weights (PyTorch's live network; the weights shipped beside the graph),
normalised the same way, must agree within :data:`HEATMAP_ATOL` (max abs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import rows
from ..errors import ModelAgnosticError
from ..heatmaps import explain_results
from ..model import Model
from .report import FAIL, PASS, UNVERIFIED, Comparison, StageReport

__all__ = ["HEATMAP_ATOL", "check_heatmaps"]

#: Normalised maps (values in [0, 1]) may differ by this much, anywhere.
HEATMAP_ATOL = 1e-4


def check_heatmaps(
    reference: Model,
    candidate: Model,
    samples: Sequence[Any],
    names: Sequence[str],
    want: Any,
    got: Any,
) -> StageReport:
    """Compare both sides' maps on every sample (``want``/``got``: verify's runs)."""
    if isinstance(got, Exception):
        return StageReport("heatmaps", UNVERIFIED, reason="not run: the candidate failed")
    labels = [str(x) for x in (getattr(reference, "labels", None) or [])]
    comparisons = []
    for i, (raw, name) in enumerate(zip(samples, names)):
        try:
            which = labels or [str(c) for c in range(len(reference.cam_weights()))]
            ours = _maps(reference, raw, rows.split(want.outputs, want.counts)[i], which)
            theirs = _maps(candidate, raw, rows.split(got.outputs, got.counts)[i], which)
        except ModelAgnosticError as exc:
            comparisons.append(Comparison(f"{name}:heatmaps", np.inf, np.inf, FAIL, str(exc)))
            continue
        gap = float(np.abs(ours - theirs).max())
        correlation = min(_correlation(a, b) for a, b in zip(ours, theirs))
        comparisons.append(
            Comparison(
                f"{name}:heatmaps",
                gap,
                gap,
                PASS if gap <= HEATMAP_ATOL else FAIL,
                f"{len(ours)} classes, maps normalised to [0, 1]; max abs {gap:.3g} "
                f"(allowed {HEATMAP_ATOL:g}), lowest correlation {correlation:.6f}",
            )
        )
    return StageReport.from_comparisons("heatmaps", comparisons)


def _maps(model: Model, raw: Any, outputs: Any, which: Any) -> np.ndarray:
    explained = explain_results(model, [raw], [outputs], [None], which, overlays=False)[0]
    return np.stack([heatmap.map for heatmap in explained.heatmaps])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
