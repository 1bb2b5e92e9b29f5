"""RemoteModel's own cost: ``RemoteModel.infer`` against tritonclient, the same requests.

Our server (``model-agnostic serve``, HTTP and gRPC on loopback, in a child process) serves
one model per ``--models`` entry: ``chexnet`` (the CheXNet artifact, exported first if
missing; one request is one preprocessed 1x3x224x224 FP32 image, asking for the output
``probabilities`` only) and ``digits`` (the shipped digits artifact; one 1x1x8x8 image,
output ``logits``: a request that costs the server almost nothing, so client overhead
shows). Four callers, one after another, round-robin with the order rotating every round,
so background noise hits all alike and none always follows the same one:

* ``remote_http``: ``RemoteModel(url, name, binary=True).infer(inputs, outputs=[...])``,
  its output checks (rows, dims, dtype, finite values) included;
* ``triton_http``: ``tritonclient.http`` with binary tensor data in and out;
* ``remote_grpc``: ``RemoteModel(address, name, transport="grpc").infer(...)``;
* ``triton_grpc``: ``tritonclient.grpc``.

Every caller starts from the numpy array, as ``RemoteModel.infer`` does: tritonclient's
``InferInput`` and ``set_data_from_numpy`` are part of each of its requests.

Each answer is compared with tritonclient's, bit for bit, once. The ratio is the median
time per request of RemoteModel over tritonclient's on the same protocol; target <= 1.05.
Every sample, median and ratio goes to bench/results/remote_overhead.json.

Usage: python bench/remote_overhead.py [--repeats 100] [--digits-repeats 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_result
from serving import ARTIFACT, ensure_artifact, free_port, start

DIGITS = ROOT / "examples" / "digits" / "artifact"
#: model name -> (artifact, input name, input shape, the output asked for)
MODELS = {"chexnet": (ARTIFACT, "image", (1, 3, 224, 224), "probabilities"),
          "digits": (DIGITS, "pixels", (1, 1, 8, 8), "logits")}
TARGET = 1.05


def callers(name: str, url: str, address: str, array: np.ndarray
            ) -> tuple[dict[str, Callable[[], np.ndarray]], list[Callable[[], Any]]]:
    """The four ways to send ``array`` to model ``name``, and what closes them."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    from model_agnostic.backends.remote import RemoteModel

    _, input_name, _, output = MODELS[name]
    inputs = {input_name: array}
    over_http = RemoteModel(url, name, binary=True)
    over_grpc = RemoteModel(address, name, transport="grpc")
    http_client = triton_http.InferenceServerClient(url.removeprefix("http://"),
                                                    network_timeout=300, connection_timeout=300)
    grpc_client = triton_grpc.InferenceServerClient(address)

    def triton(module: Any, client: Any, **binary: bool) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:  # from the array, as RemoteModel.infer starts
            tensor = module.InferInput(input_name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, **binary)
            wanted = module.InferRequestedOutput(output, **binary)
            return client.infer(name, [tensor], outputs=[wanted]).as_numpy(output)

        return call

    calls = {
        "remote_http": lambda: over_http.infer(inputs, outputs=[output])[output],
        "triton_http": triton(triton_http, http_client, binary_data=True),
        "remote_grpc": lambda: over_grpc.infer(inputs, outputs=[output])[output],
        "triton_grpc": triton(triton_grpc, grpc_client),
    }
    return calls, [over_http.close, over_grpc.close, http_client.close, grpc_client.close]


def rotated_samples(calls: dict[str, Callable[[], object]], repeats: int
                    ) -> dict[str, list[float]]:
    """Seconds of every call of each caller, round-robin with the order rotating every
    round, so no caller always follows the same one (a gRPC call right after an HTTP one
    may wake the server's other threads, for instance)."""
    names = list(calls)
    for name in names:  # warm up
        for _ in range(3):
            calls[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - started)
    return samples


def measure(name: str, url: str, address: str, repeats: int) -> dict[str, Any]:
    shape = MODELS[name][2]
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls, closers = callers(name, url, address, array)
    try:
        answers = {key: call() for key, call in calls.items()}
        equal = {protocol: answers[f"remote_{protocol}"].tobytes()
                 == answers[f"triton_{protocol}"].tobytes() for protocol in ("http", "grpc")}
        samples = rotated_samples(calls, repeats)
    finally:
        for close in closers:
            close()
    medians = {key: statistics.median(values) for key, values in samples.items()}
    means = {key: statistics.fmean(values) for key, values in samples.items()}
    ratios = {f"remote_over_triton_{p}": medians[f"remote_{p}"] / medians[f"triton_{p}"]
              for p in ("http", "grpc")}
    return {"input_shape": list(shape), "output": MODELS[name][3], "repeats": repeats,
            "answers_equal_bit_for_bit": equal, "samples_s": samples, "median_s": medians,
            "mean_s": means, "ratios": ratios,
            "targets_met": {key: value <= TARGET for key, value in ratios.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100, help="CheXNet rounds")
    parser.add_argument("--digits-repeats", type=int, default=1000, help="digits rounds")
    parser.add_argument("--models", default="chexnet,digits")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    args = parser.parse_args()
    names = [name for name in args.models.split(",") if name]
    unknown = set(names) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(MODELS)}")

    if "chexnet" in names:
        ensure_artifact()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, Any] = {}
    for name in names:
        port, grpc_port = free_port(), free_port()
        url, address = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
        server = start([sys.executable, "-m", "model_agnostic", "serve", str(MODELS[name][0]),
                        "--port", str(port), "--grpc-port", str(grpc_port), "--threads", "16",
                        "--set", f"serving.name={name}",
                        "--set", f"onnxruntime.intra_op_num_threads={args.threads}"],
                       url, "/v2/health/ready", env)
        try:
            repeats = args.repeats if name == "chexnet" else args.digits_repeats
            results[name] = measure(name, url, address, repeats)
        finally:
            server.terminate()
            server.wait(30)

    print(f"Machine: {machine()}; ONNX Runtime threads {args.threads}; server threads 16\n")
    print("| model | protocol | RemoteModel ms | tritonclient ms | ratio | target |")
    print("|---|---|---|---|---|---|")
    for name, result in results.items():
        for protocol in ("http", "grpc"):
            ours = result["median_s"][f"remote_{protocol}"]
            theirs = result["median_s"][f"triton_{protocol}"]
            print(f"| {name} | {protocol} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | "
                  f"{ours / theirs:.3f} | <= {TARGET} |")
        print(f"  answers equal bit for bit: {result['answers_equal_bit_for_bit']}")
    write_result("remote_overhead", {
        "threads": args.threads, "server_threads": 16, "models": results,
        "callers": {"remote_http": "RemoteModel(url, name, binary=True).infer",
                    "triton_http": "tritonclient.http, binary tensor data",
                    "remote_grpc": 'RemoteModel(address, name, transport="grpc").infer',
                    "triton_grpc": "tritonclient.grpc"},
        "targets": {"remote_over_triton_http": f"<= {TARGET}",
                    "remote_over_triton_grpc": f"<= {TARGET}"}})


if __name__ == "__main__":
    main()
