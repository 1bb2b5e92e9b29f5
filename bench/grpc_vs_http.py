"""gRPC against HTTP (binary tensors) on our server: the same CheXNet requests both ways.

``model-agnostic serve`` runs the CheXNet artifact (exported first if missing, on seeded
random weights: speed does not depend on the values) in a child process, HTTP and gRPC on
loopback (``--grpc-port``), 16 server threads, ONNX Runtime on ``--threads`` threads.
Clients run in this process: ``tritonclient.http`` with binary tensor data in and out,
``tritonclient.grpc`` with raw contents, each asking for the output ``probabilities`` only
(the graph's ``features`` output, 200 KB per image, is for heatmaps and stays on the
server). One request is one preprocessed 1x3x224x224 FP32 image.

At concurrency 1 and 8 (one client per thread, ``--requests`` requests per protocol per
round), the two protocols alternate in ``--rounds`` rounds, the order rotating per round,
so background noise hits both alike. Throughput is requests over wall time summed over the
rounds; p50 and p99 pool every request's time. The answers of both protocols are compared
bit for bit once. Every sample, rate, percentile and ratio goes to
bench/results/grpc_vs_http.json.

Targets: gRPC throughput >= HTTP's at both concurrencies; gRPC p50 <= HTTP's at
concurrency 1.

Usage: python bench/grpc_vs_http.py [--requests 48] [--rounds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result
from serving import ARTIFACT, ensure_artifact, free_port, start

MODEL = "chexnet"
OUTPUT = "probabilities"
PROTOCOLS = ("http", "grpc")
CONCURRENCIES = (1, 8)


def client_call(protocol: str, http_url: str, grpc_address: str, image: np.ndarray
                ) -> tuple[Callable[[], np.ndarray], Callable[[], None]]:
    """``(call, close)``: one request of ``image`` through a new tritonclient of ``protocol``."""
    if protocol == "http":
        import tritonclient.http as http

        client: Any = http.InferenceServerClient(http_url.removeprefix("http://"),
                                                 network_timeout=300, connection_timeout=300)
        tensor: Any = http.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image, binary_data=True)
        output: Any = http.InferRequestedOutput(OUTPUT, binary_data=True)
    else:
        import tritonclient.grpc as grpc

        client = grpc.InferenceServerClient(grpc_address)
        tensor = grpc.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        output = grpc.InferRequestedOutput(OUTPUT)

    def call() -> np.ndarray:
        return client.infer(MODEL, [tensor], outputs=[output]).as_numpy(OUTPUT)

    return call, client.close


def run(protocol: str, concurrency: int, requests: int, http_url: str, grpc_address: str,
        image: np.ndarray) -> tuple[float, list[float]]:
    """(wall seconds, each request's seconds): ``requests`` over ``concurrency`` threads,
    each with a client of its own, made and warmed up in that thread (tritonclient.http
    runs on gevent, whose connections stay with the thread that made them)."""
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    ready = threading.Barrier(concurrency + 1)

    def worker(index: int) -> list[float]:
        call, close = client_call(protocol, http_url, grpc_address, image)
        call()  # connect and warm up
        ready.wait()
        times = []
        for _ in range(shares[index]):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        close()
        return times

    with ThreadPoolExecutor(concurrency) as pool:
        jobs = [pool.submit(worker, index) for index in range(concurrency)]
        ready.wait()
        started = time.perf_counter()
        parts = [job.result() for job in jobs]
        wall = time.perf_counter() - started
    return wall, [t for part in parts for t in part]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=48,
                        help="requests per protocol, concurrency and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    args = parser.parse_args()

    ensure_artifact()
    port, grpc_port = free_port(), free_port()
    http_url, grpc_address = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    server = start([sys.executable, "-m", "model_agnostic", "serve", str(ARTIFACT), "--port",
                    str(port), "--grpc-port", str(grpc_port), "--threads", "16", "--set",
                    f"onnxruntime.intra_op_num_threads={args.threads}"],
                   http_url, "/v2/health/ready", env)
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    walls: dict[str, dict[str, float]] = {p: {str(c): 0.0 for c in CONCURRENCIES}
                                          for p in PROTOCOLS}
    samples: dict[str, dict[str, list[float]]] = {p: {str(c): [] for c in CONCURRENCIES}
                                                  for p in PROTOCOLS}
    try:
        answers = {p: client_call(p, http_url, grpc_address, image) for p in PROTOCOLS}
        same = answers["http"][0]().tobytes() == answers["grpc"][0]().tobytes()
        for _, close in answers.values():
            close()
        for index in range(args.rounds):
            for concurrency in CONCURRENCIES:
                order = PROTOCOLS if index % 2 == 0 else PROTOCOLS[::-1]
                for protocol in order:
                    wall, times = run(protocol, concurrency, args.requests, http_url,
                                      grpc_address, image)
                    walls[protocol][str(concurrency)] += wall
                    samples[protocol][str(concurrency)] += times
    finally:
        server.terminate()
        server.wait(30)

    rates, p50, p99 = {}, {}, {}
    for protocol in PROTOCOLS:
        for c in map(str, CONCURRENCIES):
            key = f"{protocol}_c{c}"
            rates[key] = len(samples[protocol][c]) / walls[protocol][c]
            p50[key] = statistics.median(samples[protocol][c])
            p99[key] = percentile(samples[protocol][c], 99)
    ratios = {f"grpc_over_http_throughput_c{c}": rates[f"grpc_c{c}"] / rates[f"http_c{c}"]
              for c in CONCURRENCIES}
    ratios.update({f"grpc_over_http_p50_c{c}": p50[f"grpc_c{c}"] / p50[f"http_c{c}"]
                   for c in CONCURRENCIES})
    ratios.update({f"grpc_over_http_p99_c{c}": p99[f"grpc_c{c}"] / p99[f"http_c{c}"]
                   for c in CONCURRENCIES})
    met = {"grpc_throughput_c1_ge_http": ratios["grpc_over_http_throughput_c1"] >= 1.0,
           "grpc_throughput_c8_ge_http": ratios["grpc_over_http_throughput_c8"] >= 1.0,
           "grpc_p50_c1_le_http": ratios["grpc_over_http_p50_c1"] <= 1.0}

    print(f"Machine: {machine()}; ONNX Runtime threads {args.threads}; server threads 16")
    print(f"answers equal bit for bit: {same}\n")
    print("| concurrency | protocol | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for c in CONCURRENCIES:
        for protocol in PROTOCOLS:
            key = f"{protocol}_c{c}"
            print(f"| {c} | {protocol} | {rates[key]:.2f} | {p50[key] * 1e3:.1f} | "
                  f"{p99[key] * 1e3:.1f} |")
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    print("targets met:", met)
    write_result("grpc_vs_http", {
        "model": MODEL, "output": OUTPUT, "input_shape": list(image.shape),
        "threads": args.threads, "server_threads": 16, "requests": args.requests,
        "rounds": args.rounds, "concurrencies": list(CONCURRENCIES),
        "clients": {"http": "tritonclient.http, binary tensor data in and out",
                    "grpc": "tritonclient.grpc, raw contents"},
        "answers_equal_bit_for_bit": same,
        "samples_s": samples, "wall_s_by_protocol": walls,
        "throughput_rps": rates, "p50_s": p50, "p99_s": p99, "ratios": ratios,
        "targets": {"grpc_over_http_throughput_c1": ">= 1.0",
                    "grpc_over_http_throughput_c8": ">= 1.0",
                    "grpc_over_http_p50_c1": "<= 1.0"},
        "targets_met": met})


if __name__ == "__main__":
    main()
