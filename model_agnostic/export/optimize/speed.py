"""Is the variant faster here? Both graphs timed on this machine, interleaved, with the
same threads and the same input, medians compared; and which CPU that was."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...model import Arrays, Model

__all__ = ["ISA_FLAGS", "cpu_info", "measure_speedup", "timed_load"]

#: The instruction-set flags that decide INT8 and float16 kernels' speed (x86 and Arm).
ISA_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
)


def cpu_info(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """This CPU's model name, core count and instruction-set flags (all of them, and
    those of :data:`ISA_FLAGS` present); ``flags`` is empty where /proc/cpuinfo is not."""
    model, flags = "unknown", list[str]()
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and model == "unknown":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.split()
    except OSError:
        pass
    return {
        "model": model,
        "cores": os.cpu_count(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "flags": flags,
    }


def timed_load(build: Callable[[], Model]) -> tuple[Model, float]:
    """The model ``build`` returns, and the seconds it took (session creation)."""
    start = time.perf_counter()
    model = build()
    return model, time.perf_counter() - start


def measure_speedup(
    fp32: Model,
    variant: Model,
    batch: Arrays,
    *,
    seconds: float = 4.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
    warmup: int = 2,
) -> dict[str, Any]:
    """Median seconds per ``infer(batch)`` of each model, timed in alternation (so noise
    from other work hits both alike) for about ``seconds``; ``speedup`` is FP32's median
    over the variant's (above 1: the variant is faster)."""
    for _ in range(warmup):
        fp32.infer(batch)
        variant.infer(batch)
    samples: dict[str, list[float]] = {"fp32": [], "variant": []}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - start < seconds):
        for name, model in (
            (("fp32", fp32), ("variant", variant))
            if rounds % 2 == 0
            else (
                ("variant", variant),
                ("fp32", fp32),
            )
        ):
            began = time.perf_counter()
            model.infer(batch)
            samples[name].append(time.perf_counter() - began)
        rounds += 1
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "fp32_s": medians["fp32"],
        "variant_s": medians["variant"],
        "speedup": medians["fp32"] / medians["variant"],
        "rounds": rounds,
        "rows": len(next(iter(batch.values()))),
        "samples_s": {name: [round(v, 6) for v in values] for name, values in samples.items()},
    }
