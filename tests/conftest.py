"""Shared fixtures: tiny models, generated images, config files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# KServe's ModelServer and MLServer as real processes (tests/peers/fixtures.py), once per session
from tests.peers.fixtures import kserve_server, mlserver_server, peer_models  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
#: bench/conformance.py sets this: where to write the outcome of every interop-marked test.
INTEROP_RESULTS = "MODEL_AGNOSTIC_INTEROP_RESULTS"
_interop: list[dict[str, Any]] = []
TESTS = ROOT / "tests"
XRAY = ROOT / "examples" / "chexnet" / "data" / "nih_cxr14_00000001_000.png"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def jpeg_bytes(rng: np.random.Generator) -> bytes:
    """A 40x30 RGB JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a TOML config file into tmp_path and return its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("@TESTS@", TESTS.as_posix()), encoding="utf-8")
        return path

    return write


def run_without_torch(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``import torch`` fails."""
    prelude = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'onnxscript', 'safetensors'):\n"
        "    sys.modules[name] = None\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


CHEXNET_CLASS = (ROOT / "examples" / "chexnet" / "model.py").as_posix() + ":CheXNet"


def assert_same_findings(ours: Any, theirs: Any, atol: float) -> None:
    """Two CheXNet results: the same findings in the same order, probabilities within atol."""
    assert [f["finding"] for f in ours] == [f["finding"] for f in theirs]
    np.testing.assert_allclose([f["probability"] for f in ours],
                               [f["probability"] for f in theirs], rtol=0, atol=atol)


def predict_over_v1(local: Any, target: Path, image: Any, backend: str | None = None) -> Any:
    """``image`` predicted by ``local``'s class on the remote backend, over TF Serving's
    REST API (v1) of our server running ``target`` (served as "chexnet")."""
    from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane

    options = ServerOptions(port=0)
    plane = build_dataplane(target, backend=backend, options=options)
    with BackgroundServer(plane, options) as server:
        remote_class = type(local).hooks_class.with_backend("remote")
        with remote_class(url=server.url, model_name="chexnet", protocol="v1") as remote:
            return remote.predict(image)


def chexnet_config(folder: Path, backend: str, extra: str, tencrop: bool = True) -> Path:
    """A CheXNet config in ``folder`` for ``backend``, with ``extra`` TOML sections."""
    path = folder / f"{backend}.toml"
    path.write_text(f'backend = "{backend}"\n\n[model]\nclass = "{CHEXNET_CLASS}"\n\n'
                    f"[model.options]\ntencrop = {str(tencrop).lower()}\n\n{extra}\n",
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chexnet_onnx_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CheXNet exported to ONNX once per session (seeded random weights), served as "chexnet"."""
    pytest.importorskip("torch")
    from model_agnostic import export_onnx, load_model

    folder = tmp_path_factory.mktemp("chexnet-onnx")
    pytorch = load_model(chexnet_config(folder, "pytorch", "[pytorch]\nseed = 0"))
    export_onnx(pytorch, folder / "chexnet.onnx", XRAY)
    return chexnet_config(folder, "onnxruntime",
                          '[onnxruntime]\npath = "chexnet.onnx"\n\n[serving]\nname = "chexnet"')


@pytest.fixture(scope="session", autouse=True)
def _tritonclient_http_closes_once() -> Iterator[None]:
    """tritonclient.http's ``__del__`` closes the client again, from whichever thread the
    garbage collector runs on (a server's worker, here); gevent then refuses the foreign
    thread and pytest reports it in an unrelated test. Every test closes its clients on
    their own thread, so the second close is skipped; nothing else changes."""
    try:
        from tritonclient.http import InferenceServerClient
    except ImportError:
        yield
        return
    close, finalize = InferenceServerClient.close, InferenceServerClient.__del__

    def close_once(self: Any) -> None:
        if not self.__dict__.get("_closed_by_test"):
            self.__dict__["_closed_by_test"] = True
            close(self)

    InferenceServerClient.close = close_once  # type: ignore[method-assign]
    InferenceServerClient.__del__ = close_once  # type: ignore[method-assign]
    try:
        yield
    finally:
        InferenceServerClient.close, InferenceServerClient.__del__ = close, finalize  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Record each ``@pytest.mark.interop(client, server, transport)`` test's outcome."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    marker = item.get_closest_marker("interop")
    if marker is None or not os.environ.get(INTEROP_RESULTS):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
        elif report.failed:
            reason = str(report.longrepr).strip().splitlines()[-1][:300]
        _interop.append({**marker.kwargs, "test": item.nodeid, "outcome": report.outcome,
                         "reason": reason})


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(INTEROP_RESULTS)
    if target:
        Path(target).write_text(json.dumps(_interop, indent=2) + "\n", encoding="utf-8")
