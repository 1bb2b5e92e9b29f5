"""Cold start: a fresh process from nothing to its first CheXNet prediction.

Compares the torch-free artifact on ONNX Runtime with the PyTorch path (config,
random weights), interleaved, several runs each, median wall time of the whole
process (interpreter start, imports, model load, first predict). Exports the
artifact first if it is missing. Every run's time, the medians and the ratio go to
bench/results/cold_start.json.

Usage: python bench/cold_start.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CHEXNET_CONFIG, ROOT, XRAY, machine, write_result

ARTIFACT = CHEXNET_CONFIG.parent / "artifacts" / "chexnet"
PREDICT = (
    "from model_agnostic import load_model\n"
    "load_model({source!r}, backend={backend!r}).predict({xray!r})\n"
)


def run(source: str, backend: str) -> float:
    code = PREDICT.format(source=source, backend=backend, xray=str(XRAY))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (ARTIFACT / "model.onnx").is_file():
        subprocess.run([sys.executable, "-m", "model_agnostic", "export", "--config", str(CHEXNET_CONFIG),
                        "--force"], check=True, cwd=ROOT)
    paths = {"artifact on ONNX Runtime": (str(ARTIFACT), "onnxruntime"),
             "PyTorch (config)": (str(CHEXNET_CONFIG), "pytorch")}
    times: dict[str, list[float]] = {name: [] for name in paths}
    run(*paths["artifact on ONNX Runtime"])  # warm the OS file cache for both
    run(*paths["PyTorch (config)"])
    for _ in range(args.repeats):
        for name, (source, backend) in paths.items():
            times[name].append(run(source, backend))
    onnx, torch = (statistics.median(times[n]) for n in paths)
    print(f"Machine: {machine()}\n")
    print("| path | median s (process start to first prediction) | runs |")
    print("|---|---|---|")
    for name in paths:
        print(f"| {name} | {statistics.median(times[name]):.2f} | {', '.join(f'{t:.2f}' for t in times[name])} |")
    print(f"\nratio ONNX Runtime / PyTorch: {onnx / torch:.3f} (target <= 0.2)")
    write_result("cold_start", {
        "repeats": args.repeats,
        "paths": {backend: {"label": name, "source": str(Path(source).relative_to(ROOT)),
                            "samples_s": times[name], "median_s": statistics.median(times[name])}
                  for name, (source, backend) in paths.items()},
        "onnxruntime_over_pytorch": onnx / torch,
        "target": {"onnxruntime_over_pytorch": "<= 0.2", "met": onnx / torch <= 0.2}})


if __name__ == "__main__":
    main()
