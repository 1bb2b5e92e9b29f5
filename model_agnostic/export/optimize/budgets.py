"""The gate a variant must pass: task-level budgets against the FP32 reference.

Top-1 / top-k agreement for classifier outputs, decisions flipped at the threshold for
multi-label outputs (counted by :func:`~model_agnostic.export.task.task_agreement`), and
the AUROC drop per class over a labelled folder (:mod:`model_agnostic.evaluate`).
Element-wise errors are reported beside these, never gated: quantisation moves every
number. A variant that crashes, or answers in another shape, fails whatever the budgets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError
from ...model import Model
from ..report import FAIL, PASS, UNVERIFIED, Comparison, StageReport
from .settings import Budgets

__all__ = ["BudgetCheck", "auroc_change", "check_budgets", "task_stage"]


@dataclass(frozen=True)
class BudgetCheck:
    """One budget: what was measured, the limit, and whether it held."""

    name: str
    measured: float
    limit: float
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_budgets(
    task: dict[str, Any], budgets: Budgets, auroc: dict[str, Any] | None = None
) -> list[BudgetCheck]:
    """Every budget that applies to ``task`` (verify's agreement counts per output) and
    to ``auroc`` (:func:`auroc_change`)."""
    checks = []
    for output, counts in task.items():
        if counts.get("kind") == "classification":
            rows = counts["rows"]
            for key, agreed, what in (
                ("min_top1_agreement", counts["top1_agree"], "top-1"),
                ("min_topk_agreement", counts["topk_agree"], f"top-{counts['k']}"),
            ):
                limit = getattr(budgets, key)
                if limit is None:
                    continue
                share = agreed / rows if rows else 1.0
                checks.append(
                    BudgetCheck(
                        f"{output} {what} agreement",
                        share,
                        limit,
                        share >= limit,
                        f"{output}: {what} agrees on {agreed}/{rows} rows ({share:.2%}), "
                        f"{rows - agreed} changed; budget >= {limit:.2%} ([optimize] {key})",
                    )
                )
        elif counts.get("kind") == "multilabel" and budgets.max_flips is not None:
            flips = counts["flips"]
            checks.append(
                BudgetCheck(
                    f"{output} decision flips",
                    flips,
                    budgets.max_flips,
                    flips <= budgets.max_flips,
                    f"{output}: {flips} of {counts['decisions']} decisions flipped at "
                    f"threshold {counts['threshold']:g}; budget <= {budgets.max_flips} "
                    "([optimize] max_flips)",
                )
            )
    if auroc is not None and budgets.max_auroc_drop is not None:
        drops = {
            name: -row["difference"]
            for name, row in auroc["classes"].items()
            if row["difference"] is not None
        }
        worst = max(drops, key=lambda name: drops[name], default=None)
        drop = drops[worst] if worst is not None else 0.0
        checks.append(
            BudgetCheck(
                "AUROC drop",
                drop,
                budgets.max_auroc_drop,
                drop <= budgets.max_auroc_drop,
                f"AUROC over {auroc['images']} labelled images: largest drop {drop:+.4f}"
                + (f" ({worst})" if worst else "")
                + f"; budget <= {budgets.max_auroc_drop:g} ([optimize] max_auroc_drop)",
            )
        )
    return checks


def task_stage(checks: list[BudgetCheck], inference: StageReport) -> StageReport:
    """The ``task`` stage: every budget check, and every inference comparison where the
    variant did not run or answered in another shape (never a budget question)."""
    comparisons = [
        Comparison(f"variant runs: {c.name}", math.inf, math.inf, FAIL, c.note)
        for c in inference.comparisons
        if not math.isfinite(c.max_abs)
    ]
    comparisons += [
        Comparison(check.name, 0.0, 0.0, PASS if check.passed else FAIL, check.detail)
        for check in checks
    ]
    if not comparisons:
        return StageReport(
            "task",
            UNVERIFIED,
            reason="no task budget applies to these outputs (neither classifier scores nor "
            "multi-label probabilities): set [verify] task, or give [optimize] labels and "
            "images for the AUROC budget",
        )
    stage = StageReport.from_comparisons("task", comparisons)
    stage.reason = "task-level budgets against the FP32 reference; element-wise errors are "
    stage.reason += "reported (elementwise), not gated"
    return stage


def auroc_change(reference: Model, candidate: Model, budgets: Budgets) -> dict[str, Any] | None:
    """Per-class AUROC of both models over ``budgets.images`` labelled by
    ``budgets.labels``, and the differences (None without labels and images)."""
    if not (budgets.labels and budgets.images):
        return None
    from ...evaluate import compare, evaluate, read_labels

    classes = [str(label) for label in getattr(reference, "labels", None) or []]
    if not classes:
        raise ConfigError(
            f"the AUROC budget needs class names: {type(reference).__name__} has no labels"
        )
    table = read_labels(budgets.labels, classes)
    first = evaluate(reference, budgets.images, table, classes, bootstrap=0)
    second = evaluate(candidate, budgets.images, table, classes, bootstrap=0)
    return compare(first, second)
