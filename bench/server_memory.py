"""The server's memory, for sizing a container: ``model-agnostic serve`` on the CheXNet
artifact, RSS once ready (idle) and peak RSS (VmHWM) after rounds of 8 concurrent TenCrop
X-ray uploads to ``/predict``. Writes bench/results/server_memory.json.

Usage: python bench/server_memory.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import XRAY, machine, write_result
from serving import ARTIFACT, ensure_artifact, free_port, start

CONCURRENCY = 8


def status_mib(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"{field}:\s+(\d+) kB", text)
    assert found, field
    return int(found.group(1)) / 1024


def upload(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/v2/models/chexnet/predict", body,
                           {"Content-Type": "image/jpeg"})
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    ensure_artifact()
    port = free_port()
    server = start([sys.executable, "-m", "model_agnostic", "serve", str(ARTIFACT), "--port",
                    str(port)], f"http://127.0.0.1:{port}", "/v2/health/ready", dict(os.environ))
    try:
        idle = status_mib(server.pid, "VmRSS")
        body = XRAY.read_bytes()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for _ in range(args.rounds):
                statuses = list(pool.map(lambda _: upload(port, body), range(CONCURRENCY)))
                assert statuses == [200] * CONCURRENCY, statuses
        peak = status_mib(server.pid, "VmHWM")
        after = status_mib(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(60)
    text = (f"Machine: {machine()}\n\n| server RSS | MiB |\n|---|---:|\n"
            f"| idle, model loaded | {idle:.0f} |\n"
            f"| peak (VmHWM), {args.rounds} rounds of {CONCURRENCY} concurrent TenCrop X-rays "
            f"| {peak:.0f} |\n| after the load | {after:.0f} |")
    print(text)
    write_result("server_memory", {
        "rounds": args.rounds, "concurrency": CONCURRENCY, "upload": XRAY.name,
        "idle_rss_mib": idle, "peak_rss_mib": peak, "after_rss_mib": after})


if __name__ == "__main__":
    main()
