"""perf_check: does ``model-agnostic perf`` measure what a bare closed loop measures?

Our server (``model-agnostic serve`` on the CheXNet artifact, 16 threads) and KServe 0.21's
ModelServer (tests/peers/kserve_server.py, one uvicorn worker) serve CheXNet's
DenseNet-121 ONNX graph as child processes on loopback. Each cell (server x encoding x
concurrency 1 and 8) is loaded two ways with the same 1x3x224x224 FP32 tensor, asking for
``probabilities``:

* perf: ``model_agnostic.perf.run`` (what ``model-agnostic perf chexnet --encoding E
  --data image.npy --output probabilities --concurrency C --requests N`` runs): one
  pooled-transport client per thread, every answer decoded;
* direct: bench/peers.py's ``load``, one ``http.client`` connection per thread POSTing
  the very bytes perf sends (taken from perf's own prepared client), answers read but not
  decoded.

Same bytes, because the payload is not the tool: an earlier version posted peers.py's
JSON (float64 reprs, 3.1 MB) against perf's (float32 reprs, 1.6 MB), and the two servers
parse those at different costs, so the cells disagreed for reasons that had nothing to
do with the measuring.

Both warm up one request per connection. ``--rounds`` rounds alternate the two (which goes
first flips each round) so background noise hits both; throughput is requests over wall
time summed over the rounds, latency percentiles pool every request. The claim: perf's
throughput is within 0.8 to 1.25 of the direct loop's in every cell. Everything goes to
bench/results/perf_check.json.

Usage: python bench/perf_check.py [--requests 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import machine, write_result
from peers import load, peer_versions
from serving import ARTIFACT, ensure_artifact

from model_agnostic.perf import Plan, Settings, prepare, run
from model_agnostic.perf.clients import HttpClient
from tests.peers import envs
from tests.peers.servers import PeerServer, start_kserve, start_ours

MODEL = "chexnet"
CONCURRENCIES = (1, 8)
ENCODINGS = ("binary", "json")
TARGET = (0.8, 1.25)  # perf / direct throughput, every cell


def measure_perf(url: str, encoding: str, npy: Path, requests: int,
                 concurrency: int) -> tuple[float, list[float], int]:
    """(wall seconds, seconds of each successful request, failed requests) of one perf level."""
    settings = Settings(url=url, model=MODEL, encoding=encoding, data={None: npy},
                        outputs=["probabilities"], timeout_s=600)
    (level,) = run(settings, Plan((concurrency,), requests=requests, warmup=1)).levels
    return level.wall_s, level.latencies_s, level.failed


def perf_request(url: str, encoding: str, npy: Path) -> tuple[bytes, dict[str, str]]:
    """The request body and headers perf sends in this cell, from its own client."""
    factory, _ = prepare(Settings(url=url, model=MODEL, encoding=encoding, data={None: npy},
                                  outputs=["probabilities"]))
    client = factory(0)
    assert isinstance(client, HttpClient)
    try:
        body, headers = client.bodies[0]
    finally:
        client.close()
    return body, dict(headers)


def summary(walls: list[float], samples: list[float], requests: int) -> dict[str, float]:
    return {"req_s": requests * len(walls) / sum(walls),
            "p50_s": float(np.percentile(samples, 50)), "p99_s": float(np.percentile(samples, 99))}


def measure(servers: dict[str, PeerServer], npy: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    some_url = next(iter(servers.values())).url
    bodies = {encoding: perf_request(some_url, encoding, npy) for encoding in ENCODINGS}
    cells = [(server, encoding, c) for c in CONCURRENCIES for server in servers
             for encoding in ENCODINGS]
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    failed = 0
    for round_ in range(args.rounds):
        for server, encoding, concurrency in cells:
            name = f"{server} {encoding} c{concurrency}"
            cell = raw.setdefault(name, {way: {"walls": [], "samples": []}
                                         for way in ("perf", "direct")})
            url = servers[server].url
            ways = ["perf", "direct"] if round_ % 2 == 0 else ["direct", "perf"]
            for way in ways:
                if way == "perf":
                    wall, latencies, errors = measure_perf(url, encoding, npy, args.requests,
                                                           concurrency)
                    failed += errors
                else:
                    wall, latencies = load(url, *bodies[encoding], args.requests, concurrency)
                cell[way]["walls"].append(wall)
                cell[way]["samples"].extend(latencies)
                print(f"round {round_ + 1}/{args.rounds} {name} {way}: "
                      f"{args.requests / wall:.2f} req/s", file=sys.stderr)
    stats = {name: {way: summary(d["walls"], d["samples"], args.requests)
                    for way, d in cell.items()} for name, cell in raw.items()}
    ratios = {name: s["perf"]["req_s"] / s["direct"]["req_s"] for name, s in stats.items()}
    return {"raw": raw, "stats": stats, "ratios": ratios, "failed": failed,
            "body_bytes": {encoding: len(body) for encoding, (body, _) in bodies.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32,
                        help="requests per cell, way and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()

    ensure_artifact()
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    kserve_python = envs.ensure("kserve")
    servers: dict[str, PeerServer] = {}
    with tempfile.TemporaryDirectory(prefix="perf-check-") as work:
        folder = Path(work)
        npy = folder / "image.npy"
        np.save(npy, image)
        try:
            servers["ours"] = start_ours(ARTIFACT, folder / "ours", MODEL,
                                         extra=["--threads", "16"])
            servers["kserve"] = start_kserve({MODEL: ARTIFACT / "model.onnx"},
                                             folder / "kserve", python=kserve_python)
            result = measure(servers, npy, args)
        finally:
            for server in servers.values():
                server.stop()
    report(result, args)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    stats, ratios = result["stats"], result["ratios"]
    low, high = TARGET
    met = all(low <= r <= high for r in ratios.values()) and result["failed"] == 0
    lines = [f"Machine: {machine()}",
             f"CheXNet 1x3x224x224 FP32, {args.requests} requests x {args.rounds} rounds per "
             "cell and way", "",
             "| cell | perf req/s | direct req/s | perf / direct | perf p50 | direct p50 |",
             "|---|---|---|---|---|---|"]
    for name, cell in stats.items():
        lines.append(f"| {name} | {cell['perf']['req_s']:.2f} | {cell['direct']['req_s']:.2f} | "
                     f"{ratios[name]:.2f} | {cell['perf']['p50_s'] * 1e3:.0f} ms | "
                     f"{cell['direct']['p50_s'] * 1e3:.0f} ms |")
    lines.append(f"\nperf / direct throughput {min(ratios.values()):.2f} to "
                 f"{max(ratios.values()):.2f} (target {low} to {high} in every cell: "
                 f"{'met' if met else 'NOT met'}); perf's failed requests: {result['failed']}")
    print("\n".join(lines))
    write_result("perf_check", {
        "model": "CheXNet DenseNet-121 (examples/chexnet/artifacts/chexnet/model.onnx)",
        "input_shape": [1, 3, 224, 224], "output": "probabilities",
        "requests": args.requests, "rounds": args.rounds,
        "concurrencies": list(CONCURRENCIES), "encodings": list(ENCODINGS),
        "servers": {
            "ours": "model-agnostic serve ARTIFACT --threads 16 (ONNX Runtime default threads)",
            "kserve": "kserve.ModelServer, 1 uvicorn worker, tests/peers/kserve_server.py",
        },
        "ways": {
            "perf": "model_agnostic.perf.run: one HTTPTransport connection per thread, "
                    "every answer decoded",
            "direct": "bench/peers.py load: one http.client connection per thread, "
                      "the same request bytes as perf, answers read, not decoded",
        },
        "body_bytes": result["body_bytes"],
        "peer_versions": {k: v for k, v in peer_versions().items() if k == "kserve"},
        "stats": stats, "ratios": ratios, "perf_failed": result["failed"],
        "samples_s": {name: {way: d["samples"] for way, d in cell.items()}
                      for name, cell in result["raw"].items()},
        "walls_s": {name: {way: d["walls"] for way, d in cell.items()}
                    for name, cell in result["raw"].items()},
        "target": {"perf_over_direct": f"{low} to {high}", "met": met},
    })


if __name__ == "__main__":
    main()
