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
(:mod:`.artifact_stage`). The report names the first stage that diverges; tolerances
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
NO_REFERENCE = ("the model declares no reference_preprocessing and the config names no "
                "[verify] reference, so the torch-free preprocessing was compared with nothing")


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
) -> ParityReport:
    """Compare ``reference`` (PyTorch) and ``candidate`` (e.g. ONNX Runtime) on ``samples``.

    ``reference_pipeline`` replaces ``reference.reference_preprocessing`` for stage 1.
    ``image_sizes`` adds inference checks on random inputs with other heights and
    widths (for graphs exported with dynamic height/width). ``artifact`` adds stage 4:
    that artifact folder run in a fresh process without torch, against PyTorch.
    """
    if not samples:
        raise ModelAgnosticError("verify needs at least one sample input")
    names = list(sample_names or [_describe(raw) for raw in samples])
    prepared = [reference.prepare(raw) for raw in samples]
    preprocessing = _preprocessing(reference, samples, prepared, names, tolerances,
                                   reference_pipeline or reference.reference_preprocessing)
    inference = _inference(reference, candidate, prepared, batch_sizes, image_sizes, tolerances)
    want = _run(reference, samples, prepared)
    exact = _lazy(lambda: float64_outputs(reference, want.batch))  # the referee, if needed
    got = _run(candidate, samples, catch=True)
    task: dict[str, Any] = {}
    if isinstance(got, Exception):
        inference.append(Comparison("all samples", math.inf, math.inf, FAIL, _failure(got)))
        post = [Comparison(name, math.inf, math.inf, FAIL, _failure(got)) for name in names]
    else:
        for output, array in want.outputs.items():
            inference.append(compare(
                f"all samples:{output}", got.outputs.get(output, np.empty(0)), array,
                tolerances.atol, tolerances.rtol, lambda o=output: _get(exact(), o),
                tolerances.noise_factor))
        task = task_agreement(want.outputs, got.outputs, tolerances)
        post = [
            compare_results(name, w, g, tolerances, _exact_result(reference, want, exact, i))
            for i, (name, w, g) in enumerate(zip(names, want.results, got.results))
        ]
    stages = [
        preprocessing,
        StageReport.from_comparisons("inference", inference),
        StageReport.from_comparisons("postprocessing", post),
    ]
    if artifact is not None:
        if any(stage.status == FAIL for stage in stages):
            stages.append(StageReport("artifact", UNVERIFIED, reason="not run: an earlier stage failed"))
        else:
            from .artifact_stage import check_artifact

            stages.append(check_artifact(
                artifact, samples, names, want.results, tolerances,
                lambda i: _exact_result(reference, want, exact, i)))
    return ParityReport(stages, tolerances, names, task=task)


# ------------------------------------------------------------------ stage 1
def _preprocessing(
    model: Model, samples: Sequence[Any], prepared: list[Arrays], names: list[str],
    tol: Tolerances, pipeline: Reference,
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
            comparisons.append(Comparison(name, 0.0, 0.0, UNVERIFIED, "no reference for this input"))
            continue
        expected = _as_arrays(expected, model.input_names, ours)
        for key in model.input_names:
            comparisons.append(compare(f"{name}:{key}", ours[key], expected[key],
                                       tol.preprocessing_atol, 0.0))
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
    reference: Model, candidate: Model, prepared: list[Arrays], batch_sizes: Sequence[int],
    image_sizes: Sequence[tuple[int, int]], tol: Tolerances,
) -> list[Comparison]:
    merged = rows.merge(prepared, reference.input_names)
    comparisons = []
    for label, batch in _batches(merged, batch_sizes, image_sizes):
        want = reference.infer(batch)
        try:
            got = candidate.infer(batch)
        except ModelAgnosticError as exc:  # e.g. a size the graph does not accept
            comparisons.append(Comparison(label, math.inf, math.inf, FAIL, str(exc)))
            continue
        exact = lazy_float64(reference, batch)
        for name in want:
            comparisons.append(compare(
                f"{label}:{name}", got.get(name, np.empty(0)), want[name], tol.atol, tol.rtol,
                lambda n=name: exact(n), tol.noise_factor))
    return comparisons


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
    yield "perturbed batch 3", {
        k: np.ascontiguousarray(
            v[take] + rng.standard_normal(v[take].shape).astype(v.dtype) * v.dtype.type(0.1)
            if v.dtype.kind == "f" else v[take])
        for k, v in merged.items()
    }
    if not all(v.ndim == 4 for v in merged.values()):
        return  # height and width only mean something for NCHW inputs
    for height, width in image_sizes:
        yield f"image {height}x{width}", {
            k: rng.standard_normal((2, v.shape[1], height, width)).astype(v.dtype)
            for k, v in merged.items()
        }


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
            task[name] = {"kind": kind, "rows": int(ref.shape[0]), "decisions": int(ref.size),
                          "threshold": tol.threshold, "flips": int(flipped.sum()),
                          "flips_per_class": flipped.reshape(ref.shape[0], -1).sum(0).tolist()}
        else:
            k = min(tol.topk, ref.shape[1])
            top_ref, top_cand = np.argsort(-ref, axis=1), np.argsort(-cand, axis=1)
            topk = [set(a[:k]) == set(b[:k]) for a, b in zip(top_ref, top_cand)]
            task[name] = {"kind": kind, "rows": int(ref.shape[0]), "k": int(k),
                          "top1_agree": int(np.sum(top_ref[:, 0] == top_cand[:, 0])),
                          "topk_agree": int(sum(topk))}
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


# ------------------------------------------------------------------ stage 3
class _Run:
    """One backend's pass over the samples: merged inputs, outputs, results."""

    def __init__(self, batch: Arrays, counts: list[int], outputs: Arrays, results: list[Any]):
        self.batch, self.counts, self.outputs, self.results = batch, counts, outputs, results


def _run(model: Model, samples: Sequence[Any], prepared: list[Arrays] | None = None,
         catch: bool = False) -> Any:
    """The steps of ``predict_batch``, keeping the outputs. With ``catch`` (the
    candidate), an exception is returned as the evidence of a difference."""
    try:
        prepared = prepared if prepared is not None else [model.prepare(s) for s in samples]
        counts = [rows.count(p) for p in prepared]
        batch = rows.merge(prepared, model.input_names)
        outputs = model.infer(batch)
        results = [model.process_result(part) for part in rows.split(outputs, counts)]
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
        return reference.process_result(part)

    return result


def compare_results(
    name: str, want: Any, got: Any, tol: Tolerances, exact: Callable[[], Any] | None = None
) -> Comparison:
    """Two final results, leaf by leaf: labels, keys and order equal, numbers within
    tolerance (refereed by the result computed from float64 outputs when given)."""
    want_leaves, got_leaves = leaves(want), leaves(got)
    if len(want_leaves) != len(got_leaves) or [w for w in want_leaves if not _is_number(w)] != [
        g for g in got_leaves if not _is_number(g)
    ]:
        return Comparison(name, math.inf, math.inf, FAIL,
                          "results differ in structure, labels or order: "
                          f"{_preview(want_leaves)} vs {_preview(got_leaves)}")
    mask = [_is_number(w) and _is_number(g) for w, g in zip(want_leaves, got_leaves)]
    if any(_is_number(w) != _is_number(g) for w, g in zip(want_leaves, got_leaves)):
        return Comparison(name, math.inf, math.inf, FAIL, "a number on one side is not on the other")
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

    return compare(name, got_numbers, want_numbers, tol.atol, tol.rtol,
                   exact_numbers if exact is not None else None, tol.noise_factor)


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


def _failure(exc: Exception) -> str:
    return f"the candidate raised {type(exc).__name__}: {exc}"[:400]


def _lazy(action: Callable[[], Any]) -> Callable[[], Any]:
    cache: list[Any] = []

    def get() -> Any:
        if not cache:
            cache.append(action())
        return cache[0]

    return get


def _get(outputs: Arrays | None, name: str) -> np.ndarray | None:
    return None if outputs is None else outputs.get(name)


def _describe(raw: Any) -> str:
    if isinstance(raw, (str, bytes)) or hasattr(raw, "__fspath__"):
        return str(raw)[-60:] if not isinstance(raw, bytes) else f"<{len(raw)} bytes>"
    if hasattr(raw, "size") and hasattr(raw, "mode"):
        return f"<{raw.mode} image {raw.size[0]}x{raw.size[1]}>"
    return f"<{type(raw).__name__}>"

