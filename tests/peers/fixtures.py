"""Pytest fixtures: KServe's ModelServer and MLServer as real processes, once per session.

Each server hosts every model of ``peer_models`` (CheXNet with seeded random weights,
the shipped digits artifact) on free loopback ports, from its cached venv
(tests/peers/envs.py; created on first use, which takes a minute or two). When the venv
cannot be created the tests that need it skip with the reason, except under CI
(``CI`` set), where they fail. Startup failures carry the server's log. tests/conftest.py
imports these fixtures so every test module can ask for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import envs
from tests.peers.servers import PeerServer, start_kserve, start_mlserver

ROOT = Path(__file__).resolve().parents[2]
DIGITS_ONNX = ROOT / "examples" / "digits" / "artifact" / "model.onnx"


def peer_python(name: str) -> Path:
    """The peer's venv interpreter; skip (fail under CI) when it cannot be created."""
    try:
        return envs.ensure(name)
    except envs.PeerEnvError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(f"no {name} venv: {exc}")


@pytest.fixture(scope="session")
def peer_models(chexnet_onnx_config: Path) -> dict[str, Path]:
    """What the peer servers host: model name -> ONNX file."""
    return {"chexnet": chexnet_onnx_config.parent / "chexnet.onnx", "digits": DIGITS_ONNX}


# The venv comes first: without it the test skips before CheXNet is exported.
@pytest.fixture(scope="session")
def kserve_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerServer]:
    """KServe 0.21 ``ModelServer`` (tests/peers/kserve_server.py) hosting ``peer_models``."""
    python = peer_python("kserve")
    models = request.getfixturevalue("peer_models")
    with start_kserve(models, tmp_path_factory.mktemp("kserve"), python=python) as server:
        yield server


@pytest.fixture(scope="session")
def mlserver_server(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerServer]:
    """MLServer 1.7 (tests/peers/mlserver_runtime) hosting ``peer_models``, inference in
    the server process (``parallel_workers: 0``: it starts faster)."""
    python = peer_python("mlserver")
    models = request.getfixturevalue("peer_models")
    with start_mlserver(models, tmp_path_factory.mktemp("mlserver"), python=python) as server:
        yield server
