"""Exact multi-threaded ``PIL.Image.resize``: bands of the output computed in parallel.

Pillow resamples separably, one pass per axis, and releases the GIL while it does. The
output rows ``[r0, r1)`` of ``img.resize((W, H), f)`` are also what
``img.resize((W, r1 - r0), f, box=(0, r0 * s, w, r1 * s))`` returns, with ``s = h / H``,
when three things hold, all checked here before a band is used:

1. The box arithmetic is exact. Pillow derives each output row's source window and
   weights from ``box_top + (row + 0.5) * (box_height / rows)``, box corners in C float32
   and the rest in double. When ``h / H`` is a dyadic rational (reduced denominator a
   power of two: 1024 -> 256, any side -> 256, 2x upscales) and every corner ``r * s``
   fits a float32 significand, every one of those numbers is exact, so the band gets the
   same windows and weights, bit for bit, as the single call. Checked with integers.
2. The passes run in the same order. Pillow 13 runs the vertical pass first when the
   height shrinks by more than twice as many pixels as the width (decided from the
   call's sizes alone); older Pillow always runs the horizontal pass first. Which rule
   the running Pillow follows is found once by probe resizes (``_pass_order``), and a
   band is only used when its call takes the same order as the single call.
3. Nothing else depends on the band: the other axis keeps the whole-image box, so its
   coefficients are the single call's, and every output pixel is computed from its own
   coefficients and source pixels (intermediate rounding included).

The same holds for bands of columns, tried when rows do not qualify. NEAREST (a cheap
gather; also what modes "1" and "P" always use) and small images get the single call.
Threads: ``$MODEL_AGNOSTIC_RESIZE_THREADS`` (1 disables banding), by default the usable
CPUs capped at ``MAX_THREADS``. Worker threads are started on first use, never on import.
This module also holds torchvision's output-size rules for ``functional.resize``.
"""

from __future__ import annotations

import functools
import numbers
import os
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from itertools import pairwise
from typing import Any

from PIL import Image

__all__ = [
    "ENV_THREADS",
    "MAX_THREADS",
    "MIN_COST",
    "band_plan",
    "banded",
    "resize",
    "resize_threads",
]

ENV_THREADS = "MODEL_AGNOSTIC_RESIZE_THREADS"
MAX_THREADS = 4
# Below this _cost() (about 0.9 ms of resampling on one core) handing bands to threads costs
# about what it saves; measured on a 2-core EPYC, see docs/transforms.md.
MIN_COST = 600_000
_FILTER_COST: dict[int, float] = {
    Image.Resampling.BOX: 0.7,
    Image.Resampling.BILINEAR: 1.0,
    Image.Resampling.HAMMING: 1.0,
    Image.Resampling.BICUBIC: 1.6,
    Image.Resampling.LANCZOS: 2.2,
}
_MIN_BAND = 8  # output rows (or columns) per band, at least

_pools: dict[int, ThreadPoolExecutor] = {}  # by worker count; created on first use
_pools_lock = threading.Lock()
_fork_hooked = False  # whether _forget_pools is registered to run after fork()


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _compute_resized_output_size(
    image_size: tuple[int, int], size: list[int], max_size: int | None = None
) -> list[int]:
    """Output ``[h, w]``: torchvision's rounding (int() truncation of the long side)."""
    h, w = image_size
    short, long = (w, h) if w <= h else (h, w)
    if len(size) == 1:
        requested_new_short = size[0]
        new_short, new_long = requested_new_short, int(requested_new_short * long / short)
        if max_size is not None:
            if max_size <= requested_new_short:
                raise ValueError(
                    f"max_size = {max_size} must be strictly greater than the "
                    f"requested size for the smaller edge size = {size}"
                )
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), max_size
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        new_w, new_h = size[1], size[0]
    return [new_h, new_w]


def _check_resize_size(size: Any, max_size: int | None) -> list[int]:
    if _is_int(size):
        size = [size]
    elif not isinstance(size, Sequence) or isinstance(size, str):
        raise TypeError(f"size should be int or sequence of length 1 or 2. Got {type(size)}")
    if len(size) not in (1, 2):
        raise ValueError(f"size should be int or sequence of length 1 or 2. Got {len(size)} values")
    if not all(_is_int(s) for s in size):
        raise TypeError(f"size should contain ints. Got {size!r}")
    if max_size is not None and len(size) != 1:
        raise ValueError(
            "max_size should only be passed if size specifies the length of the "
            "smaller edge, i.e. size should be an int or a sequence of length 1."
        )
    return [int(s) for s in size]


@functools.cache
def _usable_cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


def resize_threads() -> int:
    """``$MODEL_AGNOSTIC_RESIZE_THREADS``, else the usable CPUs capped at ``MAX_THREADS``."""
    value = os.environ.get(ENV_THREADS, "").strip()
    if not value:
        return min(_usable_cpus(), MAX_THREADS)
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(
            f"{ENV_THREADS} should be a positive integer (1 disables threaded "
            f"resizing). Got {value!r}"
        )
    return threads


def _forget_pools() -> None:
    """In a forked child: the parent's worker threads do not exist here; start afresh."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _fork_hooked
    with _pools_lock:
        if not _fork_hooked and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_pools)
            _fork_hooked = True
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, "model_agnostic_resize")
        return _pools[workers]


def _fits(value: Fraction, bits: int) -> bool:
    """Whether a dyadic rational has an odd part of at most ``bits`` bits (exact float)."""
    numerator = value.numerator
    return (numerator // (numerator & -numerator)).bit_length() <= bits if numerator else True


def _exact_cuts(n_in: int, n_out: int, bands: int) -> list[int] | None:
    """Cuts splitting an output axis into ``bands`` bands with exact box arithmetic, or None."""
    if n_in == n_out or n_out < bands * _MIN_BAND:
        return None
    scale = Fraction(n_in, n_out)
    if scale.denominator & (scale.denominator - 1):  # not dyadic: r * scale would be rounded
        return None
    if not _fits(scale * (2 * n_out + 1), 53):  # every centre (r + 0.5) * scale: a double
        return None
    cuts = [n_out * i // bands for i in range(bands + 1)]
    if all(_fits(cut * scale, 24) for cut in cuts) and all(  # corners and heights: float32
        _fits((hi - lo) * scale, 24) for lo, hi in pairwise(cuts)
    ):
        return cuts
    return None


def _vertical_first_pillow13(
    in_size: tuple[int, int], out_size: tuple[int, int], need_h: bool, need_v: bool
) -> bool:
    """Pillow 13's pass order (its ImagingResample): vertical pass first when the height
    shrinks by more pixels than twice the width does."""
    (w, h), (out_w, out_h) = in_size, out_size
    return need_h and need_v and h > out_h and h - out_h > 2 * (w - out_w)


def _horizontal_always_first(
    in_size: tuple[int, int], out_size: tuple[int, int], need_h: bool, need_v: bool
) -> bool:
    """Older Pillow's pass order: horizontal pass first, always."""
    return False


PassOrder = Callable[[tuple[int, int], tuple[int, int], bool, bool], bool]
# (in, out) sizes that tell the rules apart, including both sides of Pillow 13's threshold.
_ORDER_PROBES = (
    ((20, 40), (10, 20)),
    ((20, 40), (10, 19)),
    ((10, 40), (20, 20)),
    ((40, 40), (10, 10)),
    ((40, 40), (30, 10)),
    ((30, 20), (10, 40)),
)


@functools.cache
def _pass_order() -> PassOrder | None:
    """The running Pillow's pass-order rule, from tiny probe resizes (once, on first need);
    None (no banding) when Pillow follows neither known rule or a banded probe is inexact."""
    rnd, bicubic, seen = random.Random(0), Image.Resampling.BICUBIC, []
    for in_size, out_size in _ORDER_PROBES:
        img = Image.frombytes("L", in_size, rnd.randbytes(in_size[0] * in_size[1]))
        h_first = img.resize((out_size[0], in_size[1]), bicubic).resize(out_size, bicubic)
        v_first = img.resize((in_size[0], out_size[1]), bicubic).resize(out_size, bicubic)
        got = img.resize(out_size, bicubic).tobytes()
        if h_first.tobytes() == v_first.tobytes() or got not in (
            h_first.tobytes(),
            v_first.tobytes(),
        ):
            return None
        seen.append(got == v_first.tobytes())
    rule = next(
        (
            rule
            for rule in (_vertical_first_pillow13, _horizontal_always_first)
            if seen == [rule(i, o, True, True) for i, o in _ORDER_PROBES]
        ),
        None,
    )
    probe = Image.frombytes("L", (64, 48), rnd.randbytes(64 * 48))
    expected = probe.resize((16, 12), bicubic).tobytes()
    for axis, cuts in (("rows", [0, 6, 12]), ("columns", [0, 8, 16])):
        parts = [_band(probe, (16, 12), bicubic, axis, lo, hi) for lo, hi in pairwise(cuts)]
        if _paste(probe, (16, 12), axis, cuts, parts).tobytes() != expected:
            return None
    return rule


def _cost(img: Image.Image, size: tuple[int, int], resample: int) -> float:
    """Rough cost of ``img.resize(size, resample)``: source x output pixels the two passes
    touch, times bands and filter length (LA, RGBA: premultiplied whole in every band)."""
    (w, h), (out_w, out_h) = img.size, size
    work = h * max(w, out_w) * (w != out_w) + out_w * max(h, out_h) * (h != out_h)
    bands = len(img.getbands()) / (2 if img.mode in ("LA", "RGBA") else 1)
    return work * bands * _FILTER_COST.get(resample, 1.0)


def band_plan(
    img: Image.Image, size: tuple[int, int], resample: int, threads: int
) -> tuple[str, list[int]] | None:
    """``("rows" | "columns", output cuts)`` for an exact banded resize, or None."""
    if threads < 2 or resample == Image.Resampling.NEAREST or img.mode in ("1", "P", "PA"):
        return None
    if _cost(img, size, resample) < MIN_COST or (vertical_first := _pass_order()) is None:
        return None
    (w, h), (out_w, out_h) = img.size, size
    order = vertical_first(img.size, size, out_w != w, out_h != h)
    rows = _exact_cuts(h, out_h, threads)
    if rows is not None and all(
        vertical_first(img.size, (out_w, hi - lo), out_w != w, True) == order
        for lo, hi in pairwise(rows)
    ):
        return "rows", rows
    columns = _exact_cuts(w, out_w, threads)
    if columns is not None and all(
        vertical_first(img.size, (hi - lo, out_h), True, out_h != h) == order
        for lo, hi in pairwise(columns)
    ):
        return "columns", columns
    return None


def _band(
    img: Image.Image, size: tuple[int, int], resample: int, axis: str, lo: int, hi: int
) -> Image.Image:
    """Output rows (or columns) ``[lo, hi)`` of ``img.resize(size, resample)``."""
    (w, h), (out_w, out_h) = img.size, size
    if axis == "rows":
        scale = Fraction(h, out_h)
        box = (0.0, float(lo * scale), float(w), float(hi * scale))
        return img.resize((out_w, hi - lo), resample, box=box)
    scale = Fraction(w, out_w)
    box = (float(lo * scale), 0.0, float(hi * scale), float(h))
    return img.resize((hi - lo, out_h), resample, box=box)


def _paste(
    img: Image.Image, size: tuple[int, int], axis: str, cuts: list[int], parts: list[Image.Image]
) -> Image.Image:
    out = Image.new(img.mode, size)
    for lo, part in zip(cuts, parts):
        out.paste(part, (0, lo) if axis == "rows" else (lo, 0))
    out.info = parts[-1].info  # what Image.resize gives: a copy of the source's info
    return out


def banded(
    img: Image.Image, size: tuple[int, int], resample: int, axis: str, cuts: list[int]
) -> Image.Image:
    """Resize band by band, the last band in this thread, the others in the pool."""
    img.load()  # once, before threads share the image
    spans = list(pairwise(cuts))
    pool = _pool(len(spans) - 1) if len(spans) > 1 else None
    futures = (
        [pool.submit(_band, img, size, resample, axis, *span) for span in spans[:-1]]
        if pool
        else []
    )
    last = _band(img, size, resample, axis, *spans[-1])
    return _paste(img, size, axis, cuts, [future.result() for future in futures] + [last])


def resize(img: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    """``img.resize(size, resample)``, byte for byte; banded over threads when exact."""
    threads = resize_threads()
    plan = band_plan(img, size, resample, threads)
    if plan is None:
        return img.resize(size, resample)
    return banded(img, size, resample, *plan)
