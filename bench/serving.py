"""Serving: our server against bare ONNX Runtime and against a naive Flask + PyTorch view.

All on loopback, in one run, with a bounded number of requests:

1. throughput, CheXNet DenseNet-121 on ONNX Runtime, preprocessed 1x3x224x224 FP32 inputs
   sent as binary tensors by ``tritonclient`` at concurrency 8, against a bare
   ``InferenceSession``'s best batched throughput (batch 1..32) on the same graph;
2. latency at concurrency 1 (p50), against bare batch-1 ``run`` (interleaved);
3. one 10x3x224x224 FP32 request end to end, binary tensors against JSON (interleaved);
4. throughput at concurrency 8 against the story's starting point: a Flask view (Flask's
   threaded server) that runs the PyTorch model per request, two ways: on the same
   preprocessed tensors, and on the X-ray file itself (the naive view preprocesses with
   torchvision and runs TenCrop; ours is ``/v2/models/chexnet/predict``, TenCrop too).

The server is ``model-agnostic serve`` on the CheXNet artifact in a child process (exported
first if missing, on seeded random weights: speed does not depend on the values), with
the same ONNX Runtime threads as the bare session. Clients run in this process.
Every timing sample, the rates, ratios and targets go to bench/results/serving.json.

Usage: python bench/serving.py [--requests 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CHEXNET_CONFIG, ROOT, XRAY, machine, write_result

ARTIFACT = CHEXNET_CONFIG.parent / "artifacts" / "chexnet"
NAIVE = Path(__file__).resolve().parent / "naive_flask.py"
SETTLE_S = 0.1  # pause between interleaved latency samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], path: str, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start(command: list[str], url: str, ready_path: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_ready(url, process, ready_path)
    return process


def ensure_artifact() -> None:
    """Export the CheXNet artifact unless a current one (with its heatmap weights) exists."""
    if not (ARTIFACT / "model.cam_weights.npy").is_file():
        subprocess.run([sys.executable, "-m", "model_agnostic", "export", "--config",
                        str(CHEXNET_CONFIG), "--force"], check=True, cwd=ROOT)


def bare_throughput(session: Any, image: np.ndarray, repeats: int
                    ) -> tuple[int, float, dict[int, float], dict[int, list[float]]]:
    """(best batch, images/s, images/s per batch, seconds of every run per batch)."""
    name = session.get_inputs()[0].name
    rates, samples = {}, {}
    for batch in (1, 2, 4, 8, 16, 32):
        array = np.ascontiguousarray(np.repeat(image, batch, axis=0))
        session.run(None, {name: array})
        times = []
        for _ in range(max(2, repeats // batch)):
            started = time.perf_counter()
            session.run(None, {name: array})
            times.append(time.perf_counter() - started)
        rates[batch] = batch / statistics.median(times)
        samples[batch] = times
    best = max(rates, key=lambda b: rates[b])
    return best, rates[best], rates, samples


def triton_throughput(url: str, image: np.ndarray, requests: int, concurrency: int) -> float:
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"), concurrency=concurrency,
                                        network_timeout=300, connection_timeout=300)
    tensor = http.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=True)
    output = http.InferRequestedOutput("probabilities", binary_data=True)
    for _ in range(concurrency):  # warm up every connection
        client.infer("chexnet", [tensor], outputs=[output])
    started = time.perf_counter()
    pending = [client.async_infer("chexnet", [tensor], outputs=[output]) for _ in range(requests)]
    for job in pending:
        job.get_result().as_numpy("probabilities")
    rate = requests / (time.perf_counter() - started)
    client.close()
    return rate


def latencies(url: str, session: Any, image: np.ndarray, repeats: int
              ) -> tuple[list[float], list[float]]:
    """Seconds of each request through the server and of each bare batch-1 run (interleaved).

    ONNX Runtime's worker threads spin for a while after each run; a pause between the two
    keeps one process's spinning from slowing the other's next call.
    """
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"))
    tensor = http.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=True)
    output = http.InferRequestedOutput("probabilities", binary_data=True)
    name = session.get_inputs()[0].name
    served, bare = [], []
    for _ in range(3):
        client.infer("chexnet", [tensor], outputs=[output])
        session.run(None, {name: image})
    for _ in range(repeats):
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        client.infer("chexnet", [tensor], outputs=[output])
        served.append(time.perf_counter() - started)
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        session.run(None, {name: image})
        bare.append(time.perf_counter() - started)
    client.close()
    return served, bare


def binary_vs_json(url: str, batch: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Seconds of each 10-image request end to end (interleaved): binary tensors, JSON."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"), network_timeout=300,
                                        connection_timeout=300)

    def call(binary: bool) -> Callable[[], Any]:
        def run() -> Any:
            tensor = http.InferInput("image", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            output = http.InferRequestedOutput("probabilities", binary_data=binary)
            return client.infer("chexnet", [tensor], outputs=[output]).as_numpy("probabilities")
        return run

    fns = {"binary": call(True), "json": call(False)}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for key, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - started)
    client.close()
    return samples


def posted_throughput(url: str, path: str, body: bytes, content_type: str, requests: int,
                      concurrency: int) -> float:
    """Requests per second, ``concurrency`` keep-alive clients POSTing ``body`` to ``path``."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    host, port = url.removeprefix("http://").split(":")

    def worker(count: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=600)
        for _ in range(count):
            connection.request("POST", path, body, {"Content-Type": content_type})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{url}{path} answered {answer.status}")
        connection.close()

    worker(1)
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, shares))
    return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per throughput run")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime / torch threads")
    parser.add_argument("--repeats", type=int, default=20, help="latency samples")
    parser.add_argument("--image-requests", type=int, default=24,
                        help="X-ray uploads per image-throughput run")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--target", default=str(ARTIFACT),
                        help="what the server serves (default: the CheXNet artifact)")
    args = parser.parse_args()

    import onnxruntime as ort

    ensure_artifact()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(ARTIFACT / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    ten = rng.standard_normal((10, 3, 224, 224)).astype(np.float32)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start([sys.executable, "-m", "model_agnostic", "serve", args.target,
                    "--port", str(port), "--threads", "16"], url, "/v2/health/ready", env)
    try:
        best_batch, bare_rate, rates, bare_samples = bare_throughput(session, image, args.requests)
        served_rate = triton_throughput(url, image, args.requests, 8)
        served_samples, bare_latency_samples = latencies(url, session, image, args.repeats)
        served_p50 = statistics.median(served_samples)
        bare_p50 = statistics.median(bare_latency_samples)
        encodings = binary_vs_json(url, ten, max(3, args.repeats // 4))
        binary_s, json_s = (statistics.median(encodings[k]) for k in ("binary", "json"))
        xray = XRAY.read_bytes()
        served_images = posted_throughput(url, "/v2/models/chexnet/predict", xray, "image/jpeg",
                                          args.image_requests, 8)
        metrics = _batch_metrics(url)
    finally:
        server.terminate()
        server.wait(30)
    del session

    naive_rate = naive_images = float("nan")
    naive_requests = max(16, args.requests // 3)
    if not args.skip_naive:
        port = free_port()
        naive_url = f"http://127.0.0.1:{port}"
        naive = start([sys.executable, str(NAIVE), str(port), str(args.threads)], naive_url,
                      "/health", env)
        try:
            naive_rate = posted_throughput(naive_url, "/predict", image.tobytes(),
                                           "application/octet-stream", naive_requests, 8)
            naive_images = posted_throughput(naive_url, "/predict_image", xray, "image/jpeg",
                                             args.image_requests, 8)
        finally:
            naive.terminate()
            naive.wait(30)

    lines = [
        f"Machine: {machine()}; ONNX Runtime / torch threads {args.threads}; server threads 16",
        "",
        "| measurement | ours | reference | ratio | target |",
        "|---|---|---|---|---|",
        f"| throughput, concurrency 8, tritonclient binary, vs bare ORT best batch "
        f"({best_batch}) | {served_rate:.2f} img/s | {bare_rate:.2f} img/s | "
        f"{served_rate / bare_rate:.2f} | >= 0.85 |",
        f"| latency p50, concurrency 1, vs bare ORT batch 1 | {served_p50 * 1e3:.1f} ms | "
        f"{bare_p50 * 1e3:.1f} ms | {served_p50 / bare_p50:.3f} | <= 1.10 |",
        f"| 10x3x224x224 FP32 request end to end, binary vs JSON | {binary_s * 1e3:.0f} ms | "
        f"{json_s * 1e3:.0f} ms | {json_s / binary_s:.1f}x faster | >= 5x |",
        f"| throughput, concurrency 8, vs naive Flask + PyTorch per request | "
        f"{served_rate:.2f} img/s | {naive_rate:.2f} img/s | {served_rate / naive_rate:.2f}x | "
        f">= 3x |",
        f"| X-ray files, concurrency 8, TenCrop, /predict vs naive Flask + torchvision + PyTorch | "
        f"{served_images:.2f} req/s | {naive_images:.2f} req/s | "
        f"{served_images / naive_images:.2f}x | >= 3x |",
        "",
        "Bare ORT images/s by batch: " + ", ".join(f"{b}: {r:.2f}" for b, r in rates.items()),
        f"Server batches (from /metrics): {metrics['backend_calls']:.0f} backend calls, "
        f"{metrics['rows']:.0f} rows, mean batch {metrics['mean_batch']:.2f}",
    ]
    text = "\n".join(lines)
    print(text)
    write_result("serving", {
        "threads": args.threads, "server_threads": 16, "concurrency": 8,
        "requests": args.requests, "repeats": args.repeats,
        "image_requests": args.image_requests, "served": str(args.target),
        "input_shape": list(image.shape),
        "bare_throughput": {"img_s_by_batch": rates, "samples_s_by_batch": bare_samples,
                            "best_batch": best_batch, "best_img_s": bare_rate},
        "served_throughput_img_s": served_rate,
        "throughput_over_bare": served_rate / bare_rate,
        "latency": {"settle_s": SETTLE_S, "served_samples_s": served_samples,
                    "bare_samples_s": bare_latency_samples, "served_p50_s": served_p50,
                    "bare_p50_s": bare_p50, "served_over_bare": served_p50 / bare_p50},
        "binary_vs_json": {"shape": list(ten.shape), "samples_s": encodings,
                           "median_s": {"binary": binary_s, "json": json_s},
                           "json_over_binary": json_s / binary_s},
        "xray_uploads": {"file": XRAY.name, "served_req_s": served_images},
        "naive": None if args.skip_naive else {
            "tensor_requests": naive_requests, "tensor_img_s": naive_rate,
            "xray_req_s": naive_images},
        "served_over_naive": served_rate / naive_rate,
        "xray_served_over_naive": served_images / naive_images,
        "server_batches": metrics,
        "targets": {"throughput_over_bare": ">= 0.85", "latency_served_over_bare": "<= 1.10",
                    "json_over_binary": ">= 5", "served_over_naive": ">= 3",
                    "xray_served_over_naive": ">= 3"}})


def _batch_metrics(url: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("model_agnostic_batch_size_count"):
            count = float(line.split()[-1])
        elif line.startswith("model_agnostic_batch_size_sum"):
            total = float(line.split()[-1])
    return {"backend_calls": count, "rows": total, "mean_batch": total / max(count, 1)}


if __name__ == "__main__":
    main()
