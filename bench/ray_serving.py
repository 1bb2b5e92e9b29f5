"""Ray Serve's overhead: our server against the Ray Serve adapter on the same load, one run.

Three systems serve the CheXNet artifact (exported first if missing, on seeded random
weights: speed does not depend on the values), on this machine's cores:

1. ``model-agnostic serve`` in a child process (waitress, 16 threads, our batcher);
2. Ray Serve, one replica (``adapters/ray_serve.py``: Ray's HTTP proxy, ``@serve.batch``);
3. Ray Serve, two replicas; both share the same cores, so this checks the capacity
   model's scaling assumption on a machine that cannot scale, it does not add capacity.

Two workloads, each at concurrency 1, 4 and 8 (closed loop: every client sends its next
request when the previous one is answered; each client has its own keep-alive connection):

- ``tensor``: one preprocessed 1x3x224x224 FP32 image, binary tensors, ``tritonclient``;
- ``xray``: the sample X-ray JPEG to ``/v2/models/chexnet/predict`` (TenCrop: 10 rows).

Ours and Ray with one replica alternate concurrency by concurrency, so drifting noise hits
both alike. Reported: throughput (requests/s) and latency p50/p99 per concurrency; every
request's latency goes to bench/results/ray_serving.json with them.

Usage: python bench/ray_serving.py [--tensor-requests 96] [--xray-requests 16]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, XRAY, machine, write_result
from serving import ARTIFACT, ensure_artifact, free_port, start

CONCURRENCY = (1, 4, 8)
Call = Callable[[], None]


def tensor_client(url: str, image: np.ndarray) -> Call:
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"), network_timeout=300,
                                        connection_timeout=300)
    tensor = http.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=True)
    output = http.InferRequestedOutput("probabilities", binary_data=True)

    def call() -> None:
        client.infer("chexnet", [tensor], outputs=[output]).as_numpy("probabilities")

    return call


def xray_client(url: str, body: bytes) -> Call:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)

    def call() -> None:
        connection.request("POST", "/v2/models/chexnet/predict", body,
                           {"Content-Type": "image/jpeg"})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url} answered {answer.status}")

    return call


def closed_loop(make: Callable[[], Call], requests: int, concurrency: int) -> dict[str, Any]:
    """Throughput, latency percentiles and every latency (seconds, in completion order per
    client) of ``requests`` calls from ``concurrency`` clients.

    Each client is made, warmed up and used in its own thread (tritonclient's gevent
    connections must stay on the thread that made them); timing starts when all are warm.
    """
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)

    def worker(count: int) -> None:
        call = make()
        call()  # warm the connection
        ready.wait()
        mine = []
        for _ in range(count):
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(count,)) for count in shares]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(latencies) != requests:
        raise RuntimeError(f"{requests - len(latencies)} requests failed; see above")
    ordered = sorted(latencies)
    return {"rps": requests / wall, "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(np.ceil(0.99 * len(ordered))) - 1)],
            "wall_s": wall, "latencies": latencies}


def _brief(cell: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in cell.items() if k != "latencies"}


def start_ray(port: int, replicas: int) -> object:
    import ray
    from ray import serve

    from model_agnostic.adapters.ray_serve import deployment

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(deployment(ARTIFACT, num_replicas=replicas, ray_actor_options={"num_cpus": 1}),
              name="chexnet", route_prefix="/")
    return serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensor-requests", type=int, default=96)
    parser.add_argument("--xray-requests", type=int, default=16)
    args = parser.parse_args()
    ensure_artifact()
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    xray = XRAY.read_bytes()
    workloads: dict[str, tuple[Callable[[str], Call], int]] = {
        "tensor": (functools.partial(tensor_client, image=image), args.tensor_requests),
        "xray": (functools.partial(xray_client, body=xray), args.xray_requests)}
    load_before = Path("/proc/loadavg").read_text().split()[:3]

    ours_port, ray_port = free_port(), free_port()
    ours_url, ray_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{ray_port}"
    server = start([sys.executable, "-m", "model_agnostic", "serve", str(ARTIFACT), "--port",
                    str(ours_port), "--threads", "16"], ours_url, "/v2/health/ready",
                   dict(os.environ))
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    try:
        serve = start_ray(ray_port, 1)
        for workload, (make, requests) in workloads.items():
            for concurrency in CONCURRENCY:
                for system, url in (("ours", ours_url), ("ray-1", ray_url)):
                    results[system, workload, concurrency] = closed_loop(
                        functools.partial(make, url), requests, concurrency)
                    print(system, workload, concurrency,
                          _brief(results[system, workload, concurrency]), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    start_ray(ray_port, 2)
    for workload, (make, requests) in workloads.items():
        for concurrency in CONCURRENCY:
            results["ray-2", workload, concurrency] = closed_loop(
                functools.partial(make, ray_url), requests, concurrency)
            print("ray-2", workload, concurrency, _brief(results["ray-2", workload, concurrency]),
                  flush=True)
    serve.shutdown()  # type: ignore[attr-defined]
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    report(results, load_before, load_after, args)


def report(results: dict[tuple[str, str, int], dict[str, Any]], before: list[str],
           after: list[str], args: argparse.Namespace) -> None:
    import ray

    lines = [f"Machine: {machine()}, ray {ray.__version__}",
             (f"Load average before / after: {' '.join(before)} / {' '.join(after)}; "
              f"{args.tensor_requests} tensor and {args.xray_requests} X-ray requests per cell"),
             "", "| workload | concurrency | system | req/s | p50 ms | p99 ms | vs ours |",
             "|---|---|---|---|---|---|---|"]
    for workload in ("tensor", "xray"):
        for concurrency in CONCURRENCY:
            base = results["ours", workload, concurrency]["rps"]
            for system in ("ours", "ray-1", "ray-2"):
                cell = results[system, workload, concurrency]
                lines.append(f"| {workload} | {concurrency} | {system} | {cell['rps']:.2f} | "
                             f"{cell['p50'] * 1e3:.0f} | {cell['p99'] * 1e3:.0f} | "
                             f"{cell['rps'] / base:.2f} |")
    lines += ["", "ray-2: two replicas sharing the same 2 cores (no added capacity).",
              "Target: ray-1 >= 0.70 of ours (throughput)."]
    text = "\n".join(lines)
    print(text)
    write_result("ray_serving", {
        "ray": ray.__version__, "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": [float(x) for x in before],
        "load_average_after": [float(x) for x in after],
        "requests_per_cell": {"tensor": args.tensor_requests, "xray": args.xray_requests},
        "concurrency": list(CONCURRENCY), "server_threads": 16,
        "systems": {"ours": "model-agnostic serve (waitress, 16 threads)",
                    "ray-1": "Ray Serve adapter, 1 replica", "ray-2": "Ray Serve adapter, 2 replicas"},
        "cells": [{"system": system, "workload": workload, "concurrency": concurrency,
                   "rps": cell["rps"], "p50_s": cell["p50"], "p99_s": cell["p99"],
                   "wall_s": cell["wall_s"], "latencies_s": cell["latencies"],
                   "rps_over_ours": cell["rps"] / results["ours", workload, concurrency]["rps"]}
                  for (system, workload, concurrency), cell in results.items()],
        "target": {"ray-1_rps_over_ours": ">= 0.70"}})


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
