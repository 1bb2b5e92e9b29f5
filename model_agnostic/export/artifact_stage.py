"""Stage 4, ``artifact``: the artifact as shipped, run where torch cannot be imported.

The artifact folder is loaded back from disk in a fresh Python process in which
``import torch`` fails (as on a torch-free production host): checksums verified, its
``config.toml`` (options included) and copied model source imported, the graph run by
ONNX Runtime. Its final results on the verified samples are compared with the PyTorch
model's, number by number. This catches what stages 1-3 cannot: an option that did not
survive the trip into ``config.toml``, hooks that behave differently without torch, a
model file that imports torch at the top, a file missing from the artifact.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .report import FAIL, UNVERIFIED, Comparison, StageReport, Tolerances

__all__ = ["BLOCKED", "check_artifact"]

#: Modules the child process refuses to import.
BLOCKED = ("torch", "torchvision", "onnxscript", "safetensors")
TIMEOUT_S = 900.0

_CHILD = (
    "import sys\n"
    f"for _name in {BLOCKED!r}:\n"
    "    sys.modules[_name] = None\n"
    "from model_agnostic.export.artifact_stage import _child\n"
    "sys.exit(_child(sys.argv[1], sys.argv[2], sys.argv[3]))\n"
)


def check_artifact(
    folder: str | os.PathLike[str],
    samples: Sequence[Any],
    names: Sequence[str],
    expected: Sequence[Any],
    tolerances: Tolerances,
    exact: Callable[[int], Callable[[], Any]] | None = None,
) -> StageReport:
    """Run the artifact in ``folder`` on ``samples`` in a torch-free process and compare
    its results with ``expected`` (the PyTorch model's); ``exact(i)`` gives sample i's
    result from float64 outputs, the referee for rounding."""
    from .results import compare_results

    with tempfile.TemporaryDirectory(prefix="model-agnostic-artifact-") as scratch:
        inputs, output = Path(scratch) / "samples.pkl", Path(scratch) / "results.json"
        try:
            inputs.write_bytes(pickle.dumps(list(samples)))
        except Exception as exc:  # a sample object that cannot cross a process boundary
            return StageReport(
                "artifact",
                UNVERIFIED,
                reason=(
                    f"the samples cannot be passed to a fresh process ({type(exc).__name__}: "
                    f"{exc}); the artifact was not run"
                ),
            )
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _CHILD,
                    str(Path(folder).resolve()),
                    str(inputs),
                    str(output),
                ],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                env=_child_env(),
            )
        except subprocess.TimeoutExpired:
            return StageReport(
                "artifact",
                FAIL,
                reason=(f"loading and running the artifact took over {TIMEOUT_S:.0f} s; stopped"),
            )
        if done.returncode != 0 or not output.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-3:])
            return StageReport(
                "artifact",
                FAIL,
                reason=(
                    f"the artifact does not run without torch (exit {done.returncode}): {tail}"
                ),
            )
        answer = json.loads(output.read_text())
    comparisons = [
        compare_results(name, want, got, tolerances, exact(i) if exact else None)
        for i, (name, want, got) in enumerate(zip(names, expected, answer["results"]))
    ]
    if len(answer["results"]) != len(expected):
        comparisons.append(
            Comparison(
                "results",
                math.inf,
                math.inf,
                FAIL,
                f"{len(answer['results'])} results for {len(expected)} samples",
            )
        )
    stage = StageReport.from_comparisons("artifact", comparisons)
    stage.reason = stage.reason or (
        f"loaded from disk in a fresh process without torch ({answer['backend']}, "
        f"{answer['seconds']:.2f} s)"
    )
    return stage


def _child_env() -> dict[str, str]:
    """The parent's environment, with this package importable however it was found."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _child(folder: str, inputs: str, output: str) -> int:
    """In the torch-free process: load the artifact, predict, write flattened results."""
    import time

    from ..config import load_model
    from .results import leaves

    samples = pickle.loads(Path(inputs).read_bytes())  # written by our parent just now
    start = time.perf_counter()
    model = load_model(folder)
    results = model.predict_batch(samples)
    answer = {
        "backend": model.backend_name,
        "seconds": time.perf_counter() - start,
        "torch_imported": sys.modules.get("torch") is not None,
        "results": [leaves(result) for result in results],
    }
    Path(output).write_text(json.dumps(answer))
    return 0
