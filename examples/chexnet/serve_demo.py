"""The last step of `make demo`: serve the CheXNet artifact and call it as a remote backend.

Starts `model-agnostic serve` on the artifact (a real server process, on a free port),
reads the model's Open Inference Protocol metadata, then runs the same CheXNet class with
`backend = "remote"` (only the config changes) on the sample X-ray, checks the answer
equals the local ONNX Runtime one, and stops the server. `make serve` keeps one running.

Usage: python examples/chexnet/serve_demo.py [ARTIFACT]
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from model_agnostic import load_model

HERE = Path(__file__).resolve().parent
XRAY = HERE / "data" / "nih_cxr14_00000001_000.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the server at {url} was not ready after {timeout:.0f} s")


def main() -> None:
    artifact = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "artifacts" / "chexnet"
    url = f"http://127.0.0.1:{free_port()}"
    print(f"$ model-agnostic serve {artifact} --port {url.rsplit(':', 1)[1]}")
    server = subprocess.Popen([sys.executable, "-m", "model_agnostic", "serve", str(artifact),
                               "--port", url.rsplit(":", 1)[1]])
    try:
        wait_ready(url, server)
        with urllib.request.urlopen(f"{url}/v2/models/chexnet", timeout=10) as answer:
            print(f"GET {url}/v2/models/chexnet ->", json.dumps(json.load(answer)))
        with tempfile.TemporaryDirectory() as scratch:
            config = Path(scratch) / "remote.toml"
            config.write_text(f'backend = "remote"\n\n[model]\nclass = '
                              f'"{(artifact / "model.py").as_posix()}:CheXNet"\n\n'
                              f'[remote]\nurl = "{url}"\nmodel_name = "chexnet"\n')
            remote = load_model(config)
            try:
                findings = remote.predict(XRAY)
                version = getattr(remote, "last_model_version", None)
            finally:
                getattr(remote, "close")()
        local = load_model(artifact).predict(XRAY)
        worst = max(abs(a["probability"] - b["probability"]) for a, b in zip(findings, local))
        print(f"RemoteModel via the server (model_version {version}), top 3 of 14:")
        for finding in findings[:3]:
            print(f"  {finding['finding']:<20} {finding['probability']:.4f}")
        print(f"same as local ONNX Runtime: max difference {worst:.1e}")
        print("To keep a server running: `make serve`, then open http://127.0.0.1:8000/ui")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
