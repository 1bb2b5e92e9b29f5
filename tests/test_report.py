"""The parity report's summary as a reader sees it (model_agnostic/export/report.py)."""

from __future__ import annotations

from model_agnostic.export.report import Comparison, ParityReport, StageReport, Tolerances


def _stage(name: str, max_abs: float) -> StageReport:
    return StageReport.from_comparisons(name, [Comparison(f"{name}:x", max_abs, 0.0, "pass")])


def test_summary_columns_line_up_whatever_the_stage_names() -> None:
    stages = [_stage("inference", 1e-6), _stage("savedmodel-postprocessing", 2e-7),
              _stage("artifact", 0.0)]
    lines = ParityReport(stages, Tolerances(), ["x.png"]).summary().splitlines()[:3]
    assert len({line.index("max abs") for line in lines}) == 1, lines
    assert lines[1].startswith("PASS       savedmodel-postprocessing max abs 2e-07")
