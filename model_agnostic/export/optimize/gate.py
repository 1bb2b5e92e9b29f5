"""One variant's gate: the staged artifact verified against the FP32 reference with
export's :func:`~model_agnostic.export.verify.verify`, its element-wise stages kept as
evidence, its task budgets deciding, then the artifact run from disk without torch.

The gate report holds three stages: ``preprocessing`` (as export checks it), ``task``
(the budgets) and ``artifact`` (the staged folder in a torch-free process, against the
variant's own in-process results). When a budget fails on a quantised variant, the
layers that diverge most are measured (:mod:`.layers`) to say why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import load_model
from ..artifact_stage import check_artifact
from ..report import FAIL, PASS, UNVERIFIED, Comparison, ParityReport, StageReport
from ..verify import verify
from .budgets import auroc_change, check_budgets, task_stage
from .layers import layer_errors
from .outcome import REFUSED, SHIPPED, VariantResult
from .outcome import UNVERIFIED as NOT_DECIDED
from .speed import cpu_info

if TYPE_CHECKING:
    from .run import Plan

__all__ = ["LAYER_ROWS", "gate_variant"]

#: Rows the per-layer comparison runs (one at a time); enough to rank layers.
LAYER_ROWS = 8


def gate_variant(
    plan: Plan,
    variant: str,
    staging: Path,
    fp32_graph: Path,
    variant_graph: Path,
) -> VariantResult:
    """Verify the staged variant; ``status`` is ``shipped`` when it may ship (speed is
    decided after), ``refused`` or ``unverified`` otherwise, with the reason."""
    candidate = load_model(staging, backend="onnxruntime")
    plan.progress("verifying against the FP32 reference (element-wise reported, budgets gated)")
    specs = getattr(candidate, "inputs", [])
    dynamic = any(not isinstance(d, int) for spec in specs for d in spec.shape[2:])
    sizes = plan.cfg.verify.get("image_sizes") or ([(192, 160), (256, 288)] if dynamic else [])
    parity = verify(
        plan.reference,
        candidate,
        plan.samples,
        tolerances=plan.tolerances,
        batch_sizes=plan.cfg.verify.get("batch_sizes", [1, 2, 4]),
        image_sizes=sizes,
        sample_names=plan.names,
        reference_pipeline=plan.pipeline,
    )
    stages = {stage.stage: stage for stage in parity.stages}
    budgets = plan.settings.budgets
    checks = check_budgets(parity.task, budgets, auroc_change(plan.reference, candidate, budgets))
    task = task_stage(checks, stages["inference"])
    preprocessing = stages["preprocessing"]
    if preprocessing.status == UNVERIFIED:
        preprocessing = _source_preprocessing(plan.artifact) or preprocessing
    gate = [preprocessing, task]
    if FAIL in (task.status, preprocessing.status):
        gate.append(StageReport("artifact", UNVERIFIED, reason="not run: an earlier stage failed"))
    else:
        plan.progress("running the staged variant from disk without torch")
        results = candidate.predict_batch(plan.samples)
        gate.append(check_artifact(staging, plan.samples, plan.names, results, plan.tolerances))
    report = ParityReport(gate, plan.tolerances, plan.names, task=parity.task)
    report.subject = {"reference": plan.reference_note, "variant": variant}
    _carry_waivers(report, plan.artifact)
    layers = []
    if task.status == FAIL and variant != "graph":
        plan.progress("comparing intermediate outputs, FP32 against the variant, layer by layer")
        threads = int(plan.session.get("intra_op_num_threads", 0))
        layers = layer_errors(
            fp32_graph, variant_graph, plan.calibration, rows=LAYER_ROWS, threads=threads
        )
    if report.shippable:
        status, reason = SHIPPED, ""
    elif report.verdict == "failed":
        status = REFUSED
        reason = "outside its budget" if task.status == FAIL else f"{report.first_failure} failed"
    else:
        status = NOT_DECIDED
        reason = "; ".join(f"{s.stage}: {s.reason}" for s in report.unwaived)
    return VariantResult(
        variant,
        status,
        reason,
        report=report,
        elementwise=[s for s in parity.stages if s.stage != "preprocessing"],
        budgets=checks,
        layers=layers,
        record=_record(plan, variant, len(layers) and LAYER_ROWS),
    )


def _record(plan: Plan, variant: str, layer_rows: int) -> dict[str, Any]:
    """What metadata.json records of this variant, before timing."""
    import onnx
    import onnxruntime

    from ...artifact import read_parity
    from .settings import VARIANTS

    return {
        "variant": variant,
        "description": VARIANTS[variant],
        "source": {
            "artifact": str(plan.artifact),
            "parity": (read_parity(plan.artifact) or {}).get("verdict"),
        },
        "reference": plan.reference_note,
        "calibration": plan.calibration_note,
        "settings": plan.settings.quantizer_settings(),
        "budgets": plan.settings.budgets.to_dict(),
        "layer_rows": layer_rows,
        "cpu": cpu_info(),
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
    }


def _source_preprocessing(source: Path) -> StageReport | None:
    """The source artifact's passed preprocessing stage, when this run had no reference
    to check it with: the variant runs the same hooks and options (the same files)."""
    try:
        parity = json.loads((source / "parity.json").read_text(encoding="utf-8"))
        stage = next(s for s in parity["stages"] if s["stage"] == "preprocessing")
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    if stage.get("status") != PASS:
        return None
    note = (
        f"carried from {source}/parity.json: the variant keeps the source's model source "
        "and options, so its preprocessing is the one checked there"
    )
    carried = Comparison(
        "source artifact",
        float(stage.get("max_abs", 0.0)),
        float(stage.get("max_rel", 0.0)),
        PASS,
        note,
    )
    return StageReport("preprocessing", PASS, [carried], note)


def _carry_waivers(report: ParityReport, source: Path) -> None:
    """The source artifact's waivers, for stages unverified here too (same hooks)."""
    try:
        waivers = json.loads((source / "parity.json").read_text(encoding="utf-8"))["waivers"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for waiver in waivers if isinstance(waivers, list) else []:
        if isinstance(waiver, dict) and "stage" in waiver:
            report.waive(
                [waiver["stage"]],
                flag=str(waiver.get("flag", "")),
                source=f"{waiver.get('source', '')} (carried from {source}/parity.json)",
                user=str(waiver.get("user", "")),
            )
