"""Where Ray Serve's per-request cost goes: our server, the Ray adapter and an empty Ray
Serve deployment on the same tiny requests, one after another on keep-alive connections.

- ``live``: ``GET /v2/health/live`` (no model work);
- ``infer``: a 1x3x8x8 JSON infer request to the tiny model (one backend call);
- ``body``: a 600 KB ``PUT /v2/health/live`` (the body travels, then a 405);
- ``empty``: an async Ray Serve deployment that returns a constant, alone on the instance.

Median of the last 130 of 150 requests each. Writes bench/results/ray_overhead.md.

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
from common import RESULTS, ROOT, machine  # noqa: E402
from serving import free_port  # noqa: E402

sys.path.insert(0, str(ROOT))
from model_agnostic.adapters.ray_serve import deployment  # noqa: E402
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane  # noqa: E402
from tests.serving_fixtures import write_tiny_model  # noqa: E402

REQUESTS, WARMUP = 150, 20
INFER = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8],
                                "data": [0.5] * 192}]}).encode()
CASES = {"live": ("GET", "/v2/health/live", b"", {}),
         "infer": ("POST", "/v2/models/tiny/infer", INFER, {"Content-Type": "application/json"}),
         "body": ("PUT", "/v2/health/live", bytes(600 * 1024), {})}


def median_ms(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        connection.request(method, path, body, headers)
        connection.getresponse().read()
        times.append(time.perf_counter() - start)
    connection.close()
    return statistics.median(times[WARMUP:]) * 1e3


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
        for name, case in CASES.items():
            rows.append((name, median_ms(ours_port, *case), median_ms(ray_port, *case)))
        serve.delete("tiny")

        @serve.deployment(ray_actor_options={"num_cpus": 1})
        class Empty:
            async def __call__(self, request: object) -> Response:
                return Response(b'{"live":true}')

        serve.run(Empty.bind(), name="empty", route_prefix="/")
        empty = median_ms(ray_port, *CASES["live"])
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray_overhead.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
