"""Every number in docs/ comes from a committed result file a bench script wrote."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BENCH = ROOT / "bench"
#: Files in bench/ that are not benchmarks: shared code, a baseline app, a model class.
HELPERS = {"common", "naive_flask", "coverage_model", "render_common", "render_docs", "render_perf",
           "render_instances", "render_quantization", "render_tensorflow"}


def _render_docs() -> object:
    spec = importlib.util.spec_from_file_location("render_docs", BENCH / "render_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_docs", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_bench_script_has_a_committed_result() -> None:
    scripts = {p.stem for p in BENCH.glob("*.py")} - HELPERS
    tracked = subprocess.run(["git", "ls-files", "bench/results"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    results = {Path(p).stem for p in tracked}
    missing = sorted(s for s in scripts if not any(r == s or r.startswith(s + "_") for r in results))
    assert missing == []


def test_the_tables_in_docs_say_what_their_result_files_say() -> None:
    assert _render_docs().main(["--check"]) == 0  # type: ignore[attr-defined]
