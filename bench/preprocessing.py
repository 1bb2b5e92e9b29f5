"""CheXNet preprocessing: torchvision vs model_agnostic.transforms, measured in one run.

(a) torchvision, canonical order: Resize(256) -> TenCrop(224) -> stack(ToTensor) -> stack(Normalize)
(b) model_agnostic.transforms, the same order and the same Lambdas (np.stack for torch.stack)
(c) model_agnostic.transforms fast path: Resize(256) -> ToTensor -> Normalize -> TenCrop(224)
    -> Lambda(np.stack): converts and normalises one 256x256 image instead of ten 224x224 crops
plus PIL's resize alone, the step every variant shares and a floor for all of them.

The input is the sample X-ray (1024x1024), opened and converted to RGB once, outside the
timed region. Calls are interleaved round-robin; each figure is the median of --repeats.

Usage: python bench/preprocessing.py [--threads N] [--repeats N] [--warmup N]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from common import XRAY, interleaved, machine
from PIL import Image

from model_agnostic import transforms as M

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def pipelines(torch: Any, tv: Any) -> dict[str, Callable[[Image.Image], Any]]:
    """The three pipelines, keyed by their row label."""
    tv_to_tensor, tv_norm = tv.ToTensor(), tv.Normalize(MEAN, STD)
    torchvision_order = tv.Compose([
        tv.Resize(256), tv.TenCrop(224),
        tv.Lambda(lambda crops: torch.stack([tv_to_tensor(crop) for crop in crops])),
        tv.Lambda(lambda crops: torch.stack([tv_norm(crop) for crop in crops])),
    ])
    to_tensor, norm = M.ToTensor(), M.Normalize(MEAN, STD)
    ours_same_order = M.Compose([
        M.Resize(256), M.TenCrop(224),
        M.Lambda(lambda crops: np.stack([to_tensor(crop) for crop in crops])),
        M.Lambda(lambda crops: np.stack([norm(crop) for crop in crops])),
    ])
    ours_fast = M.Compose([
        M.Resize(256), M.ToTensor(), M.Normalize(MEAN, STD), M.TenCrop(224), M.Lambda(np.stack),
    ])
    return {
        "(a) torchvision, canonical order": lambda img: torchvision_order(img).numpy(),
        "(b) model_agnostic, torchvision order": ours_same_order,
        "(c) model_agnostic, fast path": ours_fast,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    import torch
    import torchvision.transforms as tv

    torch.set_num_threads(args.threads)
    image = Image.open(XRAY).convert("RGB")
    runs = pipelines(torch, tv)
    fns: dict[str, Callable[[], object]] = {name: partial(f, image) for name, f in runs.items()}
    fns["PIL resize alone (1024x1024 -> 256x256, bilinear)"] = lambda: image.resize(
        (256, 256), Image.Resampling.BILINEAR)
    times = interleaved(fns, repeats=args.repeats, warmup=args.warmup)

    outputs = {name: np.asarray(f(image)) for name, f in runs.items()}
    reference_name = next(iter(runs))
    reference, base = outputs[reference_name], times[reference_name]
    print(f"Machine: {machine()}; torch threads {args.threads}")
    print(f"Input: {XRAY.name} {image.size[0]}x{image.size[1]} RGB; output "
          f"{tuple(reference.shape)} {reference.dtype}; median of {args.repeats} runs\n")
    print("| pipeline | median (ms) | ratio to (a) | max abs diff vs (a) |")
    print("|---|---|---|---|")
    for name, seconds in times.items():
        diff = (f"{np.abs(outputs[name] - reference).max():.1e}" if name in outputs else "")
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / base:.2f} | {diff} |")
    fast = times["(c) model_agnostic, fast path"] / base
    floor = times["PIL resize alone (1024x1024 -> 256x256, bilinear)"] / base
    exact = max(np.abs(outputs[n] - reference).max() for n in outputs) <= 1e-6
    print(f"\n(c)/(a) = {fast:.2f} (target <= 0.50: {'met' if fast <= 0.5 else 'not met'}); "
          f"PIL resize alone is {floor:.2f} of (a), a floor for any exact pipeline; "
          f"all outputs within 1e-6 of (a): {exact}")


if __name__ == "__main__":
    main()
