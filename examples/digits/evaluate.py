"""Classify the shipped test split with the shipped artifact on ONNX Runtime, without torch.

By default ``import torch`` is made to fail in this process before model_agnostic is
imported, so a run that finishes proves the deployed path needs no PyTorch.
``--compare-pytorch`` also runs the PyTorch model from config.toml (so torch must
import then); the ONNX Runtime pass still runs first and the script checks torch
was not imported by it.

    python examples/digits/evaluate.py                    # ONNX Runtime only, torch blocked
    python examples/digits/evaluate.py --compare-pytorch  # both backends, same predictions?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BLOCKED = ("torch", "torchvision", "onnxscript", "safetensors")


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The test split train.py saved: X (n, 8, 8) pixel values 0..16 and y (n,) digits."""
    with np.load(path) as data:  # allow_pickle stays False
        return data["X"], data["y"]


def predict_digits(model: Any, images: np.ndarray) -> np.ndarray:
    """The predicted digit of every image, in one backend call."""
    return np.array([result["digit"] for result in model.predict_batch(list(images))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", default=HERE / "artifact", type=Path,
                        help="artifact folder (or .zip) to evaluate (default: %(default)s)")
    parser.add_argument("--test-split", default=HERE / "test_split.npz", type=Path,
                        help="test split saved by train.py (default: %(default)s)")
    parser.add_argument("--compare-pytorch", action="store_true",
                        help="also run the PyTorch model from --config and compare predictions "
                        "(needs torch; without this flag torch is blocked)")
    parser.add_argument("--config", default=HERE / "config.toml", type=Path,
                        help="config whose [pytorch] weights --compare-pytorch uses "
                        "(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    if not args.compare_pytorch:  # from here on, `import torch` raises ImportError
        for name in BLOCKED:
            sys.modules[name] = None  # type: ignore[assignment]
    from model_agnostic import ModelAgnosticError, load_model

    try:
        return _evaluate(args, load_model)
    except (ModelAgnosticError, OSError) as exc:  # tampered artifact, missing file, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _evaluate(args: argparse.Namespace, load_model: Any) -> int:
    images, digits = load_split(args.test_split)
    start = time.perf_counter()
    onnx_model = load_model(args.artifact)  # verifies every checksum first
    onnx_pred = predict_digits(onnx_model, images)
    summary: dict[str, Any] = {
        "test_images": len(digits),
        "onnxruntime": _scores(onnx_pred, digits, time.perf_counter() - start),
        "torch_imported": sys.modules.get("torch") is not None,
        "torch_blocked": not args.compare_pytorch,
    }
    if summary["torch_imported"]:
        print("error: the ONNX Runtime path imported torch", file=sys.stderr)
        return 1
    failed = False
    if args.compare_pytorch:
        start = time.perf_counter()
        torch_model = load_model(args.config, backend="pytorch")
        torch_pred = predict_digits(torch_model, images)
        summary["pytorch"] = _scores(torch_pred, digits, time.perf_counter() - start)
        summary["differing_predictions"] = int(np.sum(torch_pred != onnx_pred))
        failed = summary["differing_predictions"] > 0
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"test split: {summary['test_images']} images ({args.test_split})")
        for backend in ("onnxruntime", "pytorch"):
            if backend in summary:
                s = summary[backend]
                print(f"{backend:<12} accuracy {s['accuracy']:.4f} "
                      f"({s['correct']}/{s['total']})  in {s['seconds']:.2f} s")
        print("torch: " + ("blocked, never imported" if summary["torch_blocked"]
                           else "not imported by the ONNX Runtime pass"))
        if args.compare_pytorch:
            differ = summary["differing_predictions"]
            print(f"differing predictions PyTorch vs ONNX Runtime: {differ}")
    return 1 if failed else 0


def _scores(predicted: np.ndarray, digits: np.ndarray, seconds: float) -> dict[str, Any]:
    correct = int(np.sum(predicted == digits))
    return {"accuracy": correct / len(digits), "correct": correct, "total": len(digits),
            "seconds": round(seconds, 3)}


if __name__ == "__main__":
    sys.exit(main())
