"""``model-agnostic serve --engine ray``: a local Ray instance started by the command, the
config's [ray] section applied, the same endpoints, and a clean stop on SIGTERM.

In its own file, so no Ray instance of test_ray_serve.py's is running beside these (its
module-wide one starts with address="local", so a cluster left here cannot capture it)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_agnostic.cli import main
from tests.conftest import ROOT
from tests.serving_fixtures import png_bytes, write_tiny_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, method: str, path: str, body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body, headers or {})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: Ray's own command line, installed beside this Python.
RAY = str(Path(sys.executable).with_name("ray"))


def serve_on_ray(config: Path, *extra: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    """``model-agnostic serve CONFIG --engine ray`` in a child process, once it is ready."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "model_agnostic", "serve", str(config), "--engine", "ray",
         "--port", str(port), *extra], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**ENV, **env})
    deadline = time.monotonic() + 180
    while True:
        try:
            if get(port, "GET", "/v2/health/ready")[0] == 200:
                return server, port
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError("Ray Serve did not become ready in 180 s: "
                                 + server.communicate()[1][-3000:])
        time.sleep(0.5)


def predict_then_stop(server: subprocess.Popen[str], port: int) -> None:
    """A predict answered by a replica; SIGTERM; a clean exit."""
    try:
        status, headers, body = get(port, "POST", "/v2/models/tiny/predict", png_bytes(),
                                    {"Content-Type": "image/png"})
        assert status == 200, body
        assert json.loads(body)["model_name"] == "tiny" and headers.get("x-replica")
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=120)
        assert server.returncode == 0, err[-3000:]
        assert "stopped" in err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


@pytest.mark.slow
def test_serve_engine_ray_starts_a_local_instance_answers_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    pytest.importorskip("ray.serve", reason="--engine ray needs 'ray[serve]'")
    config = write_tiny_model(tmp_path, serving='name = "tiny"')
    config.write_text(config.read_text() + "\n[ray]\nnum_replicas = 1\nnum_cpus = 0.5\n")
    predict_then_stop(*serve_on_ray(config))


@pytest.mark.slow
def test_serve_engine_ray_joins_a_running_cluster_and_leaves_it_running(
        tmp_path: Path) -> None:
    """A cluster started with ``ray start --head`` (token authentication on, as Ray 2.60
    starts it); the command joins it with ``--address``, and leaves it running on exit."""
    pytest.importorskip("ray.serve", reason="--engine ray needs 'ray[serve]'")
    gcs = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={gcs}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   env=ENV, check=True, capture_output=True, timeout=180)
    try:
        config = write_tiny_model(tmp_path, serving='name = "tiny"')
        server, port = serve_on_ray(config, "--address", f"127.0.0.1:{gcs}", "--replicas", "1",
                                    RAY_AUTH_MODE="token")
        predict_then_stop(server, port)
        status = subprocess.run([RAY, "status", f"--address=127.0.0.1:{gcs}"],
                                env={**ENV, "RAY_AUTH_MODE": "token"}, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr[-2000:]  # the cluster is still up
    finally:
        subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True, timeout=120)


@pytest.mark.slow
def test_an_unreachable_cluster_address_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("ray.serve", reason="--engine ray needs 'ray[serve]'")
    config = write_tiny_model(tmp_path)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "model_agnostic", "serve", str(config), "--engine", "ray",
         "--address", f"127.0.0.1:{free_port()}"], cwd=ROOT, env=ENV, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 1
    assert time.monotonic() - started < 30  # the 5 s check plus importing Ray; not minutes
    assert "could not join the Ray cluster at '127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_options_for_ray_need_the_ray_engine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_tiny_model(tmp_path)
    assert main(["serve", str(config), "--replicas", "2"]) == 1
    assert "--engine ray" in capsys.readouterr().err
    assert main(["serve", str(config), "--engine", "ray", "--no-ui"]) == 1
    assert "built-in engine only" in capsys.readouterr().err


def test_an_unknown_ray_key_in_the_config_is_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_tiny_model(tmp_path)
    config.write_text(config.read_text() + "\n[ray]\nreplicas = 2\n")
    assert main(["serve", str(config), "--engine", "ray"]) == 1
    assert "unknown key 'replicas' in [ray]" in capsys.readouterr().err
