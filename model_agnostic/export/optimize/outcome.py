"""What happened to one variant: shipped, refused (and why), skipped; as text and JSON.

Exit codes follow export's: 3 when a budget (or a stage) failed, 4 when the gate could
not decide, and 5 when the variant passed but is not faster here; 0 when every variant
was shipped or skipped with its reason; 1 when building a variant failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report import PASS, ParityReport, StageReport
from .budgets import BudgetCheck
from .layers import LayerError

__all__ = [
    "ERROR",
    "NOT_FASTER",
    "REFUSED",
    "SHIPPED",
    "SKIPPED",
    "UNVERIFIED",
    "VariantResult",
    "exit_code",
]

SHIPPED, SKIPPED, REFUSED, UNVERIFIED, NOT_FASTER, ERROR = (
    "shipped",
    "skipped",
    "refused",
    "unverified",
    "not-faster",
    "error",
)
_EXIT = {SHIPPED: 0, SKIPPED: 0, NOT_FASTER: 5, UNVERIFIED: 4, REFUSED: 3, ERROR: 1}
_SEVERITY = (ERROR, REFUSED, UNVERIFIED, NOT_FASTER)


@dataclass
class VariantResult:
    """One variant's outcome. ``artifact`` is None unless it was shipped; ``report`` is
    the gate (stages ``preprocessing``, ``task``, ``artifact``); ``elementwise`` the
    element-wise stages, reported and not gated; ``layers`` the layers that diverge most
    (when a budget failed); ``attempts`` one entry per build (a retry excludes layers)."""

    variant: str
    status: str
    reason: str = ""
    artifact: Path | None = None
    report: ParityReport | None = None
    elementwise: list[StageReport] = field(default_factory=list)
    budgets: list[BudgetCheck] = field(default_factory=list)
    layers: list[LayerError] = field(default_factory=list)
    speed: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return _EXIT[self.status]

    def to_dict(self) -> dict[str, Any]:
        speed = {k: v for k, v in (self.speed or {}).items() if k != "samples_s"}
        return {
            "variant": self.variant,
            "status": self.status,
            "reason": self.reason,
            "artifact": str(self.artifact) if self.artifact else None,
            "verdict": self.report.verdict if self.report else None,
            "budgets": [check.to_dict() for check in self.budgets],
            "elementwise": {
                s.stage: {"max_abs": _finite(s.max_abs), "max_rel": _finite(s.max_rel)}
                for s in self.elementwise
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "speed": speed or None,
            "attempts": self.attempts,
        }

    def summary(self, layers: int = 5) -> str:
        """A few lines: the verdict, the numbers behind it, and what to do next."""
        head = {
            SHIPPED: f"shipped to {self.artifact}",
            SKIPPED: "skipped",
            REFUSED: "REFUSED, nothing written",
            UNVERIFIED: "UNVERIFIED, nothing written",
            NOT_FASTER: "NOT SHIPPED, nothing written",
            ERROR: "FAILED to build",
        }[self.status]
        lines = [f"{self.variant}: {head}" + (f": {self.reason}" if self.reason else "")]
        for stage in self.elementwise:
            lines.append(
                f"  reported   {stage.stage:<15} max abs {stage.max_abs:.3g}  max rel "
                f"{stage.max_rel:.3g}  (element-wise, not gated)"
            )
        for stage in self.report.stages if self.report else []:
            lines.append(f"  {stage.status.upper():<10} {stage.stage:<15} {stage.reason}".rstrip())
            lines += [
                f"    {'ok  ' if c.status == PASS else c.status.upper()} {c.note or c.name}"
                for c in stage.comparisons
                if stage.stage == "task" or c.status != PASS
            ][:12]
        if self.speed:
            lines.append(f"  speed: {speed_line(self.speed)}")
        if self.layers:
            lines.append(
                "  layers that diverge most (relative error each adds, FP32 vs variant on "
                f"{self.record.get('layer_rows', '?')} rows):"
            )
            adding = [layer for layer in self.layers if layer.added > 0] or self.layers[:1]
            lines += [f"    {layer.line()}" for layer in adding[:layers]]
            lines.append(
                f"  to keep the worst in float: --exclude-nodes {','.join(adding[0].nodes)} "
                "(exclude_nodes), or --retry-excluding N: up to N retries, each keeping the "
                "layer that adds most in float"
            )
        for attempt in self.attempts if len(self.attempts) > 1 else []:
            lines.append(
                f"  attempt {attempt['attempt']}: {attempt['verdict']}, kept in float: "
                f"{attempt['exclude_nodes'] or 'nothing'}"
            )
        return "\n".join(lines)


def speed_line(speed: dict[str, Any]) -> str:
    """``1.34x faster here (FP32 2.1 ms, variant 1.6 ms; 1 row, 2 threads, 40 rounds)``."""
    ratio, needed = speed["speedup"], speed.get("min_speedup", 1.0)
    verdict = f"{ratio:.2f}x faster here" if ratio >= needed else f"not faster here: {ratio:.2f}x"
    return (
        f"{verdict} (median FP32 {speed['fp32_s'] * 1e3:.3g} ms, variant "
        f"{speed['variant_s'] * 1e3:.3g} ms; {speed['rows']} row(s), "
        f"{speed.get('threads', '?')} threads each, {speed['rounds']} interleaved rounds)"
    )


def _finite(value: float) -> float | str:
    """JSON has no infinity: ``"inf"`` (and ``"nan"``) as strings, as parity.json writes them."""
    return value if math.isfinite(value) else str(value)


def exit_code(results: list[VariantResult]) -> int:
    """The most severe status's code (error, refused, unverified, not faster), else 0."""
    statuses = {result.status for result in results}
    for status in _SEVERITY:
        if status in statuses:
            return _EXIT[status]
    return 0
