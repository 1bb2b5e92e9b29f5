"""The ``<!-- table: tensorflow -->`` block of docs/backends.md, from
bench/results/tensorflow_backend.json (written by bench/tensorflow_backend.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from render_common import source

RESULT = Path(__file__).resolve().parent / "results" / "tensorflow_backend.json"
NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime", "tensorflow": "TensorFlow"}


def tensorflow() -> str:
    """CheXNet latency per backend and batch, the ratios, conversion time and sizes."""
    d = json.loads(RESULT.read_text(encoding="utf-8"))
    median, ratios = d["median_s"], d["ratios"]
    lines = [_source(d), "",
             "| batch | PyTorch | ONNX Runtime | TensorFlow | TF / ONNX Runtime | TF / PyTorch "
             "| ONNX Runtime / PyTorch |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for batch in d["batches"]:
        cells = [_ms(median[f"{name} b{batch}"]) for name in NAMES]
        lines.append(
            f"| {batch} | " + " | ".join(cells) + f" | {ratios[f'tensorflow/onnxruntime b{batch}']:.2f} "
            f"| {ratios[f'tensorflow/pytorch b{batch}']:.2f} "
            f"| {ratios[f'onnxruntime/pytorch b{batch}']:.2f} |")
    versions = d["savedmodel_versions"]
    stages = d["parity"]["stages"]
    agree = max(d["tf_vs_onnxruntime_max_abs"].values())
    lines += ["", f"Conversion (onnx2tf {versions['onnx2tf']}, TensorFlow "
              f"{versions['tensorflow_converter']}, in its venv): **{d['conversion_s']:.0f} s** of a "
              f"{d['export_s']:.0f} s export (ONNX export, conversion, verification of both)"
              + (f"; onnx2tf's own command, left to write its TFLite files too: "
                 f"{d['onnx2tf_with_tflite_s']:.0f} s. " if "onnx2tf_with_tflite_s" in d else ". ")
              + (f"The converter's venv: {d['converter_venv']['bytes'] / 2**30:.1f} GiB, "
                 f"installed in {d['converter_venv']['created_s']:.0f} s. "
                 if d.get("converter_venv", {}).get("created_s") else "")
              + f"SavedModel {d['savedmodel_bytes'] / 2**20:.1f} MiB (ONNX graph "
              f"{d['onnx_bytes'] / 2**20:.1f} MiB). Parity {d['parity']['verdict']}: SavedModel "
              f"vs PyTorch max abs {_sci(stages['savedmodel-inference']['max_abs'])} (inference), "
              f"ONNX Runtime vs PyTorch {_sci(stages['inference']['max_abs'])}; TensorFlow vs ONNX "
              f"Runtime on the timed batches {_sci(agree)}."]
    return "\n".join(lines)


def _source(d: dict[str, Any]) -> str:
    threads = d["threads"]
    return source("tensorflow_backend.json", note=(
        f"tensorflow {d['tensorflow']}. {d['model']}; `infer` median per call, "
        f"{threads['intra_op']} intra-op threads and {threads['inter_op']} inter-op thread for "
        "every backend, each backend in a process of its own, called in turn in every round."))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _sci(value: float) -> str:
    return f"{value:.1e}"
