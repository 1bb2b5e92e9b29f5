"""``optimize_artifact``: from a verified FP32 artifact, build each variant, gate it on
task budgets against the FP32 PyTorch reference, time it against the FP32 artifact on
this machine, and ship it as a new artifact only if it is within budget and faster.

Per variant: build the graph (scratch) -> stage an artifact beside the target -> verify
it against the reference (export's :func:`~model_agnostic.export.verify.verify`: the
element-wise stages reported, the task budgets gating) -> on a failed budget, name the
layers that diverge (and, with ``retry_excluding``, rebuild once without them) -> run the
staged artifact without torch -> time it -> record and rename into place. The source
artifact is only read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import is_artifact
from ...config import Config, load_config, load_model, resolve
from ...errors import ConfigError, ExportError
from ...model import Arrays, Model
from ..pipeline import _check_target, _verify_settings, generated_images
from ..report import FAIL, ParityReport, Tolerances
from ..verify import Reference
from .calibration import calibration_batches, read_folder
from .gate import gate_variant
from .outcome import ERROR, NOT_FASTER, SHIPPED, SKIPPED, VariantResult
from .settings import OptimizeSettings, read_settings
from .speed import cpu_info, measure_speedup, timed_load
from .variant_artifact import finish_variant, ship_variant, stage_variant
from .variants import build_variant, fp16_skip_reason, prepare_for_quantization

__all__ = ["Plan", "optimize_artifact"]

Progress = Callable[[str], None]
_QUANTISED = ("int8-dynamic", "int8-static", "fp16")


@dataclass
class Plan:
    """What every variant shares: the source, the reference, the inputs, the settings."""

    artifact: Path
    cfg: Config
    settings: OptimizeSettings
    reference: Model
    reference_note: str
    session: dict[str, Any]
    samples: list[Any]
    names: list[str]
    tolerances: Tolerances
    pipeline: Reference | None
    calibration: list[Arrays]
    calibration_note: str
    speed_seconds: float
    speed_rows: int | None
    progress: Progress
    #: What pre-processing for quantisation did (done once, shared by the INT8 variants).
    prepared: dict[str, Any] = field(default_factory=dict)


def optimize_artifact(
    source: str | os.PathLike[str] | Config,
    *,
    config: str | os.PathLike[str] | Config | None = None,
    output: str | os.PathLike[str] | None = None,
    samples: Sequence[Any] = (),
    calibration: Sequence[Any] | str | os.PathLike[str] | None = None,
    force: bool = False,
    allow_slower: bool = False,
    retry_excluding: int = 0,
    speed_seconds: float = 4.0,
    speed_rows: int | None = None,
    progress: Progress = lambda message: None,
    **overrides: Any,
) -> list[VariantResult]:
    """Build, gate, time and (when it passes) ship each variant of an FP32 artifact.

    ``source`` is the artifact folder, or the training config whose ``[export] output``
    (or ``[onnxruntime] path``) is that artifact. The FP32 PyTorch reference is built
    from ``config`` (default: ``source`` when it is a config); an artifact alone is
    checked against itself run in FP32 (recorded as such). ``overrides`` replace
    ``[optimize]`` keys (``variants``, ``min_top1_agreement``, ``exclude_nodes``, ...).
    ``output`` is the new artifact (several variants: a folder holding one per
    variant); by default ``<artifact>-<variant>`` beside the source. ``samples`` are the
    inputs the budgets are counted on (with ``[verify] samples`` and generated images);
    ``calibration`` the raw inputs (or a folder) INT8 static calibrates on. Speed is
    timed for about ``speed_seconds`` on one call with the first sample's rows, or with
    ``speed_rows`` rows taken from every sample.
    """
    cfg, artifact, reference_cfg = _sources(source, config)
    settings = read_settings(cfg.sections.get("optimize", {}), overrides)
    targets = _targets(artifact, settings, output)
    for target in targets.values():
        if target.resolve() == artifact.resolve() or artifact.resolve() in target.resolve().parents:
            raise ConfigError(f"{target}: the variant cannot replace or sit inside its source")
        _check_target(target, force)
    plan = _plan(cfg, artifact, reference_cfg, settings, samples, calibration, progress)
    plan.speed_seconds, plan.speed_rows = speed_seconds, speed_rows
    results = []
    made = [p for p in {t.parent for t in targets.values()} if not p.exists()]
    with tempfile.TemporaryDirectory(prefix="model-agnostic-optimize-") as scratch:
        for variant in settings.variants:
            progress(f"variant {variant} ...")
            try:
                result = _variant(
                    plan, variant, targets[variant], Path(scratch), allow_slower, retry_excluding
                )
            except ExportError as exc:
                result = VariantResult(variant, ERROR, str(exc))
            progress(f"variant {variant}: {result.status}")
            results.append(result)
    for folder in made:  # staging needed it; nothing shipped into it
        with contextlib.suppress(OSError):
            folder.rmdir()
    return results


def _variant(
    plan: Plan, variant: str, target: Path, scratch: Path, allow_slower: bool, retry: int
) -> VariantResult:
    if variant == "fp16":
        reason = fp16_skip_reason(plan.session.get("providers", ["CPUExecutionProvider"]))
        if reason:
            return VariantResult(variant, SKIPPED, reason, record={"cpu": cpu_info()})
    graph = plan.artifact / "model.onnx"
    prepared = scratch / "prepared.onnx"
    record: dict[str, Any] = {}
    if variant.startswith("int8"):
        if not plan.prepared:
            plan.prepared = prepare_for_quantization(graph, prepared)
        record.update(plan.prepared)
    base = prepared if variant.startswith("int8") else graph
    excluded = list(plan.settings.exclude_nodes)
    attempts: list[dict[str, Any]] = []
    while True:
        built_file = scratch / f"{variant}-{len(attempts)}.onnx"
        plan.progress(f"building {variant}" + (f" without {excluded}" if excluded else ""))
        built = build_variant(
            variant,
            base,
            built_file,
            session=plan.session,
            per_channel=plan.settings.per_channel,
            exclude_op_types=plan.settings.exclude_op_types,
            exclude_nodes=excluded,
            calibration=plan.calibration,
        )
        staging = stage_variant(plan.artifact, target, built_file)
        try:
            result = gate_variant(plan, variant, staging, base, built_file)
            attempts.append(
                {
                    "attempt": len(attempts) + 1,
                    "exclude_nodes": list(excluded),
                    "verdict": result.report.verdict if result.report else None,
                    "budgets": [check.to_dict() for check in result.budgets],
                }
            )
            more = _worst_nodes(result, excluded) if len(attempts) <= retry else []
            if more and variant in _QUANTISED:
                excluded += more
                shutil.rmtree(staging, ignore_errors=True)
                continue
            result.attempts = attempts
            result.record = {**record, **result.record, "build": built}
            return _finish(plan, result, staging, target, graph, allow_slower)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _worst_nodes(result: VariantResult, excluded: list[str]) -> list[str]:
    """When a budget failed: the nodes (not yet excluded) of the layer that adds most."""
    task = next(
        (s for s in (result.report.stages if result.report else []) if s.stage == "task"), None
    )
    if task is None or task.status != FAIL:
        return []
    for layer in result.layers:
        fresh = [n for n in layer.nodes if n not in excluded]
        if layer.added > 0 and fresh:
            return fresh
    return []


def _finish(
    plan: Plan,
    result: VariantResult,
    staging: Path,
    target: Path,
    graph: Path,
    allow_slower: bool,
) -> VariantResult:
    """Time a variant that passed its gate, then ship it (or say why not)."""
    if result.status != SHIPPED or result.report is None:
        return result
    plan.progress("timing the variant against the FP32 artifact, interleaved")
    settings = {k: v for k, v in plan.session.items() if k != "path"}
    fp32, fp32_load = timed_load(lambda: _onnx(graph, settings))
    candidate, load = timed_load(lambda: _onnx(staging / "model.onnx", settings))
    batch = _speed_batch(plan)
    speed = measure_speedup(fp32, candidate, batch, seconds=plan.speed_seconds)
    speed.update(
        threads=settings.get("intra_op_num_threads") or os.cpu_count(),
        threads_from="[onnxruntime] intra_op_num_threads"
        if settings.get("intra_op_num_threads")
        else "ONNX Runtime's default",
        fp32_load_s=fp32_load,
        variant_load_s=load,
        min_speedup=plan.settings.min_speedup,
        allowed_slower=False,
    )
    result.speed = speed
    if speed["speedup"] < plan.settings.min_speedup:
        if not allow_slower:
            result.status = NOT_FASTER
            result.reason = (
                f"not faster here: {speed['speedup']:.2f}x (needs {plan.settings.min_speedup:g}x, "
                "[optimize] min_speedup); --allow-slower (allow_slower=True) ships it anyway"
            )
            return result
        speed["allowed_slower"] = True
        result.reason = f"not faster here: {speed['speedup']:.2f}x, shipped because allow_slower"
    result.record.update(
        variant=result.variant,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        speed=speed,
        sizes={
            "fp32_bytes": graph.stat().st_size,
            "variant_bytes": (staging / "model.onnx").stat().st_size,
        },
    )
    report = result.report.to_dict()
    elementwise = ParityReport(result.elementwise, plan.tolerances, plan.names).to_dict()
    report["elementwise"] = elementwise["stages"]
    report["optimization"] = {
        "variant": result.variant,
        "budgets": [c.to_dict() for c in result.budgets],
    }
    finish_variant(staging, result.record, report)
    ship_variant(staging, target)
    result.artifact = target
    return result


# ------------------------------------------------------------------ the plan
def _sources(
    source: str | os.PathLike[str] | Config, config: str | os.PathLike[str] | Config | None
) -> tuple[Config, Path, Config | None]:
    """(the config ``[optimize]`` and ``[verify]`` come from, the source artifact folder,
    the config the PyTorch reference is built from; None: the artifact is its own)."""
    if not isinstance(source, Config) and is_artifact(source):
        if Path(source).is_file():
            raise ConfigError(f"{source}: optimize reads an artifact folder; unpack the zip first")
        artifact = Path(source)
        resolve(artifact)  # checksums verified before anything is read
        if config is None:
            return load_config(artifact / "config.toml"), artifact, None
        reference = config if isinstance(config, Config) else load_config(config)
        return reference, artifact, reference
    cfg = source if isinstance(source, Config) else load_config(source)
    candidates = [cfg.export.get("output"), cfg.backend_options("onnxruntime").get("path")]
    found = [Path(c) if i == 0 else Path(c).parent for i, c in enumerate(candidates) if c]
    folder = next((p for p in found if p.is_dir() and is_artifact(p)), None)
    if folder is None:
        raise ConfigError(
            f"{cfg.path}: neither [export] output nor [onnxruntime] path names an artifact "
            "folder; export one first, or pass the artifact folder"
        )
    resolve(folder)
    if config is not None:
        cfg = config if isinstance(config, Config) else load_config(config)
    if cfg.path.resolve().parent == folder.resolve():
        return cfg, folder, None  # an artifact's own config holds no trained weights
    return cfg, folder, cfg


def _targets(
    artifact: Path, settings: OptimizeSettings, output: str | os.PathLike[str] | None
) -> dict[str, Path]:
    chosen = output or settings.output
    if not chosen:
        return {v: artifact.with_name(f"{artifact.name}-{v}") for v in settings.variants}
    if len(settings.variants) == 1:
        return {settings.variants[0]: Path(chosen)}
    return {v: Path(chosen) / f"{artifact.name}-{v}" for v in settings.variants}


def _plan(
    cfg: Config,
    artifact: Path,
    reference_cfg: Config | None,
    settings: OptimizeSettings,
    samples: Sequence[Any],
    calibration: Sequence[Any] | str | os.PathLike[str] | None,
    progress: Progress,
) -> Plan:
    from ...artifact import read_parity

    artifact_cfg = resolve(artifact)
    session = {k: v for k, v in artifact_cfg.backend_options("onnxruntime").items() if k != "path"}
    tolerances, pipeline = _verify_settings(cfg)
    if reference_cfg is not None:
        progress("building the FP32 PyTorch reference")
        reference = load_model(reference_cfg, backend="pytorch")
        note = f"PyTorch FP32, built from {reference_cfg.path}"
    else:
        reference = load_model(artifact_cfg, backend="onnxruntime")
        verdict = (read_parity(artifact) or {}).get("verdict", "none")
        note = (
            "the FP32 artifact on ONNX Runtime (no training config given; its parity.json "
            f"against PyTorch at export: {verdict})"
        )
    raws, names, given = _gate_samples(cfg, reference, samples)
    if isinstance(calibration, (str, os.PathLike)) or (
        calibration is None and settings.calibration
    ):
        folder = calibration if calibration is not None else settings.calibration
        chosen = read_folder(str(folder), settings.calibration_size)
        calibration_note = f"{len(chosen)} file(s) of {folder}"
    elif calibration:
        chosen = list(calibration)[: settings.calibration_size]
        calibration_note = f"{len(chosen)} input(s) given"
    else:
        chosen = given[: settings.calibration_size]
        calibration_note = f"the gate's {len(chosen)} sample(s) ([optimize] calibration not set)"
    return Plan(
        artifact=artifact,
        cfg=cfg,
        settings=settings,
        reference=reference,
        reference_note=note,
        session=session,
        samples=raws,
        names=names,
        tolerances=tolerances,
        pipeline=pipeline,
        calibration=calibration_batches(reference, chosen),
        calibration_note=calibration_note,
        speed_seconds=4.0,
        speed_rows=None,
        progress=progress,
    )


def _gate_samples(
    cfg: Config, reference: Model, given: Sequence[Any]
) -> tuple[list[Any], list[str], list[Any]]:
    """(every input the gate runs, their names, the non-generated ones)."""
    from ..pipeline import _takes_images, _unique

    example = cfg.export.get("example")
    raws = _unique([*([example] if example else []), *given, *cfg.verify.get("samples", [])])
    if not raws:
        raise ConfigError(
            f"{cfg.path}: optimize needs samples to count the budgets on: pass inputs "
            "(samples=...), or set [verify] samples"
        )
    names = [str(s) if isinstance(s, (str, Path)) else f"sample {i}" for i, s in enumerate(raws)]
    generated = generated_images(cfg.verify.get("generated", 4))
    if generated and not _takes_images(reference, generated[0]):
        generated = []
    names += [f"generated image {i}" for i in range(len(generated))]
    return [*raws, *generated], names, raws


def _speed_batch(plan: Plan) -> Arrays:
    """The first sample's rows, or ``speed_rows`` rows cycled from all samples'."""
    from ... import rows

    if plan.speed_rows is None:
        return plan.reference.prepare(plan.samples[0])
    merged = rows.merge(
        [plan.reference.prepare(s) for s in plan.samples], plan.reference.input_names
    )
    take = [i % rows.count(merged) for i in range(plan.speed_rows)]
    return {k: np.ascontiguousarray(v[take]) for k, v in merged.items()}


def _onnx(path: Path, settings: dict[str, Any]) -> Model:
    from ...backends.onnx_runtime import OnnxModel

    return OnnxModel(path, **settings)
