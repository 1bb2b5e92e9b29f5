"""Prove an exported model answers like the original, stage by stage.

1. preprocessing: the torch-free pipeline against the model's torchvision reference;
2. inference: PyTorch against ONNX Runtime on identical arrays, at several batch
   sizes (and image sizes when the graph's height and width are dynamic);
3. post-processing: the final results of both backends, plus top-k agreement.

The report names the first stage that diverges; tolerances follow Polygraphy's
``|a - b| <= atol + rtol * |b|`` with 1e-5 defaults.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelAgnosticError
from ..model import Arrays, Model

__all__ = ["Comparison", "ParityReport", "StageReport", "Tolerances", "verify"]

STAGES = ("preprocessing", "inference", "postprocessing")


@dataclass(frozen=True)
class Tolerances:
    """Pass criteria; ``preprocessing_atol`` applies to stage 1, ``atol``/``rtol`` to 2 and 3."""

    atol: float = 1e-5
    rtol: float = 1e-5
    preprocessing_atol: float = 1e-6
    topk: int = 5


@dataclass(frozen=True)
class Comparison:
    """One compared tensor (or result) and how far apart the two sides were."""

    name: str
    max_abs: float
    max_rel: float
    passed: bool
    note: str = ""


@dataclass
class StageReport:
    """The comparisons of one stage; ``passed`` is None when the stage was skipped."""

    stage: str
    passed: bool | None
    comparisons: list[Comparison] = field(default_factory=list)
    note: str = ""

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.comparisons), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.comparisons), default=0.0)


@dataclass
class ParityReport:
    """The outcome of :func:`verify`."""

    stages: list[StageReport]
    tolerances: Tolerances
    samples: list[str]

    @property
    def passed(self) -> bool:
        return all(stage.passed is not False for stage in self.stages)

    @property
    def first_failure(self) -> str | None:
        """The first stage that diverged, or None."""
        return next((s.stage for s in self.stages if s.passed is False), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "first_failure": self.first_failure,
            "tolerances": asdict(self.tolerances),
            "samples": self.samples,
            "stages": [
                {**asdict(s), "max_abs": s.max_abs, "max_rel": s.max_rel} for s in self.stages
            ],
        }

    def summary(self) -> str:
        """A human-readable table, one line per stage plus the failing comparisons."""
        lines = []
        for stage in self.stages:
            status = {True: "PASS", False: "FAIL", None: "skip"}[stage.passed]
            lines.append(
                f"{status}  {stage.stage:<15} max abs {stage.max_abs:.3g}  "
                f"max rel {stage.max_rel:.3g}  ({len(stage.comparisons)} compared)"
                + (f"  {stage.note}" if stage.note else "")
            )
            lines += [
                f"        {c.name}: abs {c.max_abs:.3g} rel {c.max_rel:.3g} {c.note}".rstrip()
                for c in stage.comparisons
                if not c.passed
            ][:10]
        verdict = "PASSED" if self.passed else f"FAILED, first at {self.first_failure}"
        lines.append(f"parity {verdict}")
        return "\n".join(lines)


def verify(
    reference: Model,
    candidate: Model,
    samples: Sequence[Any],
    *,
    tolerances: Tolerances = Tolerances(),
    batch_sizes: Sequence[int] = (1, 2, 4),
    image_sizes: Sequence[tuple[int, int]] = (),
    sample_names: Sequence[str] | None = None,
) -> ParityReport:
    """Compare ``reference`` (PyTorch) and ``candidate`` (ONNX Runtime) on ``samples``.

    ``image_sizes`` adds inference checks on random inputs with other heights and
    widths (for graphs exported with dynamic height/width).
    """
    if not samples:
        raise ModelAgnosticError("verify needs at least one sample input")
    names = list(sample_names or [_describe(raw) for raw in samples])
    prepared = [reference.prepare(raw) for raw in samples]
    stages = [
        _preprocessing(reference, samples, prepared, names, tolerances),
        _inference(reference, candidate, prepared, batch_sizes, image_sizes, tolerances),
        _postprocessing(reference, candidate, samples, names, tolerances),
    ]
    return ParityReport(stages, tolerances, names)


def _preprocessing(
    model: Model, samples: Sequence[Any], prepared: list[Arrays], names: list[str], tol: Tolerances
) -> StageReport:
    comparisons = []
    for raw, ours, name in zip(samples, prepared, names):
        expected = model.reference_preprocessing(raw)
        if expected is None:
            note = "the model declares no reference_preprocessing"
            return StageReport("preprocessing", None, note=note)
        if isinstance(expected, np.ndarray):
            expected = {model.input_names[0]: expected}
        for key in model.input_names:
            label = f"{name}:{key}"
            want = np.asarray(expected[key])
            comparisons.append(_compare(label, ours[key], want, tol.preprocessing_atol, 0.0))
    return StageReport("preprocessing", all(c.passed for c in comparisons), comparisons)


def _inference(
    reference: Model, candidate: Model, prepared: list[Arrays],
    batch_sizes: Sequence[int], image_sizes: Sequence[tuple[int, int]], tol: Tolerances,
) -> StageReport:
    rows = {k: np.concatenate([p[k] for p in prepared]) for k in reference.input_names}
    comparisons = []
    for label, batch in _batches(rows, batch_sizes, image_sizes):
        want = reference.infer(batch)
        try:
            got = candidate.infer(batch)
        except ModelAgnosticError as exc:  # e.g. a size the graph does not accept
            comparisons.append(Comparison(label, math.inf, math.inf, False, str(exc)))
            continue
        for name in want:
            compared = _compare(f"{label}:{name}", got[name], want[name], tol.atol, tol.rtol)
            comparisons.append(compared)
            comparisons.extend(_topk(f"{label}:{name}", got[name], want[name], tol))
    return StageReport("inference", all(c.passed for c in comparisons), comparisons)


def _batches(
    rows: Arrays, batch_sizes: Sequence[int], image_sizes: Sequence[tuple[int, int]]
) -> Iterator[tuple[str, Arrays]]:
    available = next(iter(rows.values())).shape[0]
    for size in batch_sizes:
        take = np.arange(size) % available  # repeat rows when there are fewer than size
        yield f"batch {size}", {k: np.ascontiguousarray(v[take]) for k, v in rows.items()}
    if not all(v.ndim == 4 for v in rows.values()):
        return  # height and width only mean something for NCHW inputs
    rng = np.random.default_rng(0)
    for height, width in image_sizes:
        yield f"image {height}x{width}", {
            k: rng.standard_normal((2, v.shape[1], height, width)).astype(v.dtype)
            for k, v in rows.items()
        }


def _postprocessing(
    reference: Model, candidate: Model, samples: Sequence[Any], names: list[str], tol: Tolerances
) -> StageReport:
    comparisons = []
    results = zip(names, reference.predict_batch(samples), candidate.predict_batch(samples))
    for name, want, got in results:
        want_leaves, got_leaves = list(_leaves(want)), list(_leaves(got))
        labels_equal = [w for w in want_leaves if not _is_number(w)] == [
            g for g in got_leaves if not _is_number(g)
        ]
        numbers = [
            (float(w), float(g))
            for w, g in zip(want_leaves, got_leaves)
            if _is_number(w) and _is_number(g)
        ]
        if len(want_leaves) != len(got_leaves) or not labels_equal:
            note = "results differ in structure, labels or order"
            comparisons.append(Comparison(name, math.inf, math.inf, False, note))
            continue
        got_numbers = np.array([g for _, g in numbers])
        want_numbers = np.array([w for w, _ in numbers])
        comparisons.append(_compare(name, got_numbers, want_numbers, tol.atol, tol.rtol))
    return StageReport("postprocessing", all(c.passed for c in comparisons), comparisons)


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> Comparison:
    if got.shape != want.shape:
        return Comparison(name, math.inf, math.inf, False, f"shape {got.shape} vs {want.shape}")
    if got.size == 0:
        return Comparison(name, 0.0, 0.0, True)
    a, b = got.astype(np.float64), want.astype(np.float64)
    diff = np.abs(a - b)
    finite = np.isfinite(a) == np.isfinite(b)
    rel = diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    passed = bool(np.all(finite) and np.all(np.nan_to_num(diff, nan=np.inf) <= atol + rtol * np.abs(b)))
    return Comparison(name, float(np.nanmax(diff)), float(np.nanmax(rel)), passed)


def _topk(name: str, got: np.ndarray, want: np.ndarray, tol: Tolerances) -> list[Comparison]:
    if want.ndim != 2 or want.shape[1] < 2 or not np.issubdtype(want.dtype, np.floating):
        return []
    k = min(tol.topk, want.shape[1])
    ours, theirs = np.argsort(-got, axis=1)[:, :k], np.argsort(-want, axis=1)[:, :k]
    real = []
    for r in np.flatnonzero(np.any(ours != theirs, axis=1)):
        # a swap between values equal within tolerance is a tie, not a disagreement
        gap = np.abs(want[r, ours[r]] - want[r, theirs[r]])
        if np.any(gap > tol.atol + tol.rtol * np.abs(want[r, theirs[r]])):
            real.append(r)
    agree = 1 - len(real) / want.shape[0]
    return [Comparison(f"{name} top-{k}", 0.0, 0.0, not real, f"top-{k} agreement {agree:.0%}")]


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, np.ndarray):
        yield from value.ravel().tolist()
    else:
        yield value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _describe(raw: Any) -> str:
    if isinstance(raw, (str, bytes)) or hasattr(raw, "__fspath__"):
        return str(raw)[-60:] if not isinstance(raw, bytes) else f"<{len(raw)} bytes>"
    if hasattr(raw, "size") and hasattr(raw, "mode"):
        return f"<{raw.mode} image {raw.size[0]}x{raw.size[1]}>"
    return f"<{type(raw).__name__}>"
