"""Prove an exported model answers like the original, stage by stage.

1. preprocessing: the torch-free pipeline against the training-time reference (the
   model's ``reference_preprocessing``, or a callable the config names); without a
   reference the stage is *unverified*, never passed;
2. inference: PyTorch against the candidate on identical arrays, at several batch sizes,
   on a perturbed batch (a graph that froze data-dependent branches) and at other image
   sizes when height and width are dynamic; a gap beyond tolerance is refereed against
   the network run in float64, element by element (:mod:`.referee`);
3. post-processing: the final results of both backends, number by number.

A fourth stage, ``artifact``, runs the written artifact in a fresh process without torch
(:mod:`.artifact_stage`); a model with heatmaps (``cam``) gets a ``heatmaps`` stage
(:mod:`.heatmap_stage`). The report names the first stage that diverges; tolerances
follow Polygraphy's ``|a - b| <= atol + rtol * |b|`` with 1e-5 defaults.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import rows
from ..errors import ModelAgnosticError
from ..model import Arrays, Model
from .referee import compare, float64_outputs, lazy_float64
from .report import (
    FAIL,
    PASS,
    UNVERIFIED,
    Comparison,
    ParityReport,
    StageReport,
    Tolerances,
)
from .results import compare_results, leaves
from .task import task_agreement

__all__ = [
    "FAIL",
    "PASS",
    "UNVERIFIED",
    "Comparison",
    "ParityReport",
    "StageReport",
    "Tolerances",
    "compare_results",
    "leaves",
    "verify",
]

#: A reference pipeline: one raw input -> the arrays the training code fed the network.
Reference = Callable[[Any], Any]
NO_REFERENCE = (
    "the model declares no reference_preprocessing and the config names no "
    "[verify] reference, so the torch-free preprocessing was compared with nothing"
)


def verify(
    reference: Model,
    candidate: Model,
    samples: Sequence[Any],
    *,
    tolerances: Tolerances = Tolerances(),
    batch_sizes: Sequence[int] = (1, 2, 4),
    image_sizes: Sequence[tuple[int, int]] = (),
    sample_names: Sequence[str] | None = None,
    reference_pipeline: Reference | None = None,
    artifact: str | os.PathLike[str] | None = None,
    also: Mapping[str, Model] | None = None,
) -> ParityReport:
    """Compare ``reference`` (PyTorch) and ``candidate`` (e.g. ONNX Runtime) on ``samples``.

    ``reference_pipeline`` replaces ``reference.reference_preprocessing`` for stage 1.
    ``image_sizes`` adds inference checks on random inputs with other heights and
    widths (for graphs exported with dynamic height/width). ``artifact`` adds stage 4:
    that artifact folder run in a fresh process without torch, against PyTorch.
    ``also`` (``{"savedmodel": model}``) checks more candidates on the same arrays, each
    in stages ``<label>-inference``, ``<label>-postprocessing`` (and ``<label>-heatmaps``).
    """
    if not samples:
        raise ModelAgnosticError("verify needs at least one sample input")
    names = list(sample_names or [_describe(raw) for raw in samples])
    prepared = [reference.prepare(raw) for raw in samples]
    preprocessing = _preprocessing(
        reference,
        samples,
        prepared,
        names,
        tolerances,
        reference_pipeline or reference.reference_preprocessing,
    )
    others = dict(also or {})
    candidates = [candidate, *others.values()]
    inferences = _inference(reference, candidates, prepared, batch_sizes, image_sizes, tolerances)
    want = _run(reference, samples, prepared)
    exact = _lazy(lambda: float64_outputs(reference, want.batch))  # the referee, if needed
    stages = [preprocessing]
    task: dict[str, Any] = {}
    for prefix, model, inference in zip(["", *(f"{k}-" for k in others)], candidates, inferences):
        got = _run(model, samples, catch=True)
        post, agreement = _final(reference, want, got, names, tolerances, exact, inference)
        task = task or agreement
        stages += [
            StageReport.from_comparisons(f"{prefix}inference", inference),
            StageReport.from_comparisons(f"{prefix}postprocessing", post),
        ]
        if reference.cam is not None and prefix and not model.can_explain():
            reason = f"the {model.backend_name} candidate has no CAM weights: maps not compared"
            stages.append(StageReport(f"{prefix}heatmaps", UNVERIFIED, reason=reason))
        elif reference.cam is not None:
            from .heatmap_stage import check_heatmaps

            heatmaps = check_heatmaps(reference, model, samples, names, want, got)
            heatmaps.stage = f"{prefix}heatmaps"
            stages.append(heatmaps)
    if artifact is not None:
        if any(stage.status == FAIL for stage in stages):
            stages.append(
                StageReport("artifact", UNVERIFIED, reason="not run: an earlier stage failed")
            )
        else:
            from .artifact_stage import check_artifact

            stages.append(
                check_artifact(
                    artifact,
                    samples,
                    names,
                    want.results,
                    tolerances,
                    lambda i: _exact_result(reference, want, exact, i),
                )
            )
    return ParityReport(stages, tolerances, names, task=task)


# ------------------------------------------------------------------ stage 1
def _preprocessing(
    model: Model,
    samples: Sequence[Any],
    prepared: list[Arrays],
    names: list[str],
    tol: Tolerances,
    pipeline: Reference,
) -> StageReport:
    comparisons = []
    for raw, ours, name in zip(samples, prepared, names):
        try:
            expected = pipeline(raw)
        except Exception as exc:  # the user's reference code: any failure means no evidence
            note = f"the reference raised {type(exc).__name__}: {exc}"
            comparisons.append(Comparison(name, 0.0, 0.0, UNVERIFIED, note[:300]))
            continue
        if expected is None:
            comparisons.append(
                Comparison(name, 0.0, 0.0, UNVERIFIED, "no reference for this input")
            )
            continue
        expected = _as_arrays(expected, model.input_names, ours)
        for key in model.input_names:
            comparisons.append(
                compare(f"{name}:{key}", ours[key], expected[key], tol.preprocessing_atol, 0.0)
            )
    if all(c.status == UNVERIFIED and c.note == "no reference for this input" for c in comparisons):
        return StageReport("preprocessing", UNVERIFIED, [], NO_REFERENCE)
    return StageReport.from_comparisons("preprocessing", comparisons)


def _as_arrays(value: Any, names: Sequence[str], ours: Arrays) -> Arrays:
    """A reference's result as ``{input: array}``: tensors become arrays, and a missing
    batch axis (a torchvision pipeline returns C x H x W) is added."""
    if not isinstance(value, Mapping):
        value = {names[0]: value}
    arrays = {}
    for key in names:
        item = value[key]
        if hasattr(item, "detach"):  # a torch tensor
            item = item.detach().cpu().numpy()
        array = np.asarray(item)
        if array.ndim == ours[key].ndim - 1:
            array = array[None]
        arrays[key] = array
    return arrays


# ------------------------------------------------------------------ stage 2
def _inference(
    reference: Model,
    candidates: Sequence[Model],
    prepared: list[Arrays],
    batch_sizes: Sequence[int],
    image_sizes: Sequence[tuple[int, int]],
    tol: Tolerances,
) -> list[list[Comparison]]:
    """Each candidate's comparisons with the reference, on the same batches."""
    merged = rows.merge(prepared, reference.input_names)
    found: list[list[Comparison]] = [[] for _ in candidates]
    for label, batch in _batches(merged, batch_sizes, image_sizes):
        want = reference.infer(batch)
        exact = lazy_float64(reference, batch)
        for candidate, comparisons in zip(candidates, found):
            try:
                candidate.check_inputs(batch, "verify")
                got = candidate.infer(batch)
            except ModelAgnosticError as exc:  # e.g. a size the graph does not accept
                comparisons.append(Comparison(label, math.inf, math.inf, FAIL, str(exc)))
                continue
            for name in want:
                comparisons.append(
                    compare(
                        f"{label}:{name}",
                        got.get(name, np.empty(0)),
                        want[name],
                        tol.atol,
                        tol.rtol,
                        lambda n=name, f=exact: f(n),  # type: ignore[misc]
                        tol.noise_factor,
                    )
                )
    return found


def _batches(
    merged: Arrays, batch_sizes: Sequence[int], image_sizes: Sequence[tuple[int, int]]
) -> Iterator[tuple[str, Arrays]]:
    """Batches of the samples' rows at each size, a perturbed batch, other image sizes.

    The perturbed copy (Gaussian noise of 0.1 on float inputs) catches a graph that
    traced data-dependent Python into constants.
    """
    available = next(iter(merged.values())).shape[0]
    for size in batch_sizes:
        take = np.arange(size) % available  # repeat rows when there are fewer than size
        yield f"batch {size}", {k: np.ascontiguousarray(v[take]) for k, v in merged.items()}
    rng = np.random.default_rng(0)
    take = np.arange(3) % available
    yield (
        "perturbed batch 3",
        {
            k: np.ascontiguousarray(
                v[take] + rng.standard_normal(v[take].shape).astype(v.dtype) * v.dtype.type(0.1)
                if v.dtype.kind == "f"
                else v[take]
            )
            for k, v in merged.items()
        },
    )
    if not all(v.ndim == 4 for v in merged.values()):
        return  # height and width only mean something for NCHW inputs
    for height, width in image_sizes:
        yield (
            f"image {height}x{width}",
            {
                k: rng.standard_normal((2, v.shape[1], height, width)).astype(v.dtype)
                for k, v in merged.items()
            },
        )


# ------------------------------------------------------------------ stage 3
def _final(
    reference: Model,
    want: _Run,
    got: Any,
    names: list[str],
    tol: Tolerances,
    exact: Callable[[], Any],
    inference: list[Comparison],
) -> tuple[list[Comparison], dict[str, Any]]:
    """Stage 3's comparisons for one candidate's run (``got``), and its task agreement;
    the whole run's outputs are added to ``inference``."""
    if isinstance(got, Exception):
        inference.append(Comparison("all samples", math.inf, math.inf, FAIL, _failure(got)))
        return [Comparison(name, math.inf, math.inf, FAIL, _failure(got)) for name in names], {}
    for output, array in want.outputs.items():
        inference.append(
            compare(
                f"all samples:{output}",
                got.outputs.get(output, np.empty(0)),
                array,
                tol.atol,
                tol.rtol,
                _output_of(exact, output),
                tol.noise_factor,
            )
        )
    post = [
        compare_results(name, w, g, tol, _exact_result(reference, want, exact, i))
        for i, (name, w, g) in enumerate(zip(names, want.results, got.results))
    ]
    return post, task_agreement(want.outputs, got.outputs, tol)


class _Run:
    """One backend's pass over the samples: merged inputs, outputs, results."""

    def __init__(self, batch: Arrays, counts: list[int], outputs: Arrays, results: list[Any]):
        self.batch, self.counts, self.outputs, self.results = batch, counts, outputs, results


def _run(
    model: Model, samples: Sequence[Any], prepared: list[Arrays] | None = None, catch: bool = False
) -> Any:
    """The steps of ``predict_batch``, keeping the outputs. With ``catch`` (the
    candidate), an exception is returned as the evidence of a difference."""
    try:
        prepared = prepared if prepared is not None else [model.prepare(s) for s in samples]
        for arrays in prepared:
            model.check_inputs(arrays)
        counts = [rows.count(p) for p in prepared]
        batch = rows.merge(prepared, model.input_names)
        outputs = model.infer(batch)
        parts = rows.split(outputs, counts)
        results = [model.process_result(model.outputs_for_result(part)) for part in parts]
    except Exception as exc:  # the candidate's hooks or backend, whatever they raise
        if not catch:
            raise
        return exc
    return _Run(batch, counts, outputs, results)


def _exact_result(
    reference: Model, run: _Run, exact: Callable[[], Arrays | None], index: int
) -> Callable[[], Any]:
    """The reference's result for sample ``index`` computed from float64 outputs."""

    def result() -> Any:
        outputs = exact()
        if outputs is None:
            return None
        part = rows.split(outputs, run.counts)[index]
        return reference.process_result(reference.outputs_for_result(part))

    return result


def _failure(exc: Exception) -> str:
    return f"the candidate raised {type(exc).__name__}: {exc}"[:400]


def _lazy(action: Callable[[], Any]) -> Callable[[], Any]:
    cache: list[Any] = []

    def get() -> Any:
        if not cache:
            cache.append(action())
        return cache[0]

    return get


def _output_of(exact: Callable[[], Any], name: str) -> Callable[[], np.ndarray | None]:
    """``name``'s array from the lazily computed float64 outputs."""

    def get() -> np.ndarray | None:
        outputs = exact()
        return None if outputs is None else outputs.get(name)

    return get


def _describe(raw: Any) -> str:
    if isinstance(raw, (str, bytes)) or hasattr(raw, "__fspath__"):
        return str(raw)[-60:] if not isinstance(raw, bytes) else f"<{len(raw)} bytes>"
    if hasattr(raw, "size") and hasattr(raw, "mode"):
        return f"<{raw.mode} image {raw.size[0]}x{raw.size[1]}>"
    return f"<{type(raw).__name__}>"
