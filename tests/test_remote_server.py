"""RemoteModel against our own server, end to end with CheXNet: the same class, no code change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model_agnostic import load_model
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.conftest import XRAY, assert_same_findings, chexnet_config

torch = pytest.importorskip("torch")
pytest.importorskip("waitress")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(chexnet_onnx_config: Path) -> Iterator[tuple[Any, str, Path]]:
    """CheXNet on ONNX Runtime, locally and on a background server."""
    with BackgroundServer(build_dataplane(chexnet_onnx_config), ServerOptions(port=0)) as server:
        yield load_model(chexnet_onnx_config), server.url, chexnet_onnx_config.parent


def config(folder: Path, backend: str, extra: str) -> Path:
    return chexnet_config(folder, backend, extra)


@pytest.mark.parametrize("binary", [
    pytest.param(True, id="binary", marks=pytest.mark.interop(
        client="RemoteModel", server="ours", transport="HTTP binary")),
    pytest.param(False, id="json", marks=pytest.mark.interop(
        client="RemoteModel", server="ours", transport="HTTP JSON")),
])
def test_remote_chexnet_equals_local_onnx_runtime(served: tuple[Any, str, Path],
                                                   binary: bool) -> None:
    local, url, folder = served
    remote = load_model(config(folder, "remote", f'[remote]\nurl = "{url}"\n'
                               f'model_name = "chexnet"\nbinary = {str(binary).lower()}'))
    try:
        for ours, theirs in zip(remote.predict_batch([XRAY, XRAY]), local.predict_batch([XRAY, XRAY]),
                                strict=True):
            assert_same_findings(ours, theirs, atol=1e-5)
    finally:
        remote.close()


def test_backend_swap_to_remote_is_config_only(served: tuple[Any, str, Path]) -> None:
    local, url, folder = served
    path = config(folder, "remote", f'[remote]\nurl = "{url}"\nmodel_name = "chexnet"')
    remote = load_model(path)
    try:
        from model_agnostic import RemoteModel

        assert isinstance(remote, RemoteModel)
        assert type(remote).hooks_class is type(local).hooks_class  # the very same user class
        result = remote.predict(XRAY)
        assert [f["finding"] for f in result] == [f["finding"] for f in local.predict(XRAY)]
    finally:
        remote.close()
