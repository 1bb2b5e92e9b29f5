"""JSON tensors: how fast we decode them, and our server against BentoML on the same ones.

1. Decoding one 1x3x224x224 FP32 infer request (nested and flat ``data``; flat with the
   ``"outputs": [{"name": ..., "parameters": {"binary_data": false}}]`` tritonclient sends) with
   ``protocol.decode_infer_request`` against ``orjson.loads`` + ``numpy.asarray`` of the
   same body, and against the standard library's ``json.loads`` alone, interleaved.
   Target: ours <= 1.2x orjson + numpy.
2. Throughput and latency of CheXNet's ONNX graph served by ``model-agnostic serve`` (v2
   JSON request) and by BentoML 1.4 with its adaptive batching (``tests/peers/
   bentoml_service.py``, its own JSON request), the same tensor, each payload built once,
   at concurrency 1 and 8, the two servers alternating. Target: ours >= 1.2x BentoML.

BentoML runs from its own virtual environment (``tests/peers/envs.py`` creates it).
Results: ``bench/results/json_path.json``.

Usage: python bench/json_path.py [--requests 64] [--repeats 40]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from common import RESULTS, ROOT, interleaved_samples, machine, medians, write_result
from ray_serving import closed_loop
from serving import ARTIFACT, ensure_artifact, free_port, wait_ready

sys.path.insert(0, str(ROOT))
from tests.peers.envs import ensure as ensure_env  # noqa: E402

SERVICE = ROOT / "tests" / "peers"  # bentoml_service.py


def decode_timings(image: np.ndarray, repeats: int) -> dict[str, Any]:
    from model_agnostic.protocol import decode_infer_request

    out: dict[str, Any] = {}
    flat = image.reshape(-1).tolist()
    as_json = [{"name": "probabilities", "parameters": {"binary_data": False}}]
    for form, data, outputs in (("nested", image.tolist(), None), ("flat", flat, None),
                                ("flat, outputs as tritonclient asks", flat, as_json)):
        doc: dict[str, Any] = {"inputs": [{"name": "image", "shape": list(image.shape),
                                           "datatype": "FP32", "data": data}]}
        if outputs:
            doc["outputs"] = outputs
        body = orjson.dumps(doc)
        assert np.array_equal(decode_infer_request(body).inputs["image"], image)
        samples = interleaved_samples({
            "ours": lambda b=body: decode_infer_request(b),
            "orjson_numpy": lambda b=body: np.asarray(
                orjson.loads(b)["inputs"][0]["data"], dtype=np.float32),
            "stdlib_json_loads": lambda b=body: json.loads(b),
        }, repeats)
        median = medians(samples)
        out[form] = {"body_bytes": len(body), "samples_s": samples, "median_s": median,
                     "ours_over_orjson_numpy": median["ours"] / median["orjson_numpy"]}
    return out


def poster(url: str, path: str, body: bytes) -> Any:
    host, port = url.removeprefix("http://").split(":")

    def make() -> Any:
        connection = http.client.HTTPConnection(host, int(port), timeout=600)

        def call() -> None:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{url}{path} answered {answer.status}")

        return call

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="per cell (default 64)")
    parser.add_argument("--repeats", type=int, default=40, help="decode samples (default 40)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ensure_artifact()
    onnx_path = ARTIFACT / "model.onnx"
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    decode = decode_timings(image, args.repeats)

    ours_port, bento_port = free_port(), free_port()
    env = dict(os.environ, MODEL_AGNOSTIC_ONNXRUNTIME_INTRA_OP_NUM_THREADS=str(args.threads),
               BENCH_ONNX=str(onnx_path), BENCH_THREADS=str(args.threads))
    ours = subprocess.Popen([sys.executable, "-m", "model_agnostic", "serve", str(ARTIFACT),
                             "--port", str(ours_port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bento_python = ensure_env("bentoml")
    bento = subprocess.Popen([str(Path(bento_python).parent / "bentoml"), "serve",
                              "bentoml_service:OnnxModel", "--port", str(bento_port)],
                             cwd=SERVICE, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        ours_url, bento_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{bento_port}"
        wait_ready(ours_url, ours, "/v2/health/ready")
        wait_ready(bento_url, bento, "/readyz")
        v2_body = orjson.dumps({"inputs": [{"name": "image", "shape": [1, 3, 224, 224],
                                            "datatype": "FP32", "data": image.tolist()}],
                                "outputs": [{"name": "probabilities"}]})  # as BentoML's
        bento_body = orjson.dumps({"image": image.tolist()})
        clients = {"ours": poster(ours_url, "/v2/models/chexnet/infer", v2_body),
                   "bentoml": poster(bento_url, "/predict", bento_body)}
        cells: list[dict[str, Any]] = []
        for concurrency in (1, 8):
            for system in ("ours", "bentoml", "ours", "bentoml"):  # alternating, twice
                cell = closed_loop(clients[system], args.requests, concurrency)
                cells.append({"system": system, "concurrency": concurrency, **cell})
                print(f"{system:<8} c={concurrency} {cell['rps']:.2f} req/s "
                      f"p50 {cell['p50'] * 1e3:.1f} ms", flush=True)
    finally:
        for process in (ours, bento):
            process.terminate()
        for process in (ours, bento):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    throughput = {}
    for concurrency in (1, 8):
        rate = {s: statistics.median(c["rps"] for c in cells
                                     if c["system"] == s and c["concurrency"] == concurrency)
                for s in ("ours", "bentoml")}
        throughput[str(concurrency)] = {**rate, "ours_over_bentoml": rate["ours"] / rate["bentoml"]}
    write_result("json_path", {
        "threads": args.threads, "requests_per_cell": args.requests,
        "payload_bytes": {"v2": len(v2_body), "bentoml": len(bento_body)},
        "decode": decode, "cells": cells, "throughput": throughput,
        "targets": {"decode_ours_over_orjson_numpy": "<= 1.2", "ours_over_bentoml": ">= 1.2"},
    })
    print(f"Machine: {machine()}")
    for form, row in decode.items():
        print(f"decode {form}: ours {row['median_s']['ours'] * 1e3:.1f} ms, orjson+numpy "
              f"{row['median_s']['orjson_numpy'] * 1e3:.1f} ms, ratio "
              f"{row['ours_over_orjson_numpy']:.2f}; stdlib json.loads "
              f"{row['median_s']['stdlib_json_loads'] * 1e3:.1f} ms")
    for concurrency, row in throughput.items():
        print(f"c={concurrency}: ours {row['ours']:.2f} req/s, BentoML {row['bentoml']:.2f}, "
              f"ratio {row['ours_over_bentoml']:.2f}")


if __name__ == "__main__":
    main()
