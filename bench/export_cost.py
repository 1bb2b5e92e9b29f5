"""What the four-stage gate costs: CheXNet ``model-agnostic export`` wall time, now against
the export before the artifact stage existed (commit ``--baseline``), in one run.

Both run as fresh ``python -m model_agnostic export`` processes on the same config and
sample, alternating (baseline, current, baseline, ...) so machine noise hits both alike.
The baseline runs from a temporary ``git worktree`` of its commit. Per run, the step
timings the command prints are kept too (export, verification, artifact stage).
Results: ``bench/results/export_cost.json``.

Usage: python bench/export_cost.py [--rounds 3] [--baseline 5448515]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CHEXNET_CONFIG, RESULTS, ROOT, machine

#: The last commit before three-verdict reports and the artifact stage.
BASELINE = "5448515"


def timed_export(tree: Path, output: Path) -> dict[str, object]:
    """One export of the tree's CheXNet config; wall seconds and the printed step times."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    config = tree / CHEXNET_CONFIG.relative_to(ROOT)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "model_agnostic", "export", "--config",
                           str(config), "--output", str(output)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"export in {tree} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    steps = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^\s+(.+?): done in ([\d.]+) s", done.stderr, re.M)}
    return {"wall_s": round(wall, 2), "steps_s": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        old = Path(scratch) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old),
                        args.baseline], check=True, capture_output=True)
        try:
            runs: dict[str, list[dict[str, object]]] = {"baseline": [], "current": []}
            for index in range(args.rounds):
                for name, tree in (("baseline", old), ("current", ROOT)):
                    out = Path(scratch) / f"{name}-{index}"
                    runs[name].append(timed_export(tree, out))
                    print(f"round {index + 1} {name}: {runs[name][-1]['wall_s']} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           check=False, capture_output=True)
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "machine": machine(),
        "baseline_commit": args.baseline,
        "config": str(CHEXNET_CONFIG.relative_to(ROOT)),
        "rounds": args.rounds,
        "runs": runs,
        "median_wall_s": medians,
        "ratio_current_over_baseline": round(medians["current"] / medians["baseline"], 3),
        "target": "<= 1.5",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"Machine: {result['machine']}")
    print(f"CheXNet export, median of {args.rounds}: baseline {medians['baseline']:.1f} s, "
          f"current {medians['current']:.1f} s, ratio {result['ratio_current_over_baseline']:.2f} "
          "(target <= 1.5)")


if __name__ == "__main__":
    main()
