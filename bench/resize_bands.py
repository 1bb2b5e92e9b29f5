"""What banding a resize over threads gains or costs, by size: the numbers behind
``MIN_COST`` in ``model_agnostic/transforms/_resize.py`` (docs/transforms.md).

For each case (the sample X-ray converted to the mode and resized to the source size
once, outside the timed region; bilinear, as ``Resize`` uses), ``Image.resize`` in one call
against the banded resize over --threads threads (``_resize.banded`` with the plan
``band_plan`` makes, the ``MIN_COST`` floor lifted so small cases band too), interleaved,
median of --repeats; the outputs are checked byte for byte. Also: the single call's time
per unit of ``_resize._cost``, scaled to ``MIN_COST`` (what the floor is worth in
one-core milliseconds), and the time of the one-off pass-order probe. Every sample goes
to bench/results/resize_bands.json.

Usage: python bench/resize_bands.py [--threads 2] [--repeats 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import ROOT, XRAY, interleaved_samples, machine, medians, write_result
from PIL import Image

sys.path.insert(0, str(ROOT))
from model_agnostic.transforms import _resize

#: (mode, source side, output side); squares, like the resizes Resize(256) makes.
CASES = (("RGB", 1024, 256), ("L", 1024, 256), ("RGB", 512, 256), ("L", 256, 128), ("L", 128, 64))
BILINEAR = Image.Resampling.BILINEAR


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    xray = Image.open(XRAY)
    xray.load()
    rows = []
    for mode, side, out in CASES:
        img = xray.convert(mode).resize((side, side), BILINEAR)
        img.load()
        size = (out, out)
        floor, _resize.MIN_COST = _resize.MIN_COST, 0
        try:
            plan = _resize.band_plan(img, size, BILINEAR, args.threads)
        finally:
            _resize.MIN_COST = floor
        if plan is None:
            raise SystemExit(f"{mode} {side}->{out}: no exact band plan")
        identical = (
            _resize.banded(img, size, BILINEAR, *plan).tobytes()
            == img.resize(size, BILINEAR).tobytes()
        )
        samples = interleaved_samples(
            {
                "single": lambda img=img, size=size: img.resize(size, BILINEAR),
                "banded": lambda img=img, size=size, plan=plan: _resize.banded(
                    img, size, BILINEAR, *plan
                ),
            },
            args.repeats,
            warmup=5,
        )
        median = medians(samples)
        cost = _resize._cost(img, size, BILINEAR)
        rows.append(
            {
                "mode": mode,
                "source": side,
                "output": out,
                "axis": plan[0],
                "bands": len(plan[1]) - 1,
                "identical": identical,
                "cost": cost,
                "above_min_cost": cost >= floor,
                "samples_s": samples,
                "median_s": median,
                "banded_over_single": median["banded"] / median["single"],
                "single_ms_per_min_cost": median["single"] / cost * floor * 1e3,
            }
        )
    probe = []
    for _ in range(max(5, args.repeats // 10)):
        start = time.perf_counter()
        _resize._pass_order.__wrapped__()
        probe.append(time.perf_counter() - start)
    print(f"Machine: {machine()}; {args.threads} threads, median of {args.repeats}\n")
    print(
        "| resize | bands | single call (ms) | banded (ms) | banded / single | cost / MIN_COST "
        "| identical |"
    )
    print("|---|---|---:|---:|---:|---:|:-:|")
    for r in rows:
        print(
            f"| {r['mode']} {r['source']}² -> {r['output']}² | {r['bands']} {r['axis']} | "
            f"{r['median_s']['single'] * 1e3:.3f} | {r['median_s']['banded'] * 1e3:.3f} | "
            f"{r['banded_over_single']:.2f} | {r['cost'] / _resize.MIN_COST:.2f} | "
            f"{r['identical']} |"
        )
    per_floor = statistics.median(r["single_ms_per_min_cost"] for r in rows)
    print(
        f"\nMIN_COST ({_resize.MIN_COST:,}) is {per_floor:.2f} ms of one single call "
        f"(median over the cases); the pass-order probe takes "
        f"{statistics.median(probe) * 1e3:.2f} ms once per process"
    )
    write_result(
        "resize_bands",
        {
            "threads": args.threads,
            "repeats": args.repeats,
            "filter": "bilinear",
            "min_cost": _resize.MIN_COST,
            "cases": rows,
            "min_cost_single_ms": per_floor,
            "pass_order_probe": {"samples_s": probe, "median_s": statistics.median(probe)},
        },
    )


if __name__ == "__main__":
    main()
