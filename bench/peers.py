"""Peers: our server against KServe's ModelServer and MLServer on the same ONNX model.

All three serve CheXNet's DenseNet-121 ONNX graph (the artifact's model.onnx, exported first
if missing, on seeded random weights) on ONNX Runtime with its default threads, as child
processes on loopback:

* ours: ``model-agnostic serve`` on the CheXNet artifact (16 server threads, its batching);
* KServe 0.21: ``kserve.ModelServer`` with tests/peers/kserve_server.py (one uvicorn worker);
* MLServer 1.7: ``mlserver start`` with tests/peers/mlserver_runtime (``--mlserver-workers``
  inference processes, MLServer's default 1).

KServe and MLServer run from their venvs (tests/peers/envs.py creates them on first use).
One client for all: ``http.client`` keep-alive connections, one per thread, POSTing the
same pre-encoded v2 request for one 1x3x224x224 FP32 tensor to ``/v2/models/chexnet/infer``:
as JSON to all three (MLServer takes JSON only), and with binary tensor data (in and out)
to ours and KServe. Each combination runs ``--requests`` requests at concurrency 1 and 8,
in ``--rounds`` rounds that alternate between the servers (the order rotating per round),
so background noise hits all alike. Throughput is requests over wall time, summed over the
rounds; latency percentiles pool every request's time. Every answer is checked (HTTP 200)
and one answer per combination is compared with ours (max abs difference). Every sample,
rate, percentile and ratio goes to bench/results/peers.json.

Usage: python bench/peers.py [--requests 48] [--rounds 3] [--mlserver-workers 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import machine, write_result
from serving import ARTIFACT, ensure_artifact

from model_agnostic._venv import marker
from tests.peers import envs
from tests.peers.servers import PeerServer, start_kserve, start_mlserver, start_ours

MODEL = "chexnet"
PATH = f"/v2/models/{MODEL}/infer"
CONCURRENCIES = (1, 8)
HEADER_LENGTH = "Inference-Header-Content-Length"


def json_request(image: np.ndarray) -> tuple[bytes, dict[str, str]]:
    doc = {"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                       "data": image.ravel().tolist()}],
           "outputs": [{"name": "probabilities"}]}
    return json.dumps(doc).encode(), {"Content-Type": "application/json"}


def binary_request(image: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({
        "inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": image.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    return header + image.tobytes(), {"Content-Type": "application/octet-stream",
                                      HEADER_LENGTH: str(len(header))}


def decode(body: bytes, headers: dict[str, str]) -> np.ndarray:
    """The ``probabilities`` output of a JSON or binary v2 answer."""
    split = headers.get(HEADER_LENGTH.lower())
    if split is None:
        (output,) = json.loads(body)["outputs"]
        return np.asarray(output["data"], np.float32).reshape(output["shape"])
    (output,) = json.loads(body[: int(split)])["outputs"]
    return np.frombuffer(body[int(split):], "<f4").reshape(output["shape"])


def post(connection: http.client.HTTPConnection, body: bytes,
         headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    connection.request("POST", PATH, body, headers)
    answer = connection.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{connection.host}:{connection.port}{PATH} answered "
                           f"{answer.status}: {data[:200]!r}")
    return data, {k.lower(): v for k, v in answer.getheaders()}


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=600)


def load(url: str, body: bytes, headers: dict[str, str], requests: int,
         concurrency: int) -> tuple[float, list[float]]:
    """(wall seconds, seconds of each request): ``requests`` POSTs from ``concurrency``
    threads, one keep-alive connection each, every connection warmed up first."""
    connections = [connect(url) for _ in range(concurrency)]
    for connection in connections:
        post(connection, body, headers)
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def worker(connection: http.client.HTTPConnection, count: int) -> None:
        start.wait()
        try:
            for _ in range(count):
                began = time.perf_counter()
                post(connection, body, headers)
                took = time.perf_counter() - began
                with lock:
                    latencies.append(took)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c, n)) for c, n in zip(connections, shares)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for connection in connections:
        connection.close()
    if errors:
        raise errors[0]
    return wall, latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def peer_versions() -> dict[str, list[str]]:
    """What each peer venv holds (its marker's ``pip freeze``), the interesting lines."""
    keep = ("kserve", "mlserver", "onnxruntime", "numpy", "fastapi", "uvicorn", "pydantic")
    found = {}
    for name in envs.SPECS:
        record = marker(envs.venv_dir(name))
        if record is None:
            continue
        found[name] = [line for line in record.get("installed", [])
                       if line.lower().split("==")[0] in keep]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=48,
                        help="requests per combination, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--mlserver-workers", type=int, default=1,
                        help="MLServer parallel_workers (its default: 1)")
    args = parser.parse_args()

    ensure_artifact()
    onnx_path = ARTIFACT / "model.onnx"
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    bodies = {"json": json_request(image), "binary": binary_request(image)}
    kserve_python, mlserver_python = envs.ensure("kserve"), envs.ensure("mlserver")

    servers: dict[str, PeerServer] = {}
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as work:
        folder = Path(work)
        try:
            servers["ours"] = start_ours(ARTIFACT, folder / "ours", MODEL,
                                         extra=["--threads", "16"])
            servers["kserve"] = start_kserve({MODEL: onnx_path}, folder / "kserve",
                                             python=kserve_python)
            servers["mlserver"] = start_mlserver({MODEL: onnx_path}, folder / "mlserver",
                                                 python=mlserver_python,
                                                 parallel_workers=args.mlserver_workers)
            result = measure(servers, bodies, args)
        finally:
            for server in servers.values():
                server.stop()
    report(result, args)


def measure(servers: dict[str, PeerServer], bodies: dict[str, tuple[bytes, dict[str, str]]],
            args: argparse.Namespace) -> dict[str, Any]:
    combos = {"ours json": ("ours", "json"), "kserve json": ("kserve", "json"),
              "mlserver json": ("mlserver", "json"), "ours binary": ("ours", "binary"),
              "kserve binary": ("kserve", "binary")}
    # One answer each, against ours over JSON: the same model, the same numbers.
    answers = {}
    for combo, (server, encoding) in combos.items():
        connection = connect(servers[server].url)
        answers[combo] = decode(*post(connection, *bodies[encoding]))
        connection.close()
    agreement = {combo: float(np.abs(array - answers["ours json"]).max())
                 for combo, array in answers.items()}
    extensions = {}
    for name, server in servers.items():
        connection = connect(server.url)
        connection.request("GET", "/v2")
        extensions[name] = json.loads(connection.getresponse().read()).get("extensions")
        connection.close()

    walls: dict[str, dict[int, list[float]]] = {c: {n: [] for n in CONCURRENCIES} for c in combos}
    samples: dict[str, dict[int, list[float]]] = {c: {n: [] for n in CONCURRENCIES} for c in combos}
    order = list(combos)
    for round_ in range(args.rounds):
        rotated = order[round_ % len(order):] + order[: round_ % len(order)]
        for concurrency in CONCURRENCIES:
            for combo in rotated:
                server, encoding = combos[combo]
                wall, latencies = load(servers[server].url, *bodies[encoding], args.requests,
                                       concurrency)
                walls[combo][concurrency].append(wall)
                samples[combo][concurrency].extend(latencies)
                print(f"round {round_ + 1}/{args.rounds} c={concurrency} {combo}: "
                      f"{args.requests / wall:.2f} req/s", file=sys.stderr)

    stats: dict[str, dict[int, dict[str, float]]] = {}
    for combo in combos:
        stats[combo] = {}
        for concurrency in CONCURRENCIES:
            total = sum(walls[combo][concurrency])
            values = samples[combo][concurrency]
            stats[combo][concurrency] = {
                "req_s": args.requests * len(walls[combo][concurrency]) / total,
                "p50_s": percentile(values, 50), "p99_s": percentile(values, 99),
                "median_s": statistics.median(values)}

    def ratio(ours: str, other: str, concurrency: int) -> float:
        return stats[ours][concurrency]["req_s"] / stats[other][concurrency]["req_s"]

    ratios = {
        f"{ours}_over_{other}_c{n}_{encoding}":
            ratio(f"{ours} {encoding}", f"{other} {encoding}", n)
        for n in CONCURRENCIES
        for ours, other, encoding in (("ours", "kserve", "json"), ("ours", "mlserver", "json"),
                                      ("ours", "kserve", "binary"))
    }
    return {"combos": combos, "stats": stats, "walls": walls, "samples": samples,
            "ratios": ratios, "agreement": agreement, "extensions": extensions,
            "logs": {name: server.log.name for name, server in servers.items()}}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    stats, ratios = result["stats"], result["ratios"]
    lines = [
        f"Machine: {machine()}",
        f"CheXNet DenseNet-121 ONNX, one 1x3x224x224 FP32 tensor per request, {args.requests} "
        f"requests x {args.rounds} rounds per cell; MLServer parallel_workers "
        f"{args.mlserver_workers}",
        "",
        "| server, encoding | c=1 req/s | c=1 p50 | c=1 p99 | c=8 req/s | c=8 p50 | c=8 p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for combo, cells in stats.items():
        one, eight = cells[1], cells[8]
        lines.append(
            f"| {combo} | {one['req_s']:.2f} | {one['p50_s'] * 1e3:.0f} ms | "
            f"{one['p99_s'] * 1e3:.0f} ms | {eight['req_s']:.2f} | {eight['p50_s'] * 1e3:.0f} ms | "
            f"{eight['p99_s'] * 1e3:.0f} ms |")
    lines += ["", "Throughput ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
              "Target: ours >= 3x KServe at concurrency 8 (JSON "
              f"{ratios['ours_over_kserve_c8_json']:.2f}x, binary "
              f"{ratios['ours_over_kserve_c8_binary']:.2f}x)",
              "Max abs difference from ours (JSON): " + ", ".join(
                  f"{k} {v:.1e}" for k, v in result["agreement"].items()),
              "Advertised /v2 extensions: " + json.dumps(result["extensions"])]
    print("\n".join(lines))
    write_result("peers", {
        "model": "CheXNet DenseNet-121 (examples/chexnet/artifacts/chexnet/model.onnx)",
        "input_shape": [1, 3, 224, 224], "requests": args.requests, "rounds": args.rounds,
        "concurrencies": list(CONCURRENCIES),
        "servers": {
            "ours": "model-agnostic serve ARTIFACT --threads 16 (ONNX Runtime default threads)",
            "kserve": "kserve.ModelServer, 1 uvicorn worker, tests/peers/kserve_server.py",
            "mlserver": f"mlserver start, parallel_workers {args.mlserver_workers}, "
                        "tests/peers/mlserver_runtime",
        },
        "peer_versions": peer_versions(),
        "combos": {k: list(v) for k, v in result["combos"].items()},
        "stats": result["stats"], "ratios": ratios,
        "samples_s": result["samples"], "walls_s": result["walls"],
        "agreement_max_abs": result["agreement"], "extensions": result["extensions"],
        "targets": {"ours_over_kserve_c8_json": ">= 3", "ours_over_kserve_c8_binary": ">= 3"},
    })


if __name__ == "__main__":
    main()
