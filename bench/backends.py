"""Backend benchmarks for CheXNet (DenseNet-121), all ratios measured in one run.

1. OnnxModel.infer vs a bare onnxruntime.InferenceSession.run on the same array (batch 1, 8).
2. ONNX Runtime vs PyTorch eager at batch 1, same thread count.
3. Peak RSS of a fresh process predicting one X-ray: ONNX Runtime path vs PyTorch path.

Every timing sample, the medians, ratios and targets go to bench/results/backends.json.

Usage: python bench/backends.py [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
from common import (
    CHEXNET_CONFIG,
    RESULTS,
    XRAY,
    interleaved_samples,
    machine,
    medians,
    write_result,
)

# VmHWM, not ru_maxrss: ru_maxrss survives exec and would report this (big) parent's peak.
PEAK_RSS = """
import json, sys
from model_agnostic import load_model
model = load_model({config!r}, backend={backend!r})
model.predict({xray!r})
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({{"maxrss_mib": int(hwm.split()[1]) / 1024, "torch_imported": "torch" in sys.modules}}))
"""


class _Answer:
    """Stands in for the session: returns a fixed answer at once, isolating infer's own cost."""

    def __init__(self, values: list[np.ndarray]) -> None:
        self.values = values

    def run(self, names: object, feed: object) -> list[np.ndarray]:
        return self.values


def _overhead_us(model: object, session: object, array: np.ndarray, repeats: int) -> float:
    """Microseconds OnnxModel.infer adds around InferenceSession.run (checks, dict)."""
    import copy
    import time

    feed = {"image": np.ascontiguousarray(array)}
    wrapper = copy.copy(model)
    wrapper.session = _Answer(session.run(None, feed))  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(repeats):
        wrapper.infer(feed)  # type: ignore[attr-defined]
    return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch

    from model_agnostic import export_onnx, load_model

    torch.set_num_threads(args.threads)
    onnx_path = RESULTS / "chexnet.onnx"
    pytorch_model = load_model(CHEXNET_CONFIG, backend="pytorch")
    export_onnx(pytorch_model, onnx_path, XRAY)
    model = type(pytorch_model).with_backend("onnxruntime")(
        onnx_path, intra_op_num_threads=args.threads, inter_op_num_threads=1
    )
    bare = model.session  # the very same InferenceSession, called directly

    result: dict[str, object] = {
        "threads": args.threads, "repeats": args.repeats, "warmup": 3,
        "targets": {"infer_over_bare": "<= 1.03", "pytorch_over_onnxruntime": ">= 2",
                    "rss_onnxruntime_over_pytorch": "<= 0.33"}}
    print(f"Machine: {machine()}; {args.threads} threads for both runtimes\n")
    print("| measurement | batch | ours (ms) | reference (ms) | ratio | target |")
    print("|---|---|---|---|---|---|")
    crops = model.preprocessing(XRAY)
    infer_vs_bare = {}
    for batch in (1, 8):
        array = np.ascontiguousarray(crops[:batch])
        samples = interleaved_samples({
            "ours": lambda array=array: model.infer({"image": array}),
            "bare": lambda array=array: bare.run(None, {"image": array}),
        }, args.repeats)
        t = medians(samples)
        infer_vs_bare[str(batch)] = {"samples_s": samples, "median_s": t,
                                     "ratio": t["ours"] / t["bare"]}
        print(f"| OnnxModel.infer vs bare InferenceSession.run | {batch} | {t['ours']*1e3:.2f} | "
              f"{t['bare']*1e3:.2f} | {t['ours']/t['bare']:.3f} | <= 1.03 |")
    result["infer_vs_bare"] = infer_vs_bare
    overhead = _overhead_us(model, bare, crops[:1], args.repeats * 20)
    result["infer_overhead"] = {"mean_us": overhead, "calls": args.repeats * 20, "batch": 1}
    print(f"| OnnxModel.infer overhead per call (checks + dict), same session | 1 | "
          f"{overhead:.1f} µs | | | |")
    one = np.ascontiguousarray(crops[:1])
    samples = interleaved_samples({
        "onnxruntime": lambda: model.infer({"image": one}),
        "pytorch": lambda: pytorch_model.infer({"image": one}),
    }, args.repeats)
    t = medians(samples)
    result["onnxruntime_vs_pytorch"] = {"batch": 1, "samples_s": samples, "median_s": t,
                                        "pytorch_over_onnxruntime": t["pytorch"] / t["onnxruntime"]}
    print(f"| ONNX Runtime vs PyTorch eager (DenseNet-121) | 1 | {t['onnxruntime']*1e3:.2f} | "
          f"{t['pytorch']*1e3:.2f} | {t['pytorch']/t['onnxruntime']:.2f}x faster | >= 2x |")

    config = RESULTS / "config.toml"
    config.write_text(
        f'[model]\nclass = "{(CHEXNET_CONFIG.parent / "model.py").as_posix()}:CheXNet"\n'
        f'[onnxruntime]\npath = "{onnx_path.as_posix()}"\n'
    )
    rss = {}
    for backend in ("onnxruntime", "pytorch"):
        code = PEAK_RSS.format(config=str(config), backend=backend, xray=str(XRAY))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        rss[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = rss["onnxruntime"]["maxrss_mib"] / rss["pytorch"]["maxrss_mib"]
    print(f"| peak RSS, fresh process, one X-ray (TenCrop) | 10 crops | "
          f"{rss['onnxruntime']['maxrss_mib']:.0f} MiB | {rss['pytorch']['maxrss_mib']:.0f} MiB | "
          f"{ratio:.2f} | <= 0.33 |")
    print(f"\ntorch imported on the ONNX Runtime path: {rss['onnxruntime']['torch_imported']}")
    result["peak_rss"] = {**rss, "crops": len(crops), "onnxruntime_over_pytorch": ratio}
    write_result("backends", result)


if __name__ == "__main__":
    main()
