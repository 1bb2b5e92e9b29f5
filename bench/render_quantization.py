"""The ``quantization`` table of docs/optimize.md, from bench/results/quantization.json
(written by bench/quantization.py). ``bench/render_docs.py`` hooks :func:`quantization`
into its ``TABLES``; run alone, this prints the block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from render_common import source

RESULT = Path(__file__).resolve().parent / "results" / "quantization.json"


def quantization() -> str:
    """INT8 static against FP32: CheXNet and ResNet-50 latency, CheXNet's decision flips."""
    data: dict[str, Any] = json.loads(RESULT.read_text(encoding="utf-8"))
    chexnet, resnet = data["chexnet"], data["resnet50"]
    cpu = data["cpu"]
    lines = [
        source("quantization.json", note=(
            f"CPU instruction sets: {', '.join(cpu['isa'])}. {data['threads']} threads for "
            f"both sides, interleaved medians (about {data['seconds_per_pair']:g} s per pair, "
            "at least 5 rounds).")),
        "",
        "| model | batch (rows) | FP32 (ms) | INT8 static (ms) | speedup | rounds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in (("CheXNet (DenseNet-121)", chexnet), ("ResNet-50", resnet)):
        for batch, timing in row.get("latency", {}).items():
            lines.append(
                f"| {name} | {batch} | {timing['fp32_ms']:.0f} | {timing['variant_ms']:.0f} "
                f"| **{timing['speedup']:.2f}×** | {timing['rounds']} |"
            )
    best = max(t["speedup"] for t in resnet["latency"].values())
    target = float(resnet["target"].split()[-1])
    lines += [
        "",
        f"ResNet-50 target ≥ {target:g}×: **{'met' if best >= target else 'not met'}** "
        f"(best {best:.2f}×; random weights, BatchNorm statistics calibrated).",
    ]
    lines += _chexnet_lines(chexnet)
    fp16 = resnet["fp16_batch1"]
    lines.append(
        f"- Float16 on this CPU (ResNet-50, batch 1): {fp16['variant_ms']:.0f} ms against "
        f"{fp16['fp32_ms']:.0f} ms FP32, **{fp16['speedup']:.2f}×**; why `fp16` is skipped "
        "on the CPU execution provider."
    )
    return "\n".join(lines)


def _chexnet_lines(chexnet: dict[str, Any]) -> list[str]:
    if "latency" not in chexnet:
        return ["", f"CheXNet INT8 static: {chexnet['status']} ({chexnet['reason']})."]
    flips = chexnet["image_flips"]
    crops = next(iter(chexnet["task"].values()))
    where = [f"{name}: {', '.join(found)}" for name, found in flips["per_image"].items() if found]
    default = chexnet["default_budgets"][0]
    s8s8 = chexnet["s8s8"]
    sizes = chexnet["sizes"]
    return [
        "",
        f"- CheXNet decisions flipped at {flips['threshold']:g} (INT8 against FP32, "
        f"{len(flips['per_image'])} images: the two NIH X-rays and four generated): "
        f"**{flips['flips']} of {flips['decisions']}** findings"
        + (f" ({'; '.join(where)})" if where else "")
        + f"; per crop (network rows) {crops['flips']} of {crops['decisions']}. Largest score "
        f"change {flips['max_abs_score_difference']:.3f}. With the default budget "
        f"(`max_flips = {default['limit']}`) the gate would "
        f"{'pass' if default['passed'] else 'refuse'} it; the bench opened that budget to time it.",
        f"- CheXNet with signed activations (S8S8) instead of U8S8, batch 1: "
        f"{s8s8['variant_ms']:.0f} ms against {s8s8['fp32_ms']:.0f} ms FP32, "
        f"**{s8s8['speedup']:.2f}×**; why INT8 static uses U8S8.",
        f"- CheXNet model.onnx: {sizes['fp32_bytes'] / 2**20:.1f} MiB FP32, "
        f"{sizes['int8_bytes'] / 2**20:.1f} MiB INT8; the whole gate (PyTorch reference, "
        f"verify, artifact stage, timing) took {chexnet['optimize_s']:.0f} s.",
    ]


if __name__ == "__main__":
    print(quantization())
