"""INT8 static quantisation against FP32 on this CPU: CheXNet and ResNet-50.

1. CheXNet (DenseNet-121, the example config's seeded random weights): the artifact goes
   through ``optimize_artifact`` (INT8 static, QDQ, U8S8, per-channel weights) calibrated
   on the two RSNA DICOMs of examples/chexnet/data and two generated images, gated against
   the PyTorch reference on the sample X-rays and generated images. The flip budget is
   opened (``max_flips`` huge) so the variant is written and can be timed; what the
   default budgets would have decided is recorded beside it. Then FP32 against INT8 at
   batch 1 and 8 (crops of the sample X-ray), interleaved medians, the same threads;
   decisions flipped at 0.5 per image (results, 14 findings) and per crop (network rows);
   and the S8S8 form (signed activations) at batch 1, the measurement behind U8S8.
2. ResNet-50 (torchvision, random weights, BatchNorm statistics calibrated as
   bench/export_coverage.py --calibrate does): exported, quantised by the same builder on
   eight generated images, timed at batch 1 and 8 (target: >= 1.5x); and its float16
   form on the CPU, the measurement behind skipping fp16 there.

The CPU's model and instruction-set flags (/proc/cpuinfo) are recorded: INT8 speed
depends on them (AVX2, AVX-512 VNNI, AMX). Results: bench/results/quantization.json.

Usage: python bench/quantization.py [--threads 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CHEXNET_CONFIG, XRAY, write_result
from serving import ARTIFACT, ensure_artifact

DATA = CHEXNET_CONFIG.parent / "data"
SEED = 0
THRESHOLD = 0.5


def timed_pair(fp32: Path, variant: Path, batch: dict[str, np.ndarray], threads: int,
               seconds: float) -> dict[str, Any]:
    """FP32 against the variant on ``batch``, interleaved (optimize's own timer)."""
    from model_agnostic.backends.onnx_runtime import OnnxModel
    from model_agnostic.export.optimize import measure_speedup

    settings = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    first, second = OnnxModel(fp32, **settings), OnnxModel(variant, **settings)
    speed = measure_speedup(first, second, batch, seconds=seconds, min_rounds=5)
    return {**speed, "fp32_ms": speed["fp32_s"] * 1e3, "variant_ms": speed["variant_s"] * 1e3}


def image_flips(fp32: Any, int8: Any, samples: list[Any], names: list[str]) -> dict[str, Any]:
    """Findings whose decision at 0.5 differs between the two artifacts, per image."""
    from model_agnostic.evaluate import scores_of

    labels = list(fp32.labels)
    want = np.array([scores_of(r, labels) for r in fp32.predict_batch(samples)])
    got = np.array([scores_of(r, labels) for r in int8.predict_batch(samples)])
    flipped = (want >= THRESHOLD) != (got >= THRESHOLD)
    return {
        "threshold": THRESHOLD,
        "decisions": int(flipped.size),
        "flips": int(flipped.sum()),
        "per_image": {name: [labels[i] for i in np.flatnonzero(row)]
                      for name, row in zip(names, flipped)},
        "max_abs_score_difference": float(np.abs(want - got).max()),
    }


def chexnet(threads: int, seconds: float, scratch: Path) -> dict[str, Any]:
    from model_agnostic import load_model
    from model_agnostic.export.optimize import Budgets, optimize_artifact
    from model_agnostic.export.optimize.budgets import check_budgets
    from model_agnostic.export.pipeline import generated_images

    ensure_artifact()
    calibration = sorted(DATA.glob("*.dcm")) + generated_images(2, seed=SEED + 1)
    output = scratch / "chexnet-int8-static"
    start = time.perf_counter()
    (result,) = optimize_artifact(
        CHEXNET_CONFIG, output=output, variants=["int8-static"], calibration=calibration,
        allow_slower=True, max_flips=10**9, speed_seconds=3.0,
        progress=lambda m: print(f"  chexnet: {m}", file=sys.stderr, flush=True),
    )
    optimize_s = time.perf_counter() - start
    report = result.report
    row: dict[str, Any] = {
        "status": result.status,
        "reason": result.reason,
        "optimize_s": optimize_s,
        "calibration": [p.name if isinstance(p, Path) else "generated image" for p in calibration],
        "verdict": report.verdict if report else None,
        "samples": report.samples if report else [],
        "task": report.task if report else {},
        "elementwise": {s.stage: {"max_abs": s.max_abs, "max_rel": s.max_rel}
                        for s in result.elementwise},
        "default_budgets": [c.to_dict() for c in check_budgets(report.task, Budgets())]
        if report else [],
        "speed_in_optimize": {k: v for k, v in (result.speed or {}).items() if k != "samples_s"},
    }
    if result.artifact is None:
        row["layers"] = [layer.to_dict() for layer in result.layers[:10]]
        return row
    row["sizes"] = {"fp32_bytes": (ARTIFACT / "model.onnx").stat().st_size,
                    "int8_bytes": (result.artifact / "model.onnx").stat().st_size}
    fp32_model, int8_model = load_model(ARTIFACT), load_model(result.artifact)
    crops = fp32_model.prepare(XRAY)["image"]
    row["latency"] = {
        str(rows): timed_pair(ARTIFACT / "model.onnx", result.artifact / "model.onnx",
                              {"image": np.ascontiguousarray(crops[:rows])}, threads, seconds)
        for rows in (1, 8)
    }
    names = [XRAY.name, "nih_cxr14_00027426_000.png", *(f"generated image {i}" for i in range(4))]
    samples = [XRAY, DATA / names[1], *generated_images(4)]
    row["image_flips"] = image_flips(fp32_model, int8_model, samples, names)
    row["s8s8"] = s8s8(threads, seconds, calibration, scratch, crops[:1])
    return row


def s8s8(threads: int, seconds: float, calibration: list[Any], scratch: Path,
         crop: np.ndarray) -> dict[str, Any]:
    """CheXNet INT8 with signed activations (S8S8) at batch 1, against FP32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    from model_agnostic import load_model
    from model_agnostic.export.optimize.variants import prepare_for_quantization

    model = load_model(ARTIFACT)
    batches = iter([model.prepare(raw) for raw in calibration])

    class Reader(CalibrationDataReader):
        def get_next(self) -> Any:
            return next(batches, None)

    prepared, target = scratch / "chexnet-prepared.onnx", scratch / "chexnet-s8s8.onnx"
    prepare_for_quantization(ARTIFACT / "model.onnx", prepared)
    logging.disable(logging.WARNING)  # the quantizer's per-tensor notes
    try:
        quantize_static(str(prepared), str(target), Reader(), per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return timed_pair(ARTIFACT / "model.onnx", target, {"image": np.ascontiguousarray(crop)},
                      threads, seconds)


def resnet50(threads: int, seconds: float, scratch: Path) -> dict[str, Any]:
    import torch
    import torchvision
    from coverage_model import calibrate

    from model_agnostic import transforms as T
    from model_agnostic.export.optimize.variants import build_variant, prepare_for_quantization
    from model_agnostic.export.pipeline import generated_images

    torch.manual_seed(SEED)
    network = torchvision.models.resnet50(weights=None)
    calibrate(torch, network, 224)
    fp32 = scratch / "resnet50.onnx"
    torch.onnx.export(network, torch.randn(1, 3, 224, 224), str(fp32), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}},
                      opset_version=18, dynamo=False)
    pipeline = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images = [pipeline(img.convert("RGB"))[None] for img in generated_images(16, seed=SEED + 2)]
    calibration = [{"image": image} for image in images[:8]]
    prepared, int8, fp16 = (scratch / f"resnet50-{n}.onnx" for n in ("prepared", "int8", "fp16"))
    prepare_for_quantization(fp32, prepared)
    start = time.perf_counter()
    build = build_variant("int8-static", prepared, int8, session={}, calibration=calibration)
    quantize_s = time.perf_counter() - start
    build_variant("fp16", fp32, fp16, session={})
    latency = {str(rows): timed_pair(fp32, int8, {"image": np.concatenate(images[:rows])},
                                     threads, seconds) for rows in (1, 8)}
    agreement = top1_agreement(fp32, int8, np.concatenate(images[8:]))
    return {
        "weights": f"random (seed {SEED}), BatchNorm statistics calibrated",
        "build": build,
        "quantize_s": quantize_s,
        "latency": latency,
        "target": ">= 1.5",
        "top1_agreement_generated": agreement,
        "fp16_batch1": timed_pair(fp32, fp16, {"image": images[0]}, threads, seconds),
    }


def top1_agreement(fp32: Path, int8: Path, batch: np.ndarray) -> dict[str, int]:
    import onnxruntime as ort

    answers = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
               .run(None, {"image": batch})[0].argmax(1) for p in (fp32, int8)]
    return {"rows": len(batch), "agree": int(np.sum(answers[0] == answers[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="timing budget per FP32/INT8 pair (at least 5 rounds each)")
    args = parser.parse_args()
    from model_agnostic.export.optimize import cpu_info

    with tempfile.TemporaryDirectory(prefix="bench-quantization-") as scratch:
        folder = Path(scratch)
        data = {
            "cpu": cpu_info(),
            "threads": args.threads,
            "seconds_per_pair": args.seconds,
            "chexnet": chexnet(args.threads, args.seconds, folder),
            "resnet50": resnet50(args.threads, args.seconds, folder),
        }
    write_result("quantization", data)


if __name__ == "__main__":
    main()
