"""Thread interference: why the server keeps one 2-thread ONNX Runtime session.

On a 2-core machine, what does a Python thread taking 20% of one core (as a server's
HTTP parsing and client work would) cost ONNX Runtime? CheXNet's DenseNet-121 graph (the
artifact, exported first if missing) on preprocessed FP32 batches, four ways, interleaved
round by round:

- one session with 2 intra-op threads, alone / beside the burning thread;
- two sessions with 1 intra-op thread each, run concurrently from two Python threads,
  alone / beside the burning thread;

in images/s over --calls calls of --batch images (per session). Then the latency of one
image (batch 1) on a 2-thread session against a 1-thread one, interleaved: what a lone
request would take if the server ran two 1-thread instances instead.

The burning thread busy-loops 2 ms of every 10 ms (20% of a core) and records the CPU
time it really got. Every sample goes to bench/results/thread_interference.json.

Usage: python bench/thread_interference.py [--batch 8] [--calls 10] [--rounds 5]
                                           [--latency-repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, interleaved_samples, machine, medians, write_result
from serving import ARTIFACT, ensure_artifact

BURN_PERIOD_S, BURN_SHARE = 0.010, 0.20


def session(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(ARTIFACT / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


class Burner:
    """A Python thread busy for BURN_SHARE of every BURN_PERIOD_S while running."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.cpu_s = self.wall_s = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        while not self.stop.is_set():
            period = time.perf_counter()
            while time.perf_counter() - period < BURN_PERIOD_S * BURN_SHARE:
                pass
            time.sleep(max(0.0, BURN_PERIOD_S - (time.perf_counter() - period)))
        self.wall_s, self.cpu_s = time.perf_counter() - started, time.thread_time() - cpu

    def __enter__(self) -> Burner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def throughput(runs: list[Callable[[], object]], calls: int, batch: int) -> float:
    """Images/s of ``calls`` calls of each of ``runs``, each in its own thread, together."""
    gate = threading.Barrier(len(runs) + 1)

    def worker(run: Callable[[], object]) -> None:
        gate.wait()
        for _ in range(calls):
            run()

    threads = [threading.Thread(target=worker, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return len(runs) * calls * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8, help="images per call")
    parser.add_argument("--calls", type=int, default=10, help="calls per session per sample")
    parser.add_argument("--rounds", type=int, default=5, help="samples of each condition")
    parser.add_argument("--latency-repeats", type=int, default=20)
    args = parser.parse_args()
    ensure_artifact()
    two, ones = session(2), [session(1), session(1)]
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    image = np.ascontiguousarray(batch[:1])
    for s in (two, *ones):  # warm up
        s.run(None, {"image": batch})

    def run_on(s: Any, array: np.ndarray) -> Callable[[], object]:
        return lambda: s.run(None, {"image": array})

    layouts = {
        "one 2-thread session": [run_on(two, batch)],
        "two 1-thread sessions": [run_on(s, batch) for s in ones],
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {"alone": [], "burning": []} for name in layouts
    }
    burned = []
    for _ in range(args.rounds):
        for name, runs in layouts.items():
            samples[name]["alone"].append(throughput(runs, args.calls, args.batch))
            with Burner() as burner:
                samples[name]["burning"].append(throughput(runs, args.calls, args.batch))
            burned.append(burner.cpu_s / burner.wall_s)
    latency = interleaved_samples(
        {"2 threads": run_on(two, image), "1 thread": run_on(ones[0], image)}, args.latency_repeats
    )
    latency_median = medians(latency)

    rates = {
        name: {k: statistics.median(v) for k, v in cond.items()} for name, cond in samples.items()
    }
    print(
        f"Machine: {machine()}; batch {args.batch}, {args.calls} calls per session per "
        f"sample, median of {args.rounds} rounds; burning thread got "
        f"{statistics.median(burned):.0%} of a core\n"
    )
    print("| sessions | alone (img/s) | beside a thread burning 20% of a core (img/s) | ratio |")
    print("|---|---:|---:|---:|")
    for name, rate in rates.items():
        print(
            f"| {name} | {rate['alone']:.1f} | {rate['burning']:.1f} | "
            f"{rate['burning'] / rate['alone']:.2f} |"
        )
    print(
        f"\nOne image (batch 1): 2-thread session {latency_median['2 threads'] * 1e3:.1f} ms, "
        f"1-thread session {latency_median['1 thread'] * 1e3:.1f} ms"
    )
    write_result(
        "thread_interference",
        {
            "artifact": ARTIFACT.relative_to(ROOT).as_posix(),
            "batch": args.batch,
            "calls": args.calls,
            "rounds": args.rounds,
            "burner": {
                "period_s": BURN_PERIOD_S,
                "share": BURN_SHARE,
                "cpu_share_measured": burned,
            },
            "throughput_img_s": {
                name: {
                    "samples": samples[name],
                    "median": rates[name],
                    "burning_over_alone": rates[name]["burning"] / rates[name]["alone"],
                }
                for name in layouts
            },
            "latency_batch1": {
                "repeats": args.latency_repeats,
                "samples_s": latency,
                "median_s": latency_median,
                "one_thread_over_two": latency_median["1 thread"] / latency_median["2 threads"],
            },
        },
    )


if __name__ == "__main__":
    main()
