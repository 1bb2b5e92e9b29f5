"""Padding kernels for :func:`model_agnostic.transforms.functional.pad`, which validates its
arguments first: PIL images through Pillow (torchvision's PIL path), arrays through numpy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = ["PAD_MODES", "pad_array", "pad_pil"]

PAD_MODES = ("constant", "edge", "reflect", "symmetric")


def _parse_fill(fill: Any, img: Image.Image) -> Any:
    """torchvision's ``_parse_fill`` for PIL: one int (float for mode F) per band."""
    num_channels = len(img.getbands())
    if fill is None:
        fill = 0
    if isinstance(fill, (int, float)) and num_channels > 1:
        fill = tuple([fill] * num_channels)
    if isinstance(fill, (list, tuple)):
        if len(fill) == 1:
            fill = fill * num_channels
        elif len(fill) != num_channels:
            raise ValueError(
                "The number of elements in 'fill' does not match the number of "
                f"channels of the image ({len(fill)} != {num_channels})"
            )
        fill = tuple(fill)
    if img.mode != "F":
        fill = tuple(int(x) for x in fill) if isinstance(fill, tuple) else int(fill)
    return fill


def _padding_ltrb(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    if not isinstance(padding, Sequence):
        return (int(padding),) * 4
    if len(padding) == 1:
        return (int(padding[0]),) * 4
    if len(padding) == 2:
        return int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


def pad_pil(img: Image.Image, padding: Any, fill: Any, padding_mode: str) -> Image.Image:
    palette = img.getpalette() if img.mode == "P" else None
    if padding_mode == "constant":
        border = padding[0] if isinstance(padding, (tuple, list)) and len(padding) == 1 else padding
        out = ImageOps.expand(
            img,
            border=tuple(border) if isinstance(border, list) else border,
            fill=_parse_fill(fill, img),
        )
    else:
        ltrb = _padding_ltrb(padding)
        cl, ct, cr, cb = (max(-p, 0) for p in ltrb)
        if cl or ct or cr or cb:
            img = img.crop((cl, ct, img.width - cr, img.height - cb))
        left, top, right, bottom = (max(p, 0) for p in ltrb)
        arr = np.asarray(img)
        widths = ((top, bottom), (left, right)) + ((0, 0),) * (arr.ndim - 2)
        out = Image.fromarray(np.pad(arr, widths, padding_mode))  # type: ignore[call-overload]
    if palette is not None:
        out.putpalette(palette)
    return out


def pad_array(img: np.ndarray, padding: Any, fill: Any, padding_mode: str) -> np.ndarray:
    left, top, right, bottom = _padding_ltrb(padding)
    h, w = img.shape[-2:]
    img = img[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    left, top, right, bottom = (max(p, 0) for p in (left, top, right, bottom))
    h, w = img.shape[-2:]
    if padding_mode in ("reflect", "symmetric"):
        limit_h, limit_w = (h - 1, w - 1) if padding_mode == "reflect" else (h, w)
        if max(top, bottom) > limit_h or max(left, right) > limit_w:
            bound = "smaller than" if padding_mode == "reflect" else "at most"
            raise ValueError(
                f"{padding_mode} padding should be {bound} the image size "
                f"(h, w) = {(h, w)}. Got (l, t, r, b) = {(left, top, right, bottom)}"
            )
    widths = ((0, 0),) * (img.ndim - 2) + ((top, bottom), (left, right))
    if padding_mode == "constant":
        return np.pad(img, widths, constant_values=0 if fill is None else fill)
    return np.pad(img, widths, padding_mode)  # type: ignore[call-overload]
