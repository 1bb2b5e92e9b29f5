"""SIGTERM drains: the production server stops accepting, answers what it accepted, exits 0."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.serving_fixtures import png_bytes, write_tiny_model

pytest.importorskip("waitress")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v2/models/tiny/predict", png_bytes(),
                           {"Content-Type": "image/png"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_sigterm_finishes_accepted_requests_then_exits_cleanly(tmp_path: Path) -> None:
    config = write_tiny_model(tmp_path, serving='name = "tiny"')
    text = config.read_text().replace("tests.tiny_models:TinyNet", "tests.tiny_models:SlowTinyNet")
    config.write_text(text.replace("[onnxruntime]", "[model.options]\ndelay_s = 1.0\n\n[onnxruntime]"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "model_agnostic", "serve", str(config), "--port", str(port),
         "--drain-timeout", "20"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        with ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(post, port) for _ in range(4)]
            time.sleep(0.4)  # all four are being answered (each takes 1 s)
            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(OSError):  # no new connections once draining
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            statuses = [job.result(timeout=30) for job in pending]
        assert statuses == [200] * 4
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert "every accepted request was answered" in err
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
