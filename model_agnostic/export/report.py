"""The parity report: three verdicts per stage, never two.

Each stage ends ``pass``, ``fail`` or ``unverified`` (a check that did not run, or could
not decide, with the reason). The overall verdict is ``passed`` only when every stage
passed; any failure makes it ``failed``; otherwise an unverified stage makes it
``unverified``. A user may *waive* an unverified stage explicitly (``--allow-unverified``):
the verdict stays ``unverified``, the waiver is recorded with who asked for it, and the
artifact may then be written.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "FAIL",
    "PASS",
    "STAGES",
    "UNVERIFIED",
    "Comparison",
    "ParityReport",
    "StageReport",
    "Tolerances",
    "Waiver",
]

PASS, FAIL, UNVERIFIED = "pass", "fail", "unverified"
#: Every stage a report can hold, in order; ``artifact`` only when an artifact is checked,
#: ``savedmodel-*`` only for ``export --format savedmodel``.
STAGES = (
    "preprocessing",
    "inference",
    "postprocessing",
    "heatmaps",
    "savedmodel-inference",
    "savedmodel-postprocessing",
    "savedmodel-heatmaps",
    "artifact",
)
FORMAT = "model-agnostic-parity/2"


@dataclass(frozen=True)
class Tolerances:
    """Pass criteria; ``preprocessing_atol`` applies to stage 1, ``atol``/``rtol`` to the rest.

    ``noise_factor`` is the float64 referee's ``k`` (see :mod:`.referee`); ``threshold``
    the decision threshold counted for multi-label outputs; ``task`` how outputs are read
    for agreement counts: ``"auto"``, ``"classification"``, ``"multilabel"`` or ``"none"``.
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    preprocessing_atol: float = 1e-6
    topk: int = 5
    noise_factor: float = 4.0
    threshold: float = 0.5
    task: str = "auto"


@dataclass(frozen=True)
class Comparison:
    """One compared tensor (or result) and how far apart the two sides were.

    ``referee`` holds the float64 referee's numbers when it judged the comparison
    (a pass it granted is a recorded waiver; a fail or unverified carries its evidence).
    """

    name: str
    max_abs: float
    max_rel: float
    status: str
    note: str = ""
    referee: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass
class StageReport:
    """The comparisons of one stage and its status (``pass``, ``fail``, ``unverified``)."""

    stage: str
    status: str
    comparisons: list[Comparison] = field(default_factory=list)
    reason: str = ""

    @classmethod
    def from_comparisons(
        cls, stage: str, comparisons: list[Comparison], reason: str = ""
    ) -> StageReport:
        """``fail`` if any comparison failed, else ``unverified`` if any could not decide,
        else ``pass`` (an empty stage is ``unverified``: nothing was checked)."""
        statuses = {c.status for c in comparisons}
        if FAIL in statuses:
            status = FAIL
        elif UNVERIFIED in statuses or not comparisons:
            status = UNVERIFIED
            if not reason:
                undecided = [c for c in comparisons if c.status == UNVERIFIED]
                reason = (
                    f"{len(undecided)} of {len(comparisons)} comparisons could not be "
                    f"decided, e.g. {undecided[0].name}: {undecided[0].note}"
                    if undecided
                    else "nothing was compared"
                )
        else:
            status = PASS
        return cls(stage, status, comparisons, reason)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.comparisons), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.comparisons), default=0.0)


@dataclass(frozen=True)
class Waiver:
    """A user's explicit acceptance of one unverified stage: what, by which flag, from where."""

    stage: str
    flag: str
    source: str
    reason: str = ""
    user: str = ""


@dataclass
class ParityReport:
    """The outcome of :func:`~model_agnostic.export.verify.verify` (and of export)."""

    stages: list[StageReport]
    tolerances: Tolerances
    samples: list[str]
    waivers: list[Waiver] = field(default_factory=list)
    #: Agreement of decisions per output (top-1/top-k, or flips at the threshold).
    task: dict[str, Any] = field(default_factory=dict)
    #: What was verified: ``{"kind": "artifact" | "onnx", "path": ..., "files": {...}}``.
    subject: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"passed"``, ``"failed"`` or ``"unverified"``."""
        statuses = [s.status for s in self.stages]
        if FAIL in statuses:
            return "failed"
        if UNVERIFIED in statuses or not statuses:
            return "unverified"
        return "passed"

    @property
    def passed(self) -> bool:
        """True only when every stage passed (waivers do not make a pass)."""
        return self.verdict == "passed"

    @property
    def first_failure(self) -> str | None:
        """The first stage that diverged, or None."""
        return next((s.stage for s in self.stages if s.status == FAIL), None)

    @property
    def unverified(self) -> list[StageReport]:
        return [s for s in self.stages if s.status == UNVERIFIED]

    @property
    def unwaived(self) -> list[StageReport]:
        """Unverified stages nobody waived."""
        waived = {w.stage for w in self.waivers}
        return [s for s in self.unverified if s.stage not in waived]

    @property
    def shippable(self) -> bool:
        """No stage failed and every unverified stage was waived explicitly."""
        return self.verdict != "failed" and not self.unwaived

    def waive(self, stages: Sequence[str], *, flag: str, source: str, user: str = "") -> None:
        """Record waivers for those of ``stages`` that are unverified (``"all"``: every one)."""
        names = {s.stage for s in self.unverified} if "all" in stages else set(stages)
        for stage in self.unverified:
            if stage.stage in names and stage.stage not in {w.stage for w in self.waivers}:
                self.waivers.append(Waiver(stage.stage, flag, source, stage.reason, user))

    def referee_waivers(self) -> list[dict[str, Any]]:
        """Comparisons that passed only because the float64 referee called the gap rounding."""
        return [
            {"stage": stage.stage, "comparison": c.name, "max_abs": c.max_abs, **(c.referee or {})}
            for stage in self.stages
            for c in stage.comparisons
            if c.status == PASS and c.referee is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "verdict": self.verdict,
            "passed": self.passed,
            "first_failure": self.first_failure,
            "unverified": [{"stage": s.stage, "reason": s.reason} for s in self.unverified],
            "waivers": [asdict(w) for w in self.waivers],
            "referee_waivers": self.referee_waivers(),
            "task": self.task,
            "subject": self.subject,
            "tolerances": asdict(self.tolerances),
            "samples": self.samples,
            "stages": [
                {
                    "stage": s.stage,
                    "status": s.status,
                    "reason": s.reason,
                    "max_abs": _finite(s.max_abs),
                    "max_rel": _finite(s.max_rel),
                    "comparisons": [
                        {**asdict(c), "max_abs": _finite(c.max_abs), "max_rel": _finite(c.max_rel)}
                        for c in s.comparisons
                    ],
                }
                for s in self.stages
            ],
        }

    def summary(self) -> str:
        """A human-readable table, one line per stage, the comparisons that did not pass,
        and the verdict; an unverified verdict is framed so nobody can miss it."""
        lines = []
        width = max([15, *(len(stage.stage) for stage in self.stages)])
        for stage in self.stages:
            lines.append(
                f"{stage.status.upper():<10} {stage.stage:<{width}} max abs {stage.max_abs:.3g}  "
                f"max rel {stage.max_rel:.3g}  ({len(stage.comparisons)} compared)"
            )
            if stage.reason and stage.status != PASS:
                lines.append(f"           {stage.reason}")
            lines += [
                f"           {c.name}: abs {c.max_abs:.3g} rel {c.max_rel:.3g} {c.note}".rstrip()
                for c in stage.comparisons
                if c.status != PASS
            ][:10]
        referee = self.referee_waivers()
        if referee:
            lines.append(
                f"float64 referee: {len(referee)} comparison(s) passed as float32 "
                "rounding (recorded with their numbers)"
            )
        lines.extend(_task_lines(self.task))
        lines.extend(self.verdict_lines())
        return "\n".join(lines)

    def verdict_lines(self) -> list[str]:
        """The verdict; for ``unverified``, a framed block naming each stage and the way out."""
        if self.verdict == "passed":
            return ["parity PASSED"]
        if self.verdict == "failed":
            return [f"parity FAILED, first at {self.first_failure}"]
        body = [
            f"parity UNVERIFIED: {len(self.unverified)} stage(s) not checked; this is NOT a pass"
        ]
        for stage in self.unverified:
            waiver = next((w for w in self.waivers if w.stage == stage.stage), None)
            body += textwrap.wrap(
                f"{stage.stage}: {stage.reason}", 76, initial_indent="  ", subsequent_indent="    "
            )
            if waiver:
                body.append(
                    f"    waived by {waiver.flag} ({waiver.source}"
                    + (f", user {waiver.user}" if waiver.user else "")
                    + ")"
                )
        if self.unwaived:
            names = " ".join(f"--allow-unverified {s.stage}" for s in self.unwaived)
            body += ["  check it (see docs/export.md), or waive it explicitly:", f"    {names}"]
        width = max(len(line) for line in body) + 4
        return ["!" * width, *(f"! {line:<{width - 4}} !" for line in body), "!" * width]


def _task_lines(task: dict[str, Any]) -> list[str]:
    lines = []
    for output, counts in task.items():
        if counts.get("kind") == "classification":
            lines.append(
                f"task {output}: top-1 agrees on {counts['top1_agree']}/{counts['rows']} rows, "
                f"top-{counts['k']} on {counts['topk_agree']}/{counts['rows']}"
            )
        elif counts.get("kind") == "multilabel":
            lines.append(
                f"task {output}: {counts['flips']} of {counts['decisions']} decisions flipped "
                f"at threshold {counts['threshold']:g}"
            )
    return lines


def _finite(value: float) -> float | str:
    """JSON has no infinity: write it as the string "inf" (NaN as "nan")."""
    return value if math.isfinite(value) else str(value)
