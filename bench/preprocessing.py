"""CheXNet preprocessing: torchvision vs model_agnostic.transforms, measured in one run.

(a) torchvision, canonical order: Resize(256) -> TenCrop(224) -> stack(ToTensor) -> stack(Normalize)
(b) model_agnostic.transforms, the same order and the same Lambdas (np.stack for torch.stack)
(c) model_agnostic.transforms fast path: Resize(256) -> ToTensor -> Normalize -> TenCrop(224)
    -> Lambda(np.stack): converts and normalises one 256x256 image instead of ten 224x224 crops
plus the resize alone, the step every variant starts with: PIL's ``Image.resize`` (what
torchvision calls) and ours (``functional.resize``: the same pixels, computed in bands on
MODEL_AGNOSTIC_RESIZE_THREADS threads, see docs/transforms.md).

The input is the sample X-ray (512x512 grayscale), opened and converted to RGB once, outside the
timed region. Calls are interleaved round-robin; each figure is the median of --repeats.
Every sample, the medians, ratios and the target go to bench/results/preprocessing.json.

Usage: python bench/preprocessing.py [--threads N] [--resize-threads N] [--repeats N] [--warmup N]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from common import XRAY, interleaved_samples, machine, medians, write_result
from PIL import Image

from model_agnostic import transforms as M
from model_agnostic.transforms import _resize

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
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads (default: usable CPUs)")
    parser.add_argument("--resize-threads", type=int, default=None,
                        help=f"sets ${_resize.ENV_THREADS} (default: as set, else "
                             f"min(CPUs, {_resize.MAX_THREADS}))")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if args.resize_threads is not None:
        os.environ[_resize.ENV_THREADS] = str(args.resize_threads)

    import torch
    import torchvision.transforms as tv

    torch.set_num_threads(args.threads)
    image = Image.open(XRAY).convert("RGB")
    runs = pipelines(torch, tv)
    pil_name, ours_name = "PIL resize alone (Image.resize, bilinear)", "our resize alone"
    fns: dict[str, Callable[[], object]] = {name: partial(f, image) for name, f in runs.items()}
    fns[pil_name] = lambda: image.resize((256, 256), Image.Resampling.BILINEAR)
    fns[ours_name] = lambda: M.functional.resize(image, 256)
    # Run order: after (a) torch's OpenMP workers keep spinning on a core for a few ms. The
    # one-threaded PIL resize, which they cannot slow down, runs next; every threaded variant
    # then runs later, as it would in a process without torch.
    run_order = [*list(runs)[:1], pil_name, *list(runs)[1:], ours_name]
    samples = interleaved_samples({name: fns[name] for name in run_order}, repeats=args.repeats,
                                  warmup=args.warmup)
    report(image, runs, {name: samples[name] for name in fns}, args, (pil_name, ours_name))


def report(image: Image.Image, runs: dict[str, Callable[[Image.Image], Any]],
           samples: dict[str, list[float]], args: argparse.Namespace,
           resize_names: tuple[str, str]) -> None:
    times = medians(samples)
    outputs = {name: np.asarray(f(image)) for name, f in runs.items()}
    reference_name = next(iter(runs))
    reference, base = outputs[reference_name], times[reference_name]
    resize_threads = _resize.resize_threads()
    plan = _resize.band_plan(image, (256, 256), Image.Resampling.BILINEAR, resize_threads)
    same_resize = M.functional.resize(image, 256).tobytes() == image.resize(
        (256, 256), Image.Resampling.BILINEAR).tobytes()
    print(f"Machine: {machine()}; torch threads {args.threads}; resize threads {resize_threads}")
    print(f"Input: {XRAY.name} {image.size[0]}x{image.size[1]} RGB; output "
          f"{tuple(reference.shape)} {reference.dtype}; median of {args.repeats} runs; our "
          f"resize: {f'{len(plan[1]) - 1} bands of {plan[0]}' if plan else 'one call'}\n")
    print("| pipeline | median (ms) | ratio to (a) | max abs diff vs (a) |")
    print("|---|---|---|---|")
    rows = []
    for name, seconds in times.items():
        max_abs = float(np.abs(outputs[name] - reference).max()) if name in outputs else None
        diff = f"{max_abs:.1e}" if max_abs is not None else (
            "" if name == resize_names[0] else f"pixels equal to PIL's: {same_resize}")
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / base:.2f} | {diff} |")
        rows.append({"name": name, "samples_s": samples[name], "median_s": seconds,
                     "ratio_to_a": seconds / base, "max_abs_diff_vs_a": max_abs})
    fast = times["(c) model_agnostic, fast path"] / base
    pil, ours = (times[name] / base for name in resize_names)
    exact = max(np.abs(outputs[n] - reference).max() for n in outputs) <= 1e-6 and same_resize
    print(f"\n(c)/(a) = {fast:.2f} (target <= 0.50: {'met' if fast <= 0.5 else 'not met'}); "
          f"PIL's resize alone is {pil:.2f} of (a), ours {ours:.2f} ({ours / pil:.2f} of PIL's); "
          f"all outputs within 1e-6 of (a) and resize pixels identical: {exact}")
    write_result("preprocessing", {
        "torch_threads": args.threads, "resize_threads": resize_threads,
        "repeats": args.repeats, "warmup": args.warmup,
        "input": {"file": XRAY.name, "size": list(image.size), "mode": image.mode},
        "output": {"shape": list(reference.shape), "dtype": str(reference.dtype)},
        "our_resize_plan": {"axis": plan[0], "bands": len(plan[1]) - 1, "cuts": plan[1]}
        if plan else None,
        "rows": rows, "resize_pixels_equal": same_resize,
        "fast_over_torchvision": fast, "pil_resize_over_torchvision": pil,
        "our_resize_over_torchvision": ours, "our_resize_over_pil_resize": ours / pil,
        "all_within_1e-6_and_resize_identical": bool(exact),
        "target": {"fast_over_torchvision": "<= 0.50", "met": bool(fast <= 0.5)}})


if __name__ == "__main__":
    main()
