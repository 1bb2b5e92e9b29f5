"""A sweep drawn with Pillow: throughput (top) and p50/p99 latency (bottom) against
concurrency, the levels evenly spaced along the x axis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .stats import LevelStats

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw

__all__ = ["plot_png"]

_WIDTH, _PANEL, _MARGIN = 640, 240, 64
_SERIES = {  # label -> colour
    "req/s": (31, 119, 180),
    "p50 ms": (44, 160, 44),
    "p99 ms": (214, 39, 40),
}


def plot_png(levels: Sequence[LevelStats], path: str | Path, title: str = "") -> None:
    """Draw ``levels`` into a PNG at ``path``; a level without a successful request is a gap."""
    from PIL import Image, ImageDraw

    height = 2 * _PANEL + 3 * _MARGIN // 2
    image = Image.new("RGB", (_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, 8), title or "model-agnostic perf", fill="black")
    p50 = [_ms(level.percentile(50)) for level in levels]
    p99 = [_ms(level.percentile(99)) for level in levels]
    panels = (
        ("throughput (req/s)", {"req/s": [lv.throughput if lv.ok else None for lv in levels]}),
        ("latency (ms)", {"p50 ms": p50, "p99 ms": p99}),
    )
    for index, (label, series) in enumerate(panels):
        top = _MARGIN // 2 + 16 + index * (_PANEL + _MARGIN // 2)
        _panel(draw, top, label, [lv.concurrency for lv in levels], series)
    draw.text((_WIDTH // 2 - 30, height - 18), "concurrency", fill="black")
    image.save(path, format="PNG")


def _panel(
    draw: ImageDraw,
    top: int,
    label: str,
    concurrency: Sequence[int],
    series: dict[str, list[float | None]],
) -> None:
    """One panel: frame, y ticks from 0 to the largest value, x ticks at each level, lines."""
    left, right, bottom = _MARGIN, _WIDTH - 16, top + _PANEL - 24
    values = [v for points in series.values() for v in points if v is not None]
    peak = _nice(max(values, default=1.0) * 1.05)
    draw.rectangle((left, top, right, bottom), outline="black")
    draw.text((left, top - 14), label, fill="black")
    for step in range(5):
        value = peak * step / 4
        y = bottom - (bottom - top) * step / 4
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((4, y - 6), f"{value:,.0f}" if peak >= 40 else f"{value:.3g}", fill="black")
    span = max(len(concurrency) - 1, 1)

    def x_of(i: int) -> float:
        return left + 24 + (right - left - 48) * (i / span if len(concurrency) > 1 else 0.5)

    for i, level in enumerate(concurrency):
        draw.line((x_of(i), bottom, x_of(i), bottom + 4), fill="black")
        draw.text((x_of(i) - 4, bottom + 6), str(level), fill="black")
    for row, (name, points) in enumerate(series.items()):
        colour = _SERIES[name]
        xy = [
            None if v is None else (x_of(i), bottom - (bottom - top) * v / peak)
            for i, v in enumerate(points)
        ]
        for a, b in zip(xy, xy[1:]):
            if a is not None and b is not None:
                draw.line((*a, *b), fill=colour, width=2)
        for x, y in (p for p in xy if p is not None):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((right - 60 * (len(series) - row), top - 14), name, fill=colour)


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3
