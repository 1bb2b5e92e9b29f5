"""Compare two float32 results, and tell a wrong graph from float32 rounding.

A comparison first applies the tolerance, as Polygraphy does: every element within
``atol + rtol * |expected|``. When that fails and the reference can run in float64, the
same network's float64 result is the referee, **element by element**. With ``t`` the
distance of PyTorch's float32 result from float64 and ``r`` the candidate's::

    r[i] <= atol + rtol * |f64[i]| + k * max(t[i], floor[i])

must hold at *every* element for the gap to count as rounding. ``t[i]`` is the float32
noise at that element; ``floor[i]``, the largest ``t`` among the elements no bigger than
``2 * |f64[i]| + median(|f64|)``, keeps an element where PyTorch happened to round
exactly from being held to zero. Large elements elsewhere in the tensor (whose rounding
is large) never raise the floor of the small ones, so a lowering error far above the
float32 noise at its own element is refused even when the tensor also holds big values.

A candidate within ``atol + rtol * |f64|`` of the float64 result at every element passes
(it agrees with the exact computation better than PyTorch does). Otherwise, when
PyTorch's own float32 result misses the tolerance against float64 at half the elements
or more, float32 cannot settle the question on that input (a chaotic or ill-conditioned
network): the comparison is *unverified*, never waived.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..model import Arrays, Model
from .report import FAIL, PASS, UNVERIFIED, Comparison

__all__ = ["CHAOS_SHARE", "compare", "float64_outputs", "lazy_float64", "noise_floor"]

log = logging.getLogger(__name__)

#: PyTorch float32 beyond tolerance at this share of elements or more: unverifiable.
CHAOS_SHARE = 0.5

Exact = Callable[[], "np.ndarray | None"]


def compare(
    name: str,
    got: np.ndarray,
    want: np.ndarray,
    atol: float,
    rtol: float,
    exact: Exact | None = None,
    factor: float = 4.0,
) -> Comparison:
    """``got`` (candidate) against ``want`` (reference), refereed by ``exact()`` if needed.

    ``exact`` returns the reference computed in float64 (or None when it cannot be);
    it is only called when the tolerance check fails.
    """
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return Comparison(name, math.inf, math.inf, FAIL, f"shape {got.shape} vs {want.shape}")
    if got.size == 0:
        return Comparison(name, 0.0, 0.0, PASS)
    a, b = got.astype(np.float64), want.astype(np.float64)
    same_special = _same_non_finite(a, b)
    with np.errstate(invalid="ignore"):
        diff = np.where(same_special, 0.0, np.abs(a - b))
    diff = np.nan_to_num(diff, nan=np.inf)
    max_abs = float(diff.max())
    rel = diff / np.maximum(np.abs(np.nan_to_num(b)), np.finfo(np.float64).tiny)
    max_rel = float(rel.max())
    within = diff <= atol + rtol * np.abs(np.nan_to_num(b))
    if bool(within.all()):
        return Comparison(name, max_abs, max_rel, PASS)
    worst = _index(diff)
    plain = (
        f"{int((~within).sum())} of {within.size} elements beyond {atol:g} + {rtol:g}"
        f" * |expected|; worst at {worst}: {a[worst]:.7g} vs {b[worst]:.7g}"
    )
    reference = exact() if exact is not None else None
    if reference is None or not bool(np.all(np.isfinite(a))) or not bool(np.all(np.isfinite(b))):
        why = "no float64 referee" if reference is None else "non-finite values"
        return Comparison(name, max_abs, max_rel, FAIL, f"{plain} ({why})")
    return _referee(
        name, a, b, np.asarray(reference, np.float64), atol, rtol, factor, max_abs, max_rel, plain
    )


def _referee(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    atol: float,
    rtol: float,
    factor: float,
    max_abs: float,
    max_rel: float,
    plain: str,
) -> Comparison:
    if x.shape != b.shape or not bool(np.all(np.isfinite(x))):
        return Comparison(name, max_abs, max_rel, FAIL, f"{plain} (float64 run unusable)")
    torch32 = np.abs(b - x)  # PyTorch's own float32 rounding, element by element
    ours = np.abs(a - x)
    tolerance = atol + rtol * np.abs(x)
    noisy = float(np.mean(torch32 > tolerance))
    floor = noise_floor(torch32, x)
    allowed = tolerance + factor * np.maximum(torch32, floor)
    ratio = ours / np.maximum(allowed, np.finfo(np.float64).tiny)
    worst = _index(ratio)
    numbers = {
        "candidate_vs_f64_max": float(ours.max()),
        "torch32_vs_f64_max": float(torch32.max()),
        "floor_at_worst": float(floor[worst]),
        "torch32_beyond_tolerance": round(noisy, 4),
        "worst_element": list(worst),
        "worst_ratio": float(ratio[worst]),
        "factor": factor,
    }
    if bool(np.all(ours <= tolerance)):
        return Comparison(
            name,
            max_abs,
            max_rel,
            PASS,
            "float32 rounding: the candidate is within tolerance of the float64 result "
            f"everywhere, PyTorch float32 is not (off by up to {torch32.max():.3g})",
            numbers,
        )
    if noisy >= CHAOS_SHARE:
        return Comparison(
            name,
            max_abs,
            max_rel,
            UNVERIFIED,
            f"{plain}; unverifiable: PyTorch float32 itself misses the tolerance against "
            f"float64 at {noisy:.0%} of elements (up to {torch32.max():.3g}), so float32 "
            "cannot settle this input",
            numbers,
        )
    if float(ratio[worst]) <= 1.0:
        return Comparison(
            name,
            max_abs,
            max_rel,
            PASS,
            f"float32 rounding: candidate within {factor:g}x PyTorch's own float32 error "
            f"of float64 at every element (worst {ratio[worst]:.2f} of allowed)",
            numbers,
        )
    return Comparison(
        name,
        max_abs,
        max_rel,
        FAIL,
        f"{plain}; not float32 rounding: at {worst} the candidate is {ours[worst]:.3g} from "
        f"float64 where PyTorch float32 is {torch32[worst]:.3g} (allowed {allowed[worst]:.3g})",
        numbers,
    )


def noise_floor(noise: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per element, the largest ``noise`` among elements whose ``|exact|`` is at most
    ``2 * |exact[i]| + median(|exact|)``: float32 noise of comparable or smaller values."""
    magnitude = np.abs(exact).ravel()
    order = np.argsort(magnitude, kind="stable")
    running = np.maximum.accumulate(noise.ravel()[order])
    bound = 2 * magnitude + np.median(magnitude)
    last = np.searchsorted(magnitude[order], bound, side="right") - 1
    return running[np.maximum(last, 0)].reshape(noise.shape)


def float64_outputs(model: Model, arrays: Arrays) -> Arrays | None:
    """The PyTorch model's outputs in float64: its network is converted in place and
    restored exactly (float32 -> float64 -> float32 is lossless). None when the model
    is not on PyTorch or its network cannot run in float64."""
    network: Any = getattr(model, "network", None)
    if network is None or not hasattr(network, "parameters"):
        return None
    import torch

    tensors = [
        t
        for t in (*network.parameters(), *network.buffers())
        if t.is_floating_point() and t.dtype != torch.float64
    ]
    dtypes = [t.dtype for t in tensors]
    try:
        for tensor in tensors:
            tensor.data = tensor.data.to(torch.float64)
        return model.infer(
            {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}
        )
    except Exception as exc:  # a forward that hard-codes float32, an op without float64
        log.info("float64 reference run failed: %s", exc)
        return None
    finally:
        for tensor, dtype in zip(tensors, dtypes):
            tensor.data = tensor.data.to(dtype)


def lazy_float64(model: Model, arrays: Arrays) -> Callable[[str], np.ndarray | None]:
    """``output name -> float64 output``, running the network in float64 at most once."""
    cache: dict[str, Any] = {}

    def get(name: str) -> np.ndarray | None:
        if "outputs" not in cache:
            cache["outputs"] = float64_outputs(model, arrays)
        outputs = cache["outputs"]
        return None if outputs is None else outputs.get(name)

    return get


def _same_non_finite(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elements where both sides hold the same NaN or infinity (those agree)."""
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    return both_nan | same_inf


def _index(values: np.ndarray) -> tuple[int, ...]:
    flat = int(np.argmax(values))
    return tuple(int(i) for i in np.unravel_index(flat, values.shape))
