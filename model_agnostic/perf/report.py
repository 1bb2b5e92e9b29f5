"""A sweep's results as a text table and as a JSON document."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .stats import PERCENTILES, LevelStats

__all__ = ["document", "table", "write_json"]


def table(levels: Sequence[LevelStats]) -> str:
    """One row per level (requests, failures, req/s, latency percentiles in ms), then a line
    per kind of error with the first message of that kind."""
    head = ["concurrency", "requests", "failed", "req/s", *(f"p{q} ms" for q in PERCENTILES)]
    rows = [head]
    for level in levels:
        cells = [str(level.concurrency), str(level.ok + level.failed), str(level.failed)]
        cells.append(f"{level.throughput:.2f}")
        for q in PERCENTILES:
            value = level.percentile(q)
            cells.append("-" if value is None else f"{value * 1e3:.1f}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    for level in levels:
        for label, counts in (("errors", level.errors), ("warm-up errors", level.warmup_errors)):
            for kind, count in sorted(counts.items()):
                example = level.error_examples.get(kind, "")[:200]
                where = f"{label} at concurrency {level.concurrency}"
                lines.append(f"{where}: {count} x {kind}: {example}")
    return "\n".join(lines)


def document(
    levels: Sequence[LevelStats], settings: Mapping[str, Any], samples: bool = True
) -> dict[str, Any]:
    """``{"settings": ..., "levels": [...]}``; ``samples`` keeps every request's latency."""
    return {"settings": dict(settings), "levels": [level.to_dict(samples) for level in levels]}


def write_json(path: str | Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as indented JSON."""
    Path(path).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
