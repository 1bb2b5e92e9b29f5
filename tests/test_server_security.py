"""Access control and configurable limits: bearer tokens, model control, request limits."""

from __future__ import annotations

import http.client
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import ConfigError
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from tests.serving_fixtures import expected_logits, png_bytes, write_tiny_model

pytest.importorskip("waitress")

TOKEN = "s3cret-token-for-tests-only"
IMAGE = np.random.default_rng(11).random((1, 3, 8, 8), dtype=np.float32)
INFER = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                "data": IMAGE.ravel().tolist()}]}).encode()


def call(url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.request(method, path, body, headers or {})
        answer = connection.getresponse()
        raw = answer.read()
        headers_out = {k.lower(): v for k, v in answer.getheaders()}
        document = json.loads(raw) if headers_out.get("content-type", "").startswith(
            "application/json") else raw
        return answer.status, headers_out, document
    finally:
        connection.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A model repository served with a token and model control on."""
    root = tmp_path_factory.mktemp("secured")
    write_tiny_model(root / "models" / "tiny" / "1")
    (root / "token").write_text(TOKEN + "\n")
    options = ServerOptions(port=0, auth_token_file=str(root / "token"), model_control=True,
                            poll_interval_s=60)
    with BackgroundServer(build_dataplane(root / "models", options=options), options) as server:
        yield server.url


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-1234567"},
                                     {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}])
def test_inference_needs_the_bearer_token(secured: str, headers: dict[str, str]) -> None:
    for path, body in (("/v2/models/tiny/infer", INFER),
                       ("/v2/models/tiny/predict", png_bytes())):
        status, answer_headers, answer = call(secured, "POST", path, body, headers)
        assert status == 401, answer
        assert "Bearer" in answer_headers["www-authenticate"]
        assert "token" in answer["error"].lower()


def test_the_right_token_infers(secured: str) -> None:
    status, _, answer = call(secured, "POST", "/v2/models/tiny/infer", INFER, BEARER)
    assert status == 200, answer
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], (1, 4)),
                               expected_logits(IMAGE), rtol=1e-5)


def test_health_and_metadata_stay_open(secured: str) -> None:
    assert call(secured, "GET", "/v2/health/ready")[0] == 200
    assert call(secured, "GET", "/v2/models/tiny")[0] == 200


def test_model_control_unloads_and_loads_with_the_token(secured: str) -> None:
    assert call(secured, "POST", "/v2/repository/models/tiny/unload")[0] == 401
    status, _, answer = call(secured, "POST", "/v2/repository/models/tiny/unload", b"", BEARER)
    assert status == 200 and answer["versions"] == []
    assert call(secured, "POST", "/v2/models/tiny/infer", INFER, BEARER)[0] == 404
    status, _, answer = call(secured, "POST", "/v2/repository/models/tiny/load", b"", BEARER)
    assert status == 200 and answer["versions"] == ["1"]
    assert call(secured, "POST", "/v2/models/tiny/infer", INFER, BEARER)[0] == 200
    status, _, answer = call(secured, "POST", "/v2/repository/models/..%2F..%2Fetc/load", b"",
                             BEARER)
    assert status == 404


def test_model_control_is_off_by_default(tmp_path: Path) -> None:
    config = write_tiny_model(tmp_path, serving='name = "tiny"')
    with BackgroundServer(build_dataplane(config), ServerOptions(port=0)) as server:
        status, _, answer = call(server.url, "POST", "/v2/repository/models/tiny/unload", b"")
        assert status == 403 and "model_control" in answer["error"]
        assert call(server.url, "POST", "/v2/models/tiny/infer", INFER)[0] == 200  # no auth


def test_model_control_without_a_token_is_a_config_error(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_AGNOSTIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="model_control needs authentication"):
        build_dataplane(write_tiny_model(tmp_path), options=ServerOptions(model_control=True))


def test_token_from_the_environment_and_short_tokens_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_AUTH_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        build_dataplane(write_tiny_model(tmp_path))
    monkeypatch.setenv("MODEL_AGNOSTIC_AUTH_TOKEN", TOKEN)
    with BackgroundServer(build_dataplane(write_tiny_model(tmp_path, serving='name = "t"')),
                          ServerOptions(port=0)) as server:
        assert call(server.url, "POST", "/v2/models/t/infer", INFER)[0] == 401
        assert call(server.url, "POST", "/v2/models/t/infer", INFER, BEARER)[0] == 200


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds one tiny IDAT: never decoded here."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(
        b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = write_tiny_model(tmp_path_factory.mktemp("limited"), serving='name = "tiny"')
    options = ServerOptions(port=0, max_json_depth=8, max_elements=1000,
                            max_image_pixels=10_000)
    with BackgroundServer(build_dataplane(config, options=options), options) as server:
        yield server.url


@pytest.mark.parametrize(("body", "status", "words"), [
    (b'{"inputs": [[[[[[[[[[[1]]]]]]]]]]]}', 400, "limit of 8"),
    (json.dumps({"inputs": [{"name": "image", "shape": [2000, 3, 8, 8], "datatype": "FP32",
                             "data": [0.0]}]}).encode(), 400, "limit"),
])
def test_configured_request_limits(limited: str, body: bytes, status: int, words: str) -> None:
    got, _, answer = call(limited, "POST", "/v2/models/tiny/infer", body)
    assert got == status and words in answer["error"], answer
    assert call(limited, "POST", "/v2/models/tiny/infer", INFER)[0] == 200


def test_image_pixels_are_checked_from_the_header(limited: str) -> None:
    status, _, answer = call(limited, "POST", "/v2/models/tiny/predict",
                             _png_header_only(50_000, 50_000), {"Content-Type": "image/png"})
    assert status == 413 and "decompression bomb" in answer["error"], answer
    status, _, answer = call(limited, "POST", "/v2/models/tiny/predict",
                             _png_header_only(200, 100), {"Content-Type": "image/png"})
    assert status == 413 and "limit of 10,000" in answer["error"]
    assert call(limited, "POST", "/v2/models/tiny/predict", png_bytes(),
                {"Content-Type": "image/png"})[0] == 200


def test_the_token_file_gives_its_first_non_blank_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_AGNOSTIC_AUTH_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text("\n  s3cret-token-0123456789  \nrotated-token-9876543210\n", encoding="utf-8")
    assert ServerOptions(auth_token_file=str(path)).auth_token() == "s3cret-token-0123456789"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        ServerOptions(auth_token_file=str(path)).auth_token()
