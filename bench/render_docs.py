"""Write the measured tables in docs/ from the committed results in bench/results/.

A table lives in a doc between ``<!-- table: NAME -->`` and ``<!-- /table -->``; NAME
picks the renderer below and the result file it reads. ``--check`` changes nothing and
exits 1 naming every table that differs from what its result file says (the test suite
runs it), so a number in docs/ cannot drift from the run that measured it.

Usage: python bench/render_docs.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def mutations() -> str:
    """bench/mutations.py: the catalogue, caught / total, the stage blamed."""
    data = _load("mutations.json")
    summary = data["summary"]
    lines = [
        f"Source: `bench/results/mutations.json` ({data['machine']}). "
        f"**{summary['caught_and_blamed_right']} of {summary['cases']} caught and blamed on "
        f"the right stage; correct models refused: {summary['controls_refused']} of "
        f"{summary['controls']}.**", "",
        "| bug | expected stage | blamed | caught | max abs at that stage |",
        "|---|---|---|:-:|---:|",
    ]
    for case in [*data["controls"], *data["cases"]]:
        value = case["max_abs_at_blamed_stage"]
        session = f" (ONNX Runtime {case['session']})" if case.get("session") else ""
        lines.append(
            f"| {case['what']}{session} | {case['expected_stage'] or '- (must pass)'} | "
            f"{case['blamed'] or case['verdict']} | {'yes' if case['caught'] else '**no**'} | "
            f"{'-' if value is None else f'{value:.2g}'} |")
    return "\n".join(lines)


def coverage_gate_summary() -> str:
    """bench/export_coverage.py --gate: verdict counts."""
    data = _load("export_coverage_gate.json")
    rows = list(data["rows"].values())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("verdict", "crash")] = counts.get(row.get("verdict", "crash"), 0) + 1
    failed = [r["arch"] for r in rows if r.get("verdict") not in ("passed", "unverified")]
    unverified = sorted(r["arch"] for r in rows if r.get("verdict") == "unverified")
    return "\n".join([
        f"Source: `bench/results/export_coverage_gate.json` ({data['machine']}; model_agnostic "
        f"at {data['library']}).", "",
        "| verdict | models |", "|---|---:|",
        *(f"| {verdict} | {n} |" for verdict, n in sorted(counts.items())),
        f"| **total** | **{len(rows)}** |", "",
        f"Failed as a bug: **{len(failed)}**" + (f" ({', '.join(failed)})" if failed else "") + ".",
        f"Unverified, each with its reason in the table below: {', '.join(unverified) or 'none'}.",
    ])


def coverage_gate() -> str:
    """bench/export_coverage.py --gate: one row per model."""
    data = _load("export_coverage_gate.json")
    params = data.get("params", {})
    rows = sorted(data["rows"].values(), key=lambda r: (r["family"], params.get(r["arch"], 0)))
    lines = ["| model | verdict | preprocessing | inference | postprocessing | artifact | "
             "referee waivers | export + verify (s) | peak RSS (GiB) | why not passed |",
             "|---|---|---|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        stages = row.get("stages", {})
        status = [stages.get(s, {}).get("status", "-") for s in
                  ("preprocessing", "inference", "postprocessing", "artifact")]
        reason = next((st["reason"] for st in stages.values() if st["status"] != "pass"),
                      row.get("error", ""))
        lines.append(
            f"| {row['arch']} | {row.get('verdict', 'crash')} | {' | '.join(status)} | "
            f"{row.get('referee_waivers', '-')} | {row.get('export_s', '-')} | "
            f"{row.get('peak_rss_gib', '-')} | {_cell(reason)} |")
    return "\n".join(lines)


def export_cost() -> str:
    """bench/export_cost.py: CheXNet export wall time, now vs before the artifact stage."""
    data = _load("export_cost.json")
    median = data["median_wall_s"]
    steps = data["runs"]["current"][0]["steps_s"]
    return "\n".join([
        f"Source: `bench/results/export_cost.json` ({data['machine']}), median of "
        f"{data['rounds']} alternating runs of `model-agnostic export` on "
        f"`{data['config']}`.", "",
        "| export | wall (s) |", "|---|---:|",
        f"| before the artifact stage (commit {data['baseline_commit']}) | {median['baseline']:.1f} |",
        f"| now (four stages, artifact run without torch) | {median['current']:.1f} |",
        f"| **ratio** (target <= 1.5) | **{data['ratio_current_over_baseline']:.2f}** |", "",
        "Steps of the first current run: " + ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in steps.items()) + ".",
    ])


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")[:220]


RENDERERS: dict[str, Callable[[], str]] = {
    "mutations": mutations,
    "coverage-gate-summary": coverage_gate_summary,
    "coverage-gate": coverage_gate,
    "export-cost": export_cost,
}


def render(text: str) -> tuple[str, list[str]]:
    """``text`` with every table block re-rendered; the names of blocks that changed."""
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"unknown table {name!r}; known: {sorted(RENDERERS)}")
        body = RENDERERS[name]() + "\n"
        if body != match.group("body"):
            changed.append(name)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    args = parser.parse_args(argv)
    stale = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        new, changed = render(text)
        if changed:
            stale += [f"{doc.relative_to(ROOT)}: {name}" for name in changed]
            if not args.check:
                doc.write_text(new, encoding="utf-8")
    if stale:
        verb = "differ from their results" if args.check else "rewritten"
        print(f"tables {verb}: " + "; ".join(stale), file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
