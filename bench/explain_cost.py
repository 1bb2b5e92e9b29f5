"""What heatmaps cost: ``POST /explain`` against ``POST /predict`` on the same server.

CheXNet's artifact (TenCrop) served by ``model-agnostic serve`` in a subprocess; the sample
X-ray uploaded to ``/v2/models/chexnet/predict`` and to ``/explain`` (the default: the
three top findings, each with its 32x32 map and a PNG overlay, base64 in the JSON), and
to ``/explain?top_k=1&overlay=0`` for the maps alone, one request at a time, interleaved.
Target: ``/explain`` <= 1.3x ``/predict``. Results: ``bench/results/explain_cost.json``.

Usage: python bench/explain_cost.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys

from common import ROOT, interleaved_samples, machine, medians, write_result
from serving import ARTIFACT, ensure_artifact, free_port, start

XRAY = ROOT / "examples" / "chexnet" / "data" / "nih_cxr14_00000001_000.png"


def poster(port: int, path: str, body: bytes):  # noqa: ANN201
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call() -> int:
        connection.request("POST", path, body, {"Content-Type": "image/png"})
        answer = connection.getresponse()
        size = len(answer.read())
        if answer.status != 200:
            raise RuntimeError(f"{path} answered {answer.status}")
        return size

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    ensure_artifact()
    port = free_port()
    server = start([sys.executable, "-m", "model_agnostic", "serve", str(ARTIFACT),
                    "--port", str(port)], f"http://127.0.0.1:{port}", "/v2/health/ready",
                   dict(os.environ))
    body = XRAY.read_bytes()
    calls = {
        "predict": poster(port, "/v2/models/chexnet/predict", body),
        "explain": poster(port, "/v2/models/chexnet/explain", body),
        "explain_map_only": poster(port, "/v2/models/chexnet/explain?top_k=1&overlay=0", body),
    }
    try:
        sizes = {name: call() for name, call in calls.items()}
        samples = interleaved_samples(calls, args.repeats, warmup=2)
    finally:
        server.terminate()
        server.wait(30)
    median = medians(samples)
    ratios = {name: median[name] / median["predict"] for name in calls}
    write_result("explain_cost", {
        "repeats": args.repeats, "response_bytes": sizes, "samples_s": samples,
        "median_s": median, "over_predict": ratios, "target": {"explain_over_predict": "<= 1.3"},
    })
    print(f"Machine: {machine()}")
    for name in calls:
        print(f"{name:<17} {median[name] * 1e3:8.1f} ms  {ratios[name]:.3f}x predict  "
              f"{sizes[name]} bytes")


if __name__ == "__main__":
    main()
