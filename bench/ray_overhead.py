"""Where Ray Serve's per-request cost goes: our server, the Ray adapter and an empty Ray
Serve deployment on the same tiny requests, one after another on keep-alive connections.

- ``live``: ``GET /v2/health/live`` (no model work);
- ``infer``: a 1x3x8x8 JSON infer request to the tiny model (one backend call);
- ``body``: a 600 KB ``PUT /v2/health/live`` (the body travels, then a 405);
- ``empty``: an async Ray Serve deployment that returns a constant, alone on the instance.

Median of the last 130 of 150 requests each. Every request's time and the medians go to
bench/results/ray_overhead.json.

Usage: python bench/ray_overhead.py
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_result
from serving import free_port

sys.path.insert(0, str(ROOT))
from model_agnostic.adapters.ray_serve import deployment
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.serving_fixtures import write_tiny_model

REQUESTS, WARMUP = 150, 20
INFER = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8],
                                "data": [0.5] * 192}]}).encode()
CASES = {"live": ("GET", "/v2/health/live", b"", {}),
         "infer": ("POST", "/v2/models/tiny/infer", INFER, {"Content-Type": "application/json"}),
         "body": ("PUT", "/v2/health/live", bytes(600 * 1024), {})}


def samples_ms(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> list[float]:
    """Milliseconds of each of REQUESTS sequential requests (the first WARMUP included)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        connection.request(method, path, body, headers)
        connection.getresponse().read()
        times.append((time.perf_counter() - start) * 1e3)
    connection.close()
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times[WARMUP:])


def main() -> None:
    import ray
    from ray import serve
    from starlette.responses import Response

    config = write_tiny_model(Path(tempfile.mkdtemp()) / "tiny",
                              serving='name = "tiny"\nmax_queue_delay_ms = 0')
    options = ServerOptions(port=0)
    ours = BackgroundServer(build_dataplane(config, options=options), options).start()
    ours_port = int(ours.url.rsplit(":", 1)[1])
    ray_port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    serve.start(http_options={"host": "127.0.0.1", "port": ray_port})
    rows = []
    try:
        serve.run(deployment(config, ray_actor_options={"num_cpus": 1}), name="tiny",
                  route_prefix="/")
        samples: dict[str, dict[str, list[float]]] = {}
        for name, case in CASES.items():
            samples[name] = {"ours": samples_ms(ours_port, *case), "ray": samples_ms(ray_port, *case)}
            rows.append((name, median_ms(samples[name]["ours"]), median_ms(samples[name]["ray"])))
        serve.delete("tiny")

        @serve.deployment(ray_actor_options={"num_cpus": 1})
        class Empty:
            async def __call__(self, request: object) -> Response:
                return Response(b'{"live":true}')

        serve.run(Empty.bind(), name="empty", route_prefix="/")
        empty_samples = samples_ms(ray_port, *CASES["live"])
        empty = median_ms(empty_samples)
    finally:
        ours.stop()
        serve.shutdown()
        ray.shutdown()
    lines = [f"Machine: {machine()}, ray {ray.__version__}; median ms of the last "
             f"{REQUESTS - WARMUP} of {REQUESTS} sequential requests", "",
             "| request | ours | Ray adapter | difference |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} |" for name, a, b in rows]
    lines += ["", f"Empty Ray Serve deployment (constant answer), GET: {empty:.2f} ms"]
    text = "\n".join(lines)
    print(text)
    write_result("ray_overhead", {
        "ray": ray.__version__, "requests": REQUESTS, "warmup": WARMUP,
        "cases": {name: {"method": CASES[name][0], "path": CASES[name][1],
                         "body_bytes": len(CASES[name][2]), "ours_median_ms": a,
                         "ray_median_ms": b, "ray_minus_ours_ms": b - a,
                         "ours_samples_ms": samples[name]["ours"],
                         "ray_samples_ms": samples[name]["ray"]} for name, a, b in rows},
        "empty": {"median_ms": empty, "samples_ms": empty_samples,
                  "what": "async Ray Serve deployment returning a constant, GET"}})


if __name__ == "__main__":
    main()
