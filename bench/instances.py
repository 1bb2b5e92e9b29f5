"""Model instances: instances x threads per instance x max batch size, CheXNet on this machine.

Every layout (``[serving] instances`` x ``threads_per_instance``) at every max batch size
is its own ``model-agnostic serve`` of the CheXNet artifact (exported first if missing, on
seeded random weights: speed does not depend on the values), all started at once and
measured in interleaved rounds, so drifting noise from other jobs hits every cell alike:

- concurrency 1: sequential requests, latency p50 / p90;
- concurrency 8: ``tritonclient`` keeps 8 requests in flight, throughput in images/s.

A request is one preprocessed 1x3x224x224 FP32 image sent as a binary tensor. Each
server's RSS (idle once loaded, and at the end) gives the memory of one more instance. The
result also records the plan the server derives for each ``objective`` on this machine
(``model_agnostic.serving.instances.plan_instances``), checked by starting a server with
that objective and reading ``model_agnostic_instances`` from its ``/metrics``.

Usage: python bench/instances.py [--rounds 3] [--requests 48] [--latency-requests 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result
from serving import ARTIFACT, ensure_artifact, free_port, start

LAYOUTS = ((1, 1), (1, 2), (2, 1), (2, 2))  # (instances, threads per instance)
BATCH_SIZES = (1, 4, 8)
CONCURRENCY = (1, 8)
SETTLE_S = 0.5  # between cells: ONNX Runtime's threads stop spinning


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def serve(settings: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "model_agnostic", "serve", str(ARTIFACT), "--port",
               str(port), "--threads", "16"]
    for key, value in settings.items():
        command += ["--set", f"serving.{key}={value}"]
    return start(command, url, "/v2/health/ready", dict(os.environ)), url


def client(url: str, concurrency: int) -> Any:
    import tritonclient.http as http

    return http.InferenceServerClient(url.removeprefix("http://"), concurrency=concurrency,
                                      network_timeout=300, connection_timeout=300)


def request(image: np.ndarray) -> tuple[list[Any], list[Any]]:
    import tritonclient.http as http

    tensor = http.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=True)
    return [tensor], [http.InferRequestedOutput("probabilities", binary_data=True)]


def latencies(url: str, image: np.ndarray, count: int) -> list[float]:
    """Seconds of each of ``count`` sequential requests (after two to warm up)."""
    connection, (inputs, outputs) = client(url, 1), request(image)
    samples = []
    for index in range(count + 2):
        started = time.perf_counter()
        connection.infer("chexnet", inputs, outputs=outputs)
        if index >= 2:
            samples.append(time.perf_counter() - started)
    connection.close()
    return samples


def throughput(url: str, image: np.ndarray, count: int, concurrency: int) -> float:
    """Images/s with ``concurrency`` requests in flight until ``count`` are answered."""
    connection, (inputs, outputs) = client(url, concurrency), request(image)
    for _ in range(concurrency):
        connection.infer("chexnet", inputs, outputs=outputs)
    started = time.perf_counter()
    pending = [connection.async_infer("chexnet", inputs, outputs=outputs) for _ in range(count)]
    for job in pending:
        job.get_result()
    rate = count / (time.perf_counter() - started)
    connection.close()
    return rate


def served_instances(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("model_agnostic_instances{"))


def derived_plans() -> dict[str, Any]:
    """The plan each objective gives on this machine, and what a server started so reports."""
    from model_agnostic.serving.instances import available_cpus, plan_instances

    plans: dict[str, Any] = {}
    for objective in ("latency", "throughput"):
        plan = plan_instances({"objective": objective}, "chexnet")
        process, url = serve({"objective": objective})
        try:
            reported = served_instances(url)
        finally:
            process.terminate()
            process.wait(60)
        plans[objective] = {"instances": plan.instances, "threads": plan.threads,
                            "reason": plan.reason, "server_reports_instances": reported}
    plans["cpus"] = available_cpus()
    return plans


def cell_name(instances: int, threads: int, batch: int) -> str:
    return f"{instances}x{threads} b{batch}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=48, help="per throughput sample")
    parser.add_argument("--latency-requests", type=int, default=12, help="per latency sample")
    args = parser.parse_args()
    ensure_artifact()
    load_before = os.getloadavg()
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    cells: dict[str, dict[str, Any]] = {}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for instances, threads in LAYOUTS:
            for batch in BATCH_SIZES:
                name = cell_name(instances, threads, batch)
                servers[name] = serve({"instances": instances, "threads_per_instance": threads,
                                       "max_batch_size": batch, "max_queue_delay_ms": 0.0})
                cells[name] = {"instances": instances, "threads": threads, "max_batch_size": batch,
                               "rss_idle_mib": status_mib(servers[name][0].pid, "VmRSS"),
                               "latency_s": [], "img_s": []}
        for round_index in range(args.rounds):
            order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
            for name in order:
                url = servers[name][1]
                time.sleep(SETTLE_S)
                cells[name]["latency_s"] += latencies(url, image, args.latency_requests)
                time.sleep(SETTLE_S)
                cells[name]["img_s"].append(throughput(url, image, args.requests, 8))
            print(f"round {round_index + 1} of {args.rounds} done", file=sys.stderr)
        for name, (process, _) in servers.items():
            cells[name]["rss_end_mib"] = status_mib(process.pid, "VmRSS")
            cells[name]["rss_peak_mib"] = status_mib(process.pid, "VmHWM")
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            process.wait(60)
    load_after = os.getloadavg()
    for cell in cells.values():
        lat = sorted(cell["latency_s"])
        cell["p50_s"] = statistics.median(lat)
        cell["p90_s"] = lat[int(0.9 * (len(lat) - 1))]
        cell["img_s_median"] = statistics.median(cell["img_s"])
    plans = derived_plans()
    summary = summarise(cells)
    print_table(cells, summary, plans)
    write_result("instances", {
        "layouts": [list(layout) for layout in LAYOUTS], "batch_sizes": list(BATCH_SIZES),
        "concurrency": list(CONCURRENCY), "rounds": args.rounds, "requests": args.requests,
        "latency_requests": args.latency_requests, "input_shape": list(image.shape),
        "settle_s": SETTLE_S, "cpus": os.cpu_count(), "artifact": str(ARTIFACT.relative_to(ROOT)),
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "cells": cells, "summary": summary, "derived": plans})


def summarise(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """2x1 against 1x2: throughput at concurrency 8 and latency at 1, per batch size and at
    each layout's best batch size; memory of the second instance."""
    def best(instances: int, threads: int) -> dict[str, Any]:
        mine = [c for c in cells.values() if (c["instances"], c["threads"]) == (instances, threads)]
        return max(mine, key=lambda c: c["img_s_median"])

    per_batch = {}
    for batch in BATCH_SIZES:
        two, one = cells[cell_name(2, 1, batch)], cells[cell_name(1, 2, batch)]
        per_batch[str(batch)] = {"throughput_2x1_over_1x2": two["img_s_median"] / one["img_s_median"],
                                 "p50_2x1_over_1x2": two["p50_s"] / one["p50_s"]}
    two, one = best(2, 1), best(1, 2)
    second_instance = [cells[cell_name(2, 1, b)]["rss_end_mib"] - cells[cell_name(1, 1, b)]["rss_end_mib"]
                       for b in BATCH_SIZES]
    second_idle = [cells[cell_name(2, 1, b)]["rss_idle_mib"] - cells[cell_name(1, 1, b)]["rss_idle_mib"]
                   for b in BATCH_SIZES]
    return {
        "per_batch": per_batch,
        "best_2x1": {"max_batch_size": two["max_batch_size"], "img_s": two["img_s_median"],
                     "p50_s": two["p50_s"]},
        "best_1x2": {"max_batch_size": one["max_batch_size"], "img_s": one["img_s_median"],
                     "p50_s": one["p50_s"]},
        "throughput_2x1_over_1x2": two["img_s_median"] / one["img_s_median"],
        "latency_cost_2x1_over_1x2": two["p50_s"] / one["p50_s"],
        "latency_cost_ms": (two["p50_s"] - one["p50_s"]) * 1e3,
        "memory_per_instance_mib": statistics.median(second_instance),
        "memory_per_instance_idle_mib": statistics.median(second_idle),
    }


def print_table(cells: dict[str, dict[str, Any]], summary: dict[str, Any],
                plans: dict[str, Any]) -> None:
    print("| instances x threads | max batch | c1 p50 ms | c1 p90 ms | c8 img/s | RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for cell in cells.values():
        print(f"| {cell['instances']}x{cell['threads']} | {cell['max_batch_size']} | "
              f"{cell['p50_s'] * 1e3:.1f} | {cell['p90_s'] * 1e3:.1f} | {cell['img_s_median']:.1f} | "
              f"{cell['rss_end_mib']:.0f} |")
    print(f"2x1 / 1x2 at c8 (best batch each): {summary['throughput_2x1_over_1x2']:.2f}; "
          f"c1 p50 2x1 / 1x2: {summary['latency_cost_2x1_over_1x2']:.2f} "
          f"({summary['latency_cost_ms']:+.1f} ms); one more instance: "
          f"{summary['memory_per_instance_mib']:.0f} MiB")
    print(f"derived: {plans}")


if __name__ == "__main__":
    main()
