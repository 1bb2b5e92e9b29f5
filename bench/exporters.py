"""TorchScript against dynamo (``torch.export``): export time and error on CheXNet.

The measurement behind the default exporter order (TorchScript first, dynamo as the
fallback; docs/export.md). CheXNet's DenseNet-121 on seeded random weights (the example
config without a checkpoint) goes through ``model_agnostic.export_onnx`` with
``exporter="torchscript"`` and ``exporter="dynamo"``, alternating, --rounds times each,
each export in a fresh process, as ``model-agnostic export`` runs it (so each pays its
exporter's first-use cost, imports included). Timed: the ``export_onnx(..., check=False)``
call alone (``export_s``) and the whole child process (``process_s``). The error is
measured apart, as the max abs difference between ONNX Runtime on the written file and
PyTorch on the sample X-ray's ten crops. The exporter that really wrote each file is read
back from its metadata, so a silent fallback would show. Results:
bench/results/exporters.json.

Usage: python bench/exporters.py [--rounds 3] [--opset 18] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import CHEXNET_CONFIG, ROOT, XRAY, machine, write_result

EXPORTERS = ("torchscript", "dynamo")


def max_abs_error(path: Path, crops: np.ndarray, expected: np.ndarray, threads: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: crops})[0]
    return float(np.abs(got.astype(np.float64) - expected).max())


def written_by(path: Path) -> dict[str, Any]:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {
        "exporter": meta.get("model_agnostic.exporter"),
        "opset": meta.get("model_agnostic.opset"),
        "fallbacks": json.loads(meta.get("model_agnostic.fallbacks", "[]")),
    }


def worker(exporter: str, path: Path, opset: int, threads: int) -> None:
    """One export in this (fresh) process; prints one JSON line."""
    import logging

    import torch

    from model_agnostic import export_onnx, load_model

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(threads)
    model = load_model(CHEXNET_CONFIG, backend="pytorch")
    crops = np.ascontiguousarray(model.preprocessing(XRAY))
    start = time.perf_counter()
    export_onnx(model, path, XRAY, opset=opset, exporter=exporter, check=False)
    seconds = time.perf_counter() - start
    expected = model.infer({"image": crops})["probabilities"].astype(np.float64)
    print(
        json.dumps(
            {
                "export_s": seconds,
                **written_by(path),
                "max_abs_error": max_abs_error(path, crops, expected, threads),
                "weights": str(getattr(model, "weights_source", "unknown")),
                "crops": len(crops),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--opset", type=int, default=18, help="CheXNet's config uses 18")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--worker", choices=EXPORTERS, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.output, args.opset, args.threads)
        return
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in EXPORTERS}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            for name in EXPORTERS:
                path = Path(scratch) / f"{name}-{index}.onnx"
                start = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        name,
                        "--output",
                        str(path),
                        "--opset",
                        str(args.opset),
                        "--threads",
                        str(args.threads),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=1800,
                )
                process_s = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(
                        f"{name} export failed ({done.returncode}):\n{done.stderr[-2000:]}"
                    )
                run = json.loads(done.stdout.strip().splitlines()[-1])
                runs[name].append({**run, "process_s": process_s})
                print(
                    f"round {index + 1} {name}: export {run['export_s']:.1f} s (process "
                    f"{process_s:.1f} s), written by {run['exporter']}, max abs error "
                    f"{run['max_abs_error']:.1e}",
                    flush=True,
                )
    median = {name: statistics.median(r["export_s"] for r in rs) for name, rs in runs.items()}
    print(f"\nMachine: {machine()}; {args.threads} threads, opset {args.opset}\n")
    print("| exporter | median export (s) | runs (s) | max abs error vs PyTorch | written by |")
    print("|---|---:|---|---:|---|")
    for name, rs in runs.items():
        seconds = ", ".join(f"{r['export_s']:.1f}" for r in rs)
        writers = ", ".join(sorted({str(r["exporter"]) for r in rs}))
        print(
            f"| {name} | {median[name]:.1f} | {seconds} | "
            f"{max(r['max_abs_error'] for r in rs):.1e} | {writers} |"
        )
    print(f"\ndynamo / TorchScript: {median['dynamo'] / median['torchscript']:.1f}x")
    first = runs[EXPORTERS[0]][0]
    write_result(
        "exporters",
        {
            "config": CHEXNET_CONFIG.relative_to(ROOT).as_posix(),
            "example": XRAY.name,
            "weights": first["weights"],
            "threads": args.threads,
            "opset": args.opset,
            "rounds": args.rounds,
            "crops": first["crops"],
            "fresh_process_each": True,
            "runs": runs,
            "median_export_s": median,
            "dynamo_over_torchscript": median["dynamo"] / median["torchscript"],
            "all_written_by_requested": all(
                r["exporter"] == name for name, rs in runs.items() for r in rs
            ),
        },
    )


if __name__ == "__main__":
    main()
