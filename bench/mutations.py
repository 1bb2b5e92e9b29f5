"""The mutation catalogue through the export gate: caught / total, and the stage blamed.

Every case of ``tests/mutation_models.CATALOGUE`` (a realistic deployment bug applied to
a correct model) goes through ``export_model`` at its default verify settings, on the
sample image and ``--generated`` generated images; so do the correct model (the
negative control for false alarms) and its deployments with each ONNX Runtime setting a
mutation uses. A case is *caught* when nothing is shipped and the first failing stage is
the one the mutation names. Results: ``bench/results/mutations.json`` (per case: verdict,
stage blamed, the stages' statuses, the largest difference at the blamed stage, time).

Usage: python bench/mutations.py [--generated N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, XRAY, machine

sys.path.insert(0, str(ROOT))
from tests.mutation_models import CATALOGUE, Mutation  # noqa: E402

CLASS = (ROOT / "tests" / "mutation_models.py").as_posix() + ":Bugged"


def config_text(mutation: Mutation | None, generated: int, session: dict[str, Any]) -> str:
    options = mutation.options if mutation else {}
    lines = [f'[model]\nclass = "{CLASS}"', "[model.options]", "temperature = 2.0",
             *(f"{k} = {json.dumps(v)}" for k, v in options.items())]
    if session:
        lines += ["[onnxruntime]", *(f"{k} = {json.dumps(v)}" for k, v in session.items())]
    lines += [f'[export]\nexample = "{XRAY.as_posix()}"', f"[verify]\ngenerated = {generated}"]
    return "\n".join(lines) + "\n"


def run_case(mutation: Mutation | None, generated: int, session: dict[str, Any]) -> dict[str, Any]:
    from model_agnostic.export.pipeline import export_model

    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config.toml"
        config.write_text(config_text(mutation, generated, session))
        start = time.perf_counter()
        with mutation.applied() if mutation else contextlib.nullcontext():
            result = export_model(config, Path(scratch) / "artifact")
        seconds = time.perf_counter() - start
    report = result.report
    blamed = report.first_failure
    expected = mutation.stage if mutation else None
    stage = next((s for s in report.stages if s.stage == blamed), None)
    return {
        "name": mutation.name if mutation else "correct model",
        "what": mutation.what if mutation else "no bug (negative control)",
        "session": session,
        "expected_stage": expected,
        "verdict": report.verdict,
        "blamed": blamed,
        "shipped": result.artifact is not None,
        "caught": (not result.artifact and blamed == expected) if mutation
        else report.verdict == "passed",
        "stages": {s.stage: s.status for s in report.stages},
        "max_abs_at_blamed_stage": None if stage is None else stage.max_abs,
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", type=int, default=4,
                        help="generated images verified beside the sample (default 4)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    sessions = [{}] + [m.session for m in CATALOGUE if m.session]
    controls = [run_case(None, args.generated, session) for session in sessions]
    cases = [run_case(m, args.generated, m.session) for m in CATALOGUE]
    caught = sum(c["caught"] for c in cases)
    results = {
        "machine": machine(),
        "settings": {"generated": args.generated, "tolerances": "verify defaults"},
        "summary": {"cases": len(cases), "caught_and_blamed_right": caught,
                    "controls": len(controls),
                    "controls_refused": sum(not c["caught"] for c in controls)},
        "controls": controls,
        "cases": cases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mutations.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"Machine: {results['machine']}")
    print(f"caught and blamed on the right stage: {caught} / {len(cases)}; correct models "
          f"refused: {results['summary']['controls_refused']} / {len(controls)}\n")
    print("| bug | expected stage | blamed | caught | max abs there |")
    print("|---|---|---|:-:|---:|")
    for case in [*controls, *cases]:
        value = case["max_abs_at_blamed_stage"]
        print(f"| {case['what']} | {case['expected_stage'] or '-'} | {case['blamed'] or '-'} | "
              f"{'yes' if case['caught'] else '**no**'} | "
              f"{'-' if value is None else f'{value:.2g}'} |")


if __name__ == "__main__":
    main()
