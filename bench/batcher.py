"""What ``Batcher.infer`` adds over calling the model directly (docs/serving.md).

One client, ``max_queue_delay_ms=0``, a trivial identity model on a 1x3x8x8 float32
array: ``Batcher.infer`` (one thread hand-off each way through a ``threading.Condition``
and a ``Future``) against the same ``infer`` function called directly, interleaved,
--repeats calls each. Every sample goes to bench/results/batcher.json.

Usage: python bench/batcher.py [--repeats 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
from common import ROOT, interleaved_samples, machine, medians, write_result

sys.path.insert(0, str(ROOT))
from model_agnostic.serving.batching import Batcher


def identity(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5000)
    args = parser.parse_args()
    inputs = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    batcher = Batcher(identity, max_batch_size=8, max_queue_delay_ms=0, name="bench")
    try:
        samples = interleaved_samples(
            {"direct": lambda: identity(inputs), "batcher": lambda: batcher.infer(inputs)},
            args.repeats,
            warmup=100,
        )
    finally:
        batcher.close()
    median = medians(samples)
    added = median["batcher"] - median["direct"]
    print(f"Machine: {machine()}; median of {args.repeats} interleaved calls")
    print(
        f"direct infer {median['direct'] * 1e6:.1f} µs, Batcher.infer "
        f"{median['batcher'] * 1e6:.1f} µs: Batcher adds {added * 1e6:.1f} µs "
        f"(p90 of Batcher.infer {statistics.quantiles(samples['batcher'], n=10)[-1] * 1e6:.1f} µs)"
    )
    write_result(
        "batcher",
        {
            "repeats": args.repeats,
            "max_queue_delay_ms": 0,
            "input_shape": [1, 3, 8, 8],
            "samples_us": {k: [round(v * 1e6, 2) for v in vs] for k, vs in samples.items()},
            "median_us": {k: v * 1e6 for k, v in median.items()},
            "added_us": added * 1e6,
        },
    )


if __name__ == "__main__":
    main()
