"""The ``instances`` table (docs/scaling.md): bench/instances.py's sweep of model instances x
threads per instance x max batch size, the 2x1 against 1x2 comparison, memory per
instance, the plan the server derives for each objective, and the extrapolation to 16 and
64 cores. ``instances()`` returns the block's markdown, starting with its ``Source:`` line."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from render_common import source

RESULTS = Path(__file__).resolve().parent / "results"
#: Cores the capacity model extrapolates to.
TARGET_CORES = (16, 64)
TENCROP_ROWS = 10


def _load() -> dict[str, Any]:
    return json.loads((RESULTS / "instances.json").read_text(encoding="utf-8"))


def _source(d: dict[str, Any]) -> str:
    before, after = (" ".join(f"{v:.2f}" for v in d["load_average"][k]) for k in ("before", "after"))
    return source("instances.json", note=(
        f"CheXNet artifact; one 1x3x224x224 FP32 image per request (binary, tritonclient); "
        f"{d['rounds']} interleaved rounds, each of {d['latency_requests']} sequential requests "
        f"(concurrency 1) and {d['requests']} requests at concurrency 8 per cell; load average "
        f"before / after {before} / {after}."))


def _cell(d: dict[str, Any], instances: int, threads: int, batch: int) -> dict[str, Any]:
    return d["cells"][f"{instances}x{threads} b{batch}"]


def instances() -> str:
    """The sweep table, the comparison, memory, the derived plans and the extrapolation."""
    d = _load()
    cores, s, plans = d["cpus"], d["summary"], d["derived"]
    lines = [_source(d), "",
             "| instances x threads | max batch size | c1 p50 ms | c1 p90 ms | c8 images/s | "
             "RSS idle / after MiB |", "|---|---:|---:|---:|---:|---:|"]
    for cell in d["cells"].values():
        over = " (oversubscribed)" if cell["instances"] * cell["threads"] > cores else ""
        lines.append(
            f"| {cell['instances']} x {cell['threads']}{over} | {cell['max_batch_size']} | "
            f"{cell['p50_s'] * 1e3:.0f} | {cell['p90_s'] * 1e3:.0f} | "
            f"{cell['img_s_median']:.1f} | {cell['rss_idle_mib']:.0f} / "
            f"{cell['rss_end_mib']:.0f} |")
    two, one = s["best_2x1"], s["best_1x2"]
    per_batch = ", ".join(f"{v['throughput_2x1_over_1x2']:.2f} at max batch {b}"
                          for b, v in s["per_batch"].items())
    batches = d["batch_sizes"]
    extra = {b: _extra(d, b) for b in batches}
    lines += [
        "",
        f"- **2 x 1 against 1 x 2, concurrency 8** (each at its best max batch size): "
        f"{two['img_s']:.1f} against {one['img_s']:.1f} images/s, ratio "
        f"**{s['throughput_2x1_over_1x2']:.2f}** ({per_batch}).",
        f"- **Latency cost at concurrency 1**: 2 x 1's p50 is {two['p50_s'] * 1e3:.0f} ms against "
        f"1 x 2's {one['p50_s'] * 1e3:.0f} ms ({s['latency_cost_ms']:+.0f} ms, ratio "
        f"{s['latency_cost_2x1_over_1x2']:.2f}).",
        f"- **Memory per instance**: one more instance adds {s['memory_per_instance_idle_mib']:.0f} "
        f"MiB once loaded (its session and weights), and after the load "
        + ", ".join(f"{extra[b]:.0f} MiB at max batch {b}" for b in batches)
        + " (ONNX Runtime's arena grows with the largest batch the instance ran).",
        f"- **Derived by the server on these {len(plans['cpus'])} CPUs**: `objective = \"latency\"` "
        f"gives {_plan(plans['latency'])}, `objective = \"throughput\"` gives "
        f"{_plan(plans['throughput'])}; servers started with each reported "
        f"{plans['latency']['server_reports_instances']:.0f} and "
        f"{plans['throughput']['server_reports_instances']:.0f} instances in `/metrics`.",
    ]
    return "\n".join(lines + _extrapolation(d))


def _plan(plan: dict[str, Any]) -> str:
    return f"{plan['instances']} x {plan['threads']}"


def _extrapolation(d: dict[str, Any]) -> list[str]:
    """Per-core throughput, two ways, scaled linearly in cores; memory per instance added."""
    cores = d["cpus"]
    fitting = [c for c in d["cells"].values() if c["instances"] * c["threads"] <= cores]
    shared = max(fitting, key=lambda c: c["img_s_median"])
    single = max((c for c in fitting if c["instances"] * c["threads"] == 1),
                 key=lambda c: c["img_s_median"])
    low, high = shared["img_s_median"] / cores, single["img_s_median"]
    first, last = d["batch_sizes"][0], d["batch_sizes"][-1]
    lines = ["", f"Extrapolation (not measured: this machine has {cores} cores), one 1-thread "
             f"instance per core, throughput linear in cores, from two per-core figures: "
             f"**{low:.1f}** images/s per core, the best layout that fits the cores "
             f"({shared['instances']} x {shared['threads']}, max batch "
             f"{shared['max_batch_size']}) over {cores} cores as they were shared in this run; "
             f"and **{high:.1f}**, one 1-thread instance alone (1 x 1, max batch "
             f"{single['max_batch_size']}), which can use at most one core: what a core of its "
             f"own gives. A TenCrop X-ray is {TENCROP_ROWS} images.", "",
             f"| cores | instances x threads | images/s | TenCrop X-rays/s | memory (RSS), max "
             f"batch {first} / {last} |", "|---:|---|---:|---:|---:|"]
    for n in TARGET_CORES:
        memory = " / ".join(f"{_memory(d, n, b) / 1024:.1f}" for b in (first, last))
        lines.append(f"| {n} | {n} x 1 | {n * low:,.0f}–{n * high:,.0f} | "
                     f"{n * low / TENCROP_ROWS:,.1f}–{n * high / TENCROP_ROWS:,.1f} | "
                     f"{memory} GiB |")
    lines += ["", f"Memory: the measured 1 x 1 server plus, per further instance, what the "
              f"second one added (median over the max batch sizes "
              f"{statistics.median(_extra(d, b) for b in d['batch_sizes']):.0f} MiB)."]
    return lines


def _extra(d: dict[str, Any], batch: int) -> float:
    """RSS the second 1-thread instance added, after the load, at ``batch``."""
    return float(_cell(d, 2, 1, batch)["rss_end_mib"] - _cell(d, 1, 1, batch)["rss_end_mib"])


def _memory(d: dict[str, Any], instances: int, batch: int) -> float:
    return float(_cell(d, 1, 1, batch)["rss_end_mib"]) + (instances - 1) * _extra(d, batch)


if __name__ == "__main__":
    print(instances())
