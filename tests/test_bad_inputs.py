"""Every bad input of the bad-input catalogue (shared/docs/bad-inputs.md) (HTTP layer, protocol, images) against the real server.

The server is started as a user starts it (``python -m model_agnostic serve CONFIG --port 0
--read-timeout 2 --max-request-bytes 1048576``, waitress) and spoken to over raw sockets, so
the bytes are exactly the ones each case names. After each case: the status the catalogue
asks for, a JSON ``{"error": "..."}`` naming the problem, ``/v2/health/live`` still 200 and
the next valid inference right (rtol 1e-5). The last test checks that the server
process is alive with its threads and open files back to their warm-up values and its RSS
within 20 %.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.serving_fixtures import expected_logits, png_bytes, write_tiny_model
from tests.test_library_bad_inputs import image_in_mode, png_header_only
from tests.tiny_models import TinyNet

pytest.importorskip("waitress")

LIMIT = 1 << 20  # --max-request-bytes
READ_TIMEOUT = 2.0  # --read-timeout
INFER = "/v2/models/tiny/infer"
PREDICT = "/v2/models/tiny/predict"
HEADER = "Inference-Header-Content-Length"
IMAGE = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
OMIT = object()  # a tensor key to leave out, or a header not to send


# ----------------------------------------------------------------------------- the server
@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    baseline: dict[str, int]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``serve config.toml``: the tiny model, warmed up, with its footprint recorded."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    config = write_tiny_model(folder, serving='name = "tiny"\nmax_queue_delay_ms = 1.0')
    with serving(folder / "server.log", str(config), "--read-timeout", str(READ_TIMEOUT),
                 "--max-request-bytes", str(LIMIT)) as (process, port):
        _warm_up(port)
        yield Served(process, port, folder / "server.log", process_stats(process.pid))


@contextmanager
def serving(log: Path, *arguments: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m model_agnostic serve ARGUMENTS --port 0``, its output in ``log``; the
    process and its port once ready; SIGTERM at the end."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "model_agnostic", "serve", *arguments, "--port", "0"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        yield process, _wait_until_ready(process, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        found = re.search(r"on http://127\.0\.0\.1:(\d+) ", log.read_text(errors="replace"))
        if found and exchange(int(found[1]), request("GET", "/v2/health/ready")).status == 200:
            return int(found[1])
        time.sleep(0.05)
    raise AssertionError("the server was not ready in 90 s: " + log.read_text(errors="replace"))


def _warm_up(port: int) -> None:
    """Every case twice and the largest 16 times, with valid requests, on the server's 16
    threads, before the baseline.

    Each waitress thread gets its own malloc arena, which keeps the high-water mark of the
    largest request it has answered; the baseline is taken once every arena is there, so
    the last test catches what grows per request (a leak), not the allocator's first fill.
    """
    valid = [request("POST", INFER, infer_body()), binary_request(IMAGE),
             request("POST", PREDICT, png_bytes(), {"Content-Type": "image/png"})]
    cases = [param.values[0] for param in CASES]
    largest = [param.values[0] for param in CASES if param.id in LARGEST]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda raw: exchange(port, raw), (valid * 4 + cases) * 2 + largest * 16))


#: The cases that allocate the most while they are answered (0.1 to 1 MiB bodies).
LARGEST = {"nested-100k-arrays", "nested-100k-objects", "nested-100k-balanced",
           "body-over-the-limit", "image-over-the-limit", "chunked-body-over-the-limit",
           "multipart-huge-field", "100k-char-url"}


def process_stats(pid: int) -> dict[str, int]:
    """Threads, resident memory and open files of ``pid``; empty without Linux's /proc."""
    if not Path(f"/proc/{pid}/status").exists():
        return {}
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"threads": int(fields["Threads"]), "rss_kb": int(fields["VmRSS"].split()[0]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


# ------------------------------------------------------------------------- raw HTTP I/O
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        """The message of a JSON ``{"error": "..."}`` body (asserted to be one)."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        document = json.loads(self.body)
        assert isinstance(document, dict) and set(document) == {"error"}, document
        assert isinstance(document["error"], str) and document["error"]
        return str(document["error"])

    def json(self) -> Any:
        assert self.status == 200, self.body[:500]
        return json.loads(self.body)


def request(method: str, path: str, body: bytes = b"",
            headers: dict[str, Any] | None = None) -> bytes:
    """The exact bytes of one HTTP/1.1 request; ``Content-Length`` is added unless given,
    ``OMIT``ted, or the body is chunked."""
    fields: dict[str, Any] = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
    if "Content-Length" not in fields and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not OMIT)
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def exchange(port: int, raw: bytes, timeout: float = 15) -> Answer:
    """Send ``raw`` and read one response; a server that answers before the whole body is
    sent (an early 413) is still heard."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_answer(sock.makefile("rb"))


def read_answer(stream: BinaryIO) -> Answer:
    answer = http.client.HTTPResponse(_Stream(stream))  # type: ignore[arg-type]
    answer.begin()
    headers = {k.lower(): v for k, v in answer.getheaders()}
    return Answer(answer.status, headers, answer.read())


class _Unclosable(io.BytesIO):
    """Several pipelined responses: HTTPResponse closes its stream after each one."""

    def close(self) -> None:
        pass


class _Stream:
    """What HTTPResponse needs of a socket: the stream to read the response from."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def makefile(self, mode: str) -> BinaryIO:
        return self.stream


# ------------------------------------------------------------------------ valid requests
TENSOR: dict[str, Any] = {"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32",
                          "data": [0.5] * 192}


def tensor(**changes: Any) -> dict[str, Any]:
    entry = {**TENSOR, **changes}
    return {key: value for key, value in entry.items() if value is not OMIT}


def infer_body(*tensors: dict[str, Any], **fields: Any) -> bytes:
    inputs = list(tensors) or [{"name": "image", "shape": list(IMAGE.shape),
                                "datatype": "FP32", "data": IMAGE.ravel().tolist()}]
    return json.dumps({"inputs": inputs, **fields}).encode()


def binary_request(array: np.ndarray, size: Any = None, tail: bytes | None = None,
                   length: Any = None, **fields: Any) -> bytes:
    """A binary-extension request; ``size``, ``tail`` and ``length`` override the right ones."""
    entry = {"name": "image", "shape": list(array.shape), "datatype": "FP32",
             "parameters": {"binary_data_size": array.nbytes if size is None else size}}
    header = json.dumps({"inputs": [entry], **fields}).encode()
    body = header + (array.tobytes() if tail is None else tail)
    length = str(len(header)) if length is None else length
    return request("POST", INFER, body, {HEADER: length,
                                         "Content-Type": "application/octet-stream"})


def assert_right_logits(outputs: list[dict[str, Any]], image: np.ndarray) -> None:
    (output,) = outputs
    assert output["name"] == "logits" and output["shape"] == [len(image), 4]
    np.testing.assert_allclose(np.reshape(output["data"], (len(image), 4)),
                               expected_logits(image), rtol=1e-5, atol=1e-6)


def assert_alive(port: int) -> None:
    """Health answers and the next valid inference is right."""
    live = exchange(port, request("GET", "/v2/health/live"))
    assert (live.status, json.loads(live.body)) == (200, {"live": True})
    assert_right_logits(exchange(port, request("POST", INFER, infer_body())).json()["outputs"],
                        IMAGE)


# ------------------------------------------------------------------------ bad bodies
def chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def form(*parts: tuple[str, bytes], boundary: str = "XbOuNdArY") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of ``(part headers, content)`` pairs, and its header."""
    body = b"".join(f"--{boundary}\r\n{head}\r\n\r\n".encode() + content + b"\r\n"
                    for head, content in parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def file_part(content: bytes, filename: str = "a.png",
              content_type: str = "image/png") -> tuple[str, bytes]:
    head = f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
    return head + f"Content-Type: {content_type}", content


def field_part(content: bytes, name: str = "note") -> tuple[str, bytes]:
    return f'Content-Disposition: form-data; name="{name}"', content


def patched(image: Image.Image, fmt: str, offset: int, value: bytes) -> bytes:
    """``image`` saved as ``fmt`` with its header's size field overwritten."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = bytearray(buffer.getvalue())
    data[offset: offset + len(value)] = value
    return bytes(data)


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
                    ).save(buffer, "JPEG")
    return buffer.getvalue()


def corrupt_png_crc() -> bytes:
    data = bytearray(png_bytes())
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(data)


def nested(depth: int) -> Any:
    value: Any = 0.5
    for _ in range(depth):
        value = [value]
    return value


def huge_int_shape() -> bytes:
    return (b'{"inputs": [{"name": "image", "datatype": "FP32", "data": [0.5], "shape": ['
            + b"9" * 5000 + b"]}]}")


MULTIPART_TO_INFER = form(file_part(png_bytes()))
PARTS_5000 = form(*[field_part(b"x", f"f{i}") for i in range(5000)])
BIG_FIELD = form(field_part(b"y" * LIMIT), file_part(png_bytes()))
NO_FILE = form(field_part(b"hello"))
TWO_FILES = form(file_part(png_bytes()), file_part(png_bytes(1), "b.png"))
EMPTY_FILE = form(file_part(b""))
TEXT_AS_JPG = form(file_part(b"hello, I am a text file, not a JPEG\n", "photo.jpg",
                             "image/jpeg"))
BOMB_FILE = form(file_part(png_header_only(50000, 50000), "bomb.png"))
MULTIPART = {"Content-Type": "multipart/form-data; boundary=XbOuNdArY"}
BOOL_TENSOR = {"name": "image", "shape": [1, 3, 8, 8], "datatype": "BOOL",
               "parameters": {"binary_data_size": 192}}
BYTES_TENSOR = {"name": "image", "shape": [1], "datatype": "BYTES",
                "parameters": {"binary_data_size": 8}}


def binary_body(entry: dict[str, Any], tail: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [entry]}).encode()
    return header + tail, {HEADER: str(len(header))}


def case(method: str, path: str, body: bytes | tuple[bytes, dict[str, str]],
         headers: dict[str, Any] | None, status: int, *words: str, id: str) -> Any:
    """One bad request: what to send, the status and the words its error must contain."""
    if isinstance(body, tuple):
        body, extra = body
        headers = {**extra, **(headers or {})}
    return pytest.param(request(method, path, body, headers), status, words, id=id)


ONE = IMAGE[:1]
HTTP_CASES = [
    case("POST", INFER, b"", {}, 400, "empty", id="empty-body"),
    case("POST", INFER, b"", {"Content-Length": OMIT}, 400, "empty",
         id="no-body-no-content-length"),
    case("POST", INFER, infer_body()[:-9], {}, 400, "not valid JSON", id="truncated-json"),
    case("POST", INFER, b"{not json}", {}, 400, "not valid JSON", id="invalid-json"),
    case("POST", INFER, b"{'inputs': []}", {}, 400, "not valid JSON", id="single-quoted-json"),
    case("POST", INFER, b"[]", {}, 400, "must be a JSON object", "array", id="json-array"),
    case("POST", INFER, b'"inputs"', {}, 400, "must be a JSON object", id="json-string"),
    case("POST", INFER, b"42", {}, 400, "must be a JSON object", id="json-number"),
    case("POST", INFER, b"null", {}, 400, "must be a JSON object", id="json-null"),
    case("POST", INFER, b"true", {}, 400, "must be a JSON object", id="json-true"),
    case("POST", INFER, infer_body() + b"xyz", {}, 400, HEADER, id="data-after-the-json"),
    case("POST", INFER, b"\xef\xbb\xbf" + infer_body(), {}, 400, "BOM", id="utf8-bom"),
    case("POST", INFER, b'{"inputs": "\xff\xfe"}', {}, 400, "UTF-8", id="invalid-utf8"),
    case("POST", INFER, b'{"id": "\xed\xa0\x80"}', {}, 400, "UTF-8", id="utf8-surrogate"),
    case("POST", INFER, b'{"id": "\xc0\xaf"}', {}, 400, "UTF-8", id="utf8-overlong"),
    case("POST", INFER, '{"inputs": []}'.encode("utf-16"), {}, 400, "UTF-8", id="utf16-body"),
    case("POST", INFER, b"[" * 100_000, {}, 400, "nested", "limit", id="nested-100k-arrays"),
    case("POST", INFER, b'{"a":' * 100_000, {}, 400, "nested", id="nested-100k-objects"),
    case("POST", INFER, b"[" * 100_000 + b"]" * 100_000, {}, 400, "nested",
         id="nested-100k-balanced"),
    case("POST", INFER, infer_body(tensor(data=nested(70))), {}, 400, "nested", "64",
         id="nested-70-in-data"),
    case("POST", INFER, infer_body(tensor(data=np.full((1, 3, 8, 8, 1), 0.5).tolist())), {},
         400, "nested deeper", id="data-nested-deeper-than-shape"),
    case("POST", INFER, png_bytes(), {"Content-Type": "image/png"}, 400, "JSON",
         id="image-content-type-to-infer"),
    case("POST", INFER, MULTIPART_TO_INFER, {}, 400, "JSON", id="multipart-to-infer"),
    case("POST", PREDICT, png_bytes(), {"Content-Type": "multipart/mixed; boundary=x"}, 415,
         "multipart/form-data", id="multipart-mixed-to-predict"),
    case("POST", PREDICT, png_bytes(), {"Content-Type": "multipart/form-data"}, 400,
         "boundary", id="multipart-without-boundary"),
    case("POST", PREDICT, infer_body(), {"Content-Type": "application/json"}, 400,
         "not a recognised image", id="json-to-predict"),
    case("POST", INFER, b" " * (LIMIT + 1), {}, 413, "over the limit", str(LIMIT),
         id="body-over-the-limit"),
    case("POST", PREDICT, b"\x89PNG" + b"\0" * LIMIT, {}, 413, "over the limit",
         id="image-over-the-limit"),
    case("POST", INFER, chunked(b" " * (LIMIT + 100)), {"Transfer-Encoding": "chunked"}, 413,
         "over the limit", id="chunked-body-over-the-limit"),
    case("POST", PREDICT, PARTS_5000, {}, 413, "5000 parts", "16", id="multipart-5000-parts"),
    case("POST", PREDICT, BIG_FIELD, {}, 413, "over the limit", id="multipart-huge-field"),
    case("POST", PREDICT, NO_FILE, {}, 400, "0 file parts", id="multipart-no-file"),
    case("POST", PREDICT, TWO_FILES, {}, 400, "2 file parts", id="multipart-two-files"),
    case("POST", PREDICT, EMPTY_FILE, {}, 400, "empty", id="multipart-empty-file"),
    case("POST", PREDICT, b"--XbOuNdArY\r\n\r\nx", MULTIPART, 400, "malformed",
         id="multipart-unterminated"),
    case("POST", PREDICT, b"no parts here", MULTIPART, 400, "malformed",
         id="multipart-without-parts"),
    case("PUT", INFER, infer_body(), {}, 405, "PUT", "POST", id="put-infer"),
    case("GET", INFER, b"", {}, 405, "POST", id="get-infer"),
    case("GET", PREDICT, b"", {}, 405, "POST", id="get-predict"),
    case("DELETE", "/v2/health/live", b"", {}, 405, "GET", id="delete-live"),
    case("POST", "/v2/health/live", b"{}", {}, 405, "GET", id="post-live"),
    case("OPTIONS", INFER, b"", {}, 405, "POST", id="options-infer"),
    case("PATCH", "/v2", b"{}", {}, 405, "GET", id="patch-server-metadata"),
    case("GET", "/v2/repository/index", b"", {}, 405, "POST", id="get-repository-index"),
    case("GET", "/v2/models/" + "a" * 100_000, b"", {}, 404, "no model", id="100k-char-url"),
]

PROTOCOL_CASES = [
    case("POST", "/v2/models/nope/infer", infer_body(), {}, 404, "nope", "tiny",
         id="unknown-model-infer"),
    case("POST", "/v2/models/nope/predict", png_bytes(), {}, 404, "nope",
         id="unknown-model-predict"),
    case("GET", "/v2/models/nope", b"", {}, 404, "nope", id="unknown-model-metadata"),
    case("GET", "/v2/models/nope/ready", b"", {}, 404, "nope", id="unknown-model-ready"),
    case("POST", "/v2/models/tiny/versions/7/infer", infer_body(), {}, 404, "'7'",
         "served versions", id="unknown-version-infer"),
    case("GET", "/v2/models/tiny/versions/0", b"", {}, 404, "'0'", id="unknown-version-meta"),
    case("GET", "/v2/models/%00/ready", b"", {}, 404, "no model", id="model-name-nul"),
    case("GET", "/v2/models/..%2F..%2Fetc/ready", b"", {}, 404, "no endpoint",
         id="model-name-dotdot"),
    case("POST", "/v2/models/tiny/versions/..%2F1/infer", infer_body(), {}, 404, "no endpoint",
         id="version-dotdot"),
    case("POST", "/v2/models/%2e%2e/infer", infer_body(), {}, 404, "no model",
         id="model-name-is-dotdot"),
    case("POST", "/v1/models/tiny:predict", b"{}", {}, 400, "exactly one of 'instances'",
         id="v1-predict-without-instances"),
    case("POST", "/v1/models/nope:predict", b"{}", {}, 404, "nope", id="v1-unknown-model"),
    case("POST", "/v3/models/tiny/infer", infer_body(), {}, 404, "no endpoint", id="v3-route"),
    case("POST", "/v2/models/tiny/generate", b"{}", {}, 404, "no endpoint",
         id="v2-generate-extension"),
    case("POST", "/v2/models/tiny/versions/1/versions/1/infer", infer_body(), {}, 404,
         "no endpoint", id="version-twice"),
    case("POST", "/v2/repository/models/tiny/unload", b"", {}, 403, "model control is off",
         id="model-control-off"),
    case("POST", INFER, b"{}", {}, 400, "'inputs'", id="no-inputs"),
    case("POST", INFER, b'{"inputs": {}}', {}, 400, "'inputs'", "list", id="inputs-object"),
    case("POST", INFER, b'{"inputs": []}', {}, 400, "non-empty", id="inputs-empty"),
    case("POST", INFER, b'{"inputs": [42]}', {}, 400, "must be an object", id="input-number"),
    case("POST", INFER, infer_body(tensor(name=OMIT)), {}, 400, "'name'", id="missing-name"),
    case("POST", INFER, infer_body(tensor(name="")), {}, 400, "'name'", "non-empty",
         id="empty-name"),
    case("POST", INFER, infer_body(tensor(name=42)), {}, 400, "'name'", id="name-number"),
    case("POST", INFER, infer_body(tensor(shape=OMIT)), {}, 400, "'shape'", id="missing-shape"),
    case("POST", INFER, infer_body(tensor(datatype=OMIT)), {}, 400, "'datatype'",
         id="missing-datatype"),
    case("POST", INFER, infer_body(tensor(data=OMIT)), {}, 400, "'data'", id="missing-data"),
    case("POST", INFER, infer_body(tensor(datatype="FLOAT32")), {}, 400, "unknown datatype",
         "FLOAT32", id="unknown-datatype"),
    case("POST", INFER, infer_body(tensor(datatype="fp32")), {}, 400, "unknown datatype",
         id="lowercase-datatype"),
    case("POST", INFER, infer_body(tensor(datatype="BF16")), {}, 400, "unknown datatype",
         id="bf16-datatype"),
    case("POST", INFER, infer_body(tensor(datatype=32)), {}, 400, "unknown datatype",
         id="datatype-number"),
    case("POST", INFER, infer_body(tensor(datatype="FP64")), {}, 400, "FP64", "FP32",
         id="wrong-datatype-for-model"),
    case("POST", INFER, infer_body(tensor(datatype="INT64", data=[1] * 192)), {}, 400, "INT64",
         id="integer-datatype-for-model"),
    case("POST", INFER, infer_body(tensor(data=[0.5] * 5)), {}, 400,
         "expected 192 elements for shape [1, 3, 8, 8], got 5", id="too-few-elements"),
    case("POST", INFER, infer_body(tensor(data=[0.5] * 193)), {}, 400, "got 193",
         id="too-many-elements"),
    case("POST", INFER, infer_body(tensor(data=[])), {}, 400, "got 0", id="no-elements"),
    case("POST", INFER, infer_body(tensor(shape=[2, 3, 8, 8], data=[[0.5] * 192, [0.5] * 191])),
         {}, 400, "ragged", "expected 384 elements", "got 383", id="ragged-data"),
    case("POST", INFER, infer_body(tensor(shape=[2, 3, 8, 8], data=[[0.5] * 193, [0.5] * 191])),
         {}, 400, "ragged", id="ragged-data-right-total"),
    case("POST", INFER, infer_body(tensor(data=[[0.5] * 96, 0.5])), {}, 400, "mixes",
         id="data-mixes-arrays-and-values"),
    case("POST", INFER, infer_body(tensor(data=np.full((1, 8, 24), 0.5).tolist())), {}, 400,
         "do not match", id="data-nested-unlike-shape"),
    case("POST", INFER, infer_body(tensor(data=0.5)), {}, 400, "must be a JSON array",
         id="data-scalar"),
    case("POST", INFER, infer_body(tensor(data=["0.5"] * 192)), {}, 400, "must be numbers",
         id="string-in-fp32"),
    case("POST", INFER, infer_body(tensor(data=[True] * 192)), {}, 400, "must be numbers",
         id="bool-in-fp32"),
    case("POST", INFER, infer_body(tensor(data=[{}] * 192)), {}, 400, "must be numbers",
         id="object-in-fp32"),
    case("POST", INFER, infer_body(tensor(data=[10 ** 400] * 192)), {}, 400, "too large",
         id="400-digit-integer-in-fp32"),
    case("POST", INFER, infer_body(tensor(shape=[1, 3, 64])), {}, 400, "rank 3",
         "model expects [-1, 3, 8, 8]", id="wrong-rank"),
    case("POST", INFER, infer_body(tensor(shape=[192])), {}, 400, "rank 1", id="rank-1"),
    case("POST", INFER, infer_body(tensor(shape=[], data=[0.5])), {}, 400, "rank 0",
         id="scalar-shape"),
    case("POST", INFER, infer_body(tensor(shape=[1, 4, 8, 8], data=[0.5] * 256)), {}, 400,
         "4 in dimension 1", "model expects", id="wrong-fixed-dimension"),
    case("POST", INFER, infer_body(tensor(shape=[1, 3, 8, 9], data=[0.5] * 216)), {}, 400,
         "9 in dimension 3", id="wrong-last-dimension"),
    case("POST", INFER, infer_body(tensor(shape=[-1, 3, 8, 8])), {}, 400, "negative",
         id="negative-dimension"),
    case("POST", INFER, infer_body(tensor(shape=[1.0, 3, 8, 8])), {}, 400,
         "non-negative integers", id="float-dimension"),
    case("POST", INFER, infer_body(tensor(shape=[True, 3, 8, 8])), {}, 400,
         "non-negative integers", id="bool-dimension"),
    case("POST", INFER, infer_body(tensor(shape=["1", 3, 8, 8])), {}, 400,
         "non-negative integers", id="string-dimension"),
    case("POST", INFER, infer_body(tensor(shape=None)), {}, 400, "'shape'", id="null-shape"),
    case("POST", INFER, infer_body(tensor(shape="1,3,8,8")), {}, 400, "'shape'",
         id="string-shape"),
    case("POST", INFER, infer_body(tensor(shape=[1] * 33, data=[0.5])), {}, 400, "at most 32",
         id="33-dimensions"),
    case("POST", INFER, infer_body(tensor(shape=[10 ** 30, 3, 8, 8])), {}, 400, "limit",
         id="dimension-10e30"),
    case("POST", INFER, huge_int_shape(), {}, 400, "JSON", id="5000-digit-dimension"),
    case("POST", INFER, infer_body(tensor(shape=[1 << 40, 3, 8, 8], data=[0.5])), {}, 400,
         "limit", id="absurd-shape-tiny-data"),
    case("POST", INFER, infer_body(tensor(shape=[65536] * 4, data=[0.5])), {}, 400, "limit",
         id="shape-product-overflows-int64"),
    case("POST", INFER, infer_body(tensor(shape=[0, 1 << 40], data=[])), {}, 400, "limit",
         id="zero-times-absurd-dimension"),
    case("POST", INFER, infer_body(tensor(shape=[1000, 3, 8, 8], data=[0.5])), {}, 400,
         "expected 192000 elements", "got 1", id="large-shape-tiny-data"),
    case("POST", INFER, infer_body(tensor(name="pixels")), {}, 400, "unknown input 'pixels'",
         "image", id="unknown-input"),
    case("POST", INFER, infer_body(TENSOR, tensor(name="extra", shape=[1], data=[0.5])), {},
         400, "unknown input 'extra'", id="extra-input"),
    case("POST", INFER, infer_body(tensor(name="\ud800")), {}, 400, "unknown input",
         id="lone-surrogate-input-name"),
    case("POST", INFER, infer_body(TENSOR, TENSOR), {}, 400, "appears twice",
         id="duplicate-input"),
    case("POST", INFER, infer_body(TENSOR, outputs=[{"name": "nope"}]), {}, 400,
         "unknown output 'nope'", "logits", id="unknown-output"),
    case("POST", INFER, infer_body(TENSOR, outputs=[{"name": "logits"}] * 2), {}, 400,
         "requested twice", id="output-twice"),
    case("POST", INFER, infer_body(TENSOR, outputs="logits"), {}, 400, "'outputs'",
         id="outputs-string"),
    case("POST", INFER, infer_body(TENSOR, outputs=[{}]), {}, 400, "'name'",
         id="output-without-name"),
    case("POST", INFER, infer_body(TENSOR, outputs=[{"name": "logits", "parameters": []}]), {},
         400, "'parameters'", id="output-parameters-list"),
    case("POST", INFER, infer_body(TENSOR, outputs=[{"name": "logits", "parameters": {
        "binary_data": "yes"}}]), {}, 400, "true or false", id="output-binary-data-string"),
    case("POST", INFER, infer_body(TENSOR, id=42), {}, 400, "'id' must be a string",
         id="id-number"),
    case("POST", INFER, infer_body(TENSOR, id={"a": 1}), {}, 400, "'id' must be a string",
         id="id-object"),
    case("POST", INFER, infer_body(TENSOR, parameters=[]), {}, 400, "'parameters'",
         id="parameters-list"),
    case("POST", INFER, infer_body(TENSOR, parameters={"binary_data_output": 1}), {}, 400,
         "true or false", id="binary-data-output-number"),
    case("POST", INFER, infer_body(tensor(parameters=7)), {}, 400, "'parameters'",
         id="tensor-parameters-number"),
]

BINARY_CASES = [
    pytest.param(binary_request(ONE, length="-5"), 400, (HEADER, "non-negative"),
                 id="header-length-negative"),
    pytest.param(binary_request(ONE, length="abc"), 400, (HEADER,), id="header-length-text"),
    pytest.param(binary_request(ONE, length="1e3"), 400, (HEADER,), id="header-length-1e3"),
    pytest.param(binary_request(ONE, length="0x10"), 400, (HEADER,), id="header-length-hex"),
    pytest.param(binary_request(ONE, length="+12"), 400, (HEADER,), id="header-length-plus"),
    pytest.param(binary_request(ONE, length="1" * 21), 400, (HEADER,),
                 id="header-length-21-digits"),
    pytest.param(binary_request(ONE, length="99999"), 400, (HEADER, "99999", "only"),
                 id="header-length-past-the-body"),
    pytest.param(binary_request(ONE, length="10"), 400, ("not valid JSON",),
                 id="header-length-mid-json"),
    pytest.param(binary_request(ONE, tail=ONE.tobytes()[:700]), 400,
                 ("declare 768 bytes", "700 bytes"), id="binary-tail-short"),
    pytest.param(binary_request(ONE, tail=ONE.tobytes() + b"\0" * 32), 400, ("800 bytes",),
                 id="binary-tail-long"),
    pytest.param(binary_request(ONE, size=700, tail=ONE.tobytes()[:700]), 400,
                 ("binary_data_size is 700", "expected 768"), id="binary-size-not-the-shape"),
    pytest.param(binary_request(ONE, size=-768), 400, ("non-negative integer",),
                 id="binary-size-negative"),
    pytest.param(binary_request(ONE, size=768.0), 400, ("non-negative integer",),
                 id="binary-size-float"),
    pytest.param(binary_request(ONE, size="768"), 400, ("non-negative integer",),
                 id="binary-size-string"),
    pytest.param(binary_request(ONE, size=True), 400, ("non-negative integer",),
                 id="binary-size-true"),
    pytest.param(request("POST", INFER, infer_body(tensor(
        parameters={"binary_data_size": 768})) + ONE.tobytes()), 400,
        ("not UTF-8", "JSON"), id="binary-tail-without-header"),
    pytest.param(request("POST", INFER, infer_body(tensor(
        parameters={"binary_data_size": 768})) + bytes(768)), 400,
        (HEADER,), id="utf8-binary-tail-without-header"),
    pytest.param(request("POST", INFER, *binary_body(tensor(
        parameters={"binary_data_size": 768}), ONE.tobytes())), 400, ("both",),
        id="binary-size-and-data"),
    pytest.param(request("POST", INFER, *binary_body(BOOL_TENSOR, b"\x02" * 192)), 400,
                 ("BOOL",), id="binary-bool-not-0-or-1"),
    pytest.param(request("POST", INFER, *binary_body(BYTES_TENSOR, struct.pack("<I", 99)
                                                      + b"abcd")), 400, ("BYTES element",),
                 id="binary-bytes-length-past-the-end"),
    pytest.param(request("POST", INFER, b"\0" * 1000, {HEADER: "0"}), 400, ("do not fit",),
                 id="raw-body-wrong-size"),
    pytest.param(request("POST", INFER, b"", {HEADER: "0"}), 400, ("empty",),
                 id="raw-body-empty"),
]

IMAGE_CASES = [
    case("POST", PREDICT, b"", {"Content-Type": "image/png"}, 400, "empty", id="zero-byte-image"),
    case("POST", PREDICT, jpeg_bytes()[: len(jpeg_bytes()) // 2], {"Content-Type": "image/jpeg"},
         400, "truncated", id="truncated-jpeg"),
    case("POST", PREDICT, jpeg_bytes()[:2], {}, 400, "image", id="jpeg-soi-only"),
    case("POST", PREDICT, png_bytes()[:-30], {}, 400, "truncated", id="truncated-png"),
    case("POST", PREDICT, corrupt_png_crc(), {}, 400, "image", id="png-bad-crc"),
    case("POST", PREDICT, TEXT_AS_JPG, {}, 400, "not a recognised image",
         id="text-file-named-jpg"),
    case("POST", PREDICT, b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
         {"Content-Type": "image/svg+xml"}, 400, "not a recognised image", id="svg"),
    case("POST", PREDICT, b"<!doctype html><html><body>hi</body></html>",
         {"Content-Type": "text/html"}, 400, "not a recognised image", id="html"),
    case("POST", PREDICT, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", {}, 400, "not a recognised image",
         id="pdf"),
    case("POST", PREDICT, png_header_only(50000, 50000), {"Content-Type": "image/png"}, 413,
         "decompression bomb", id="png-bomb-50000x50000"),
    case("POST", PREDICT, BOMB_FILE, {}, 413, "decompression bomb", id="png-bomb-in-multipart"),
    case("POST", PREDICT, png_header_only(10000, 10000), {}, 413, "10000x10000",
         "over the limit", id="png-10000x10000-over-the-pixel-limit"),
    case("POST", PREDICT, png_header_only(9000, 9000), {}, 413, "9000x9000",
         id="png-9000x9000-under-pillows-own-limit"),
    case("POST", PREDICT, patched(Image.new("L", (1, 1)), "GIF", 6, b"\xff" * 4), {}, 413,
         "decompression bomb", id="gif-bomb-65535x65535"),
    case("POST", PREDICT, patched(Image.new("RGB", (1, 1)), "BMP", 18,
                                  struct.pack("<ii", 50000, 50000)), {}, 413,
         "decompression bomb", id="bmp-bomb-50000x50000"),
]


CASES = HTTP_CASES + PROTOCOL_CASES + BINARY_CASES + IMAGE_CASES


@pytest.mark.parametrize(("raw", "status", "words"), CASES)
def test_bad_request_gets_its_status_a_json_error_naming_it_and_the_server_lives(
    server: Served, raw: bytes, status: int, words: tuple[str, ...]
) -> None:
    answer = exchange(server.port, raw)
    message = answer.error()
    assert answer.status == status, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    assert_alive(server.port)


# ---------------------------------------------------------------------- images accepted
class Pipeline(TinyNet):
    """TinyNet's preprocessing in this process, to compute what the server should answer."""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("not used")


@pytest.mark.parametrize(("mode", "fmt"), [
    ("L", "PNG"), ("LA", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"),
    ("P+tRNS", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"),
    ("1", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("L", "JPEG"), ("RGB", "WEBP"),
])
def test_every_image_mode_is_accepted_and_fed_as_rgb(server: Served, mode: str,
                                                      fmt: str) -> None:
    data = image_in_mode(mode, fmt)
    answer = exchange(server.port, request("POST", PREDICT, data,
                                           {"Content-Type": f"image/{fmt.lower()}"})).json()
    with warnings.catch_warnings():  # see test_library_bad_inputs: P with tRNS bytes warns
        warnings.simplefilter("ignore", UserWarning)
        pixels = Pipeline().preprocessing(data)
    assert pixels.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(answer["result"]["logits"], expected_logits(pixels)[0],
                               rtol=1e-5, atol=1e-6)
    assert answer["result"]["label"] == int(np.argmax(answer["result"]["logits"]))
    assert_alive(server.port)


# ---------------------------------------------------------------- valid edges are answered
def test_binary_output_for_a_json_request(server: Served) -> None:
    for fields in ({"outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
                   {"parameters": {"binary_data_output": True}}):
        answer = exchange(server.port, request("POST", INFER, infer_body(**fields)))
        assert answer.status == 200, answer.body[:300]
        split = int(answer.headers[HEADER.lower()])
        meta = json.loads(answer.body[:split])
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
        np.testing.assert_allclose(np.frombuffer(answer.body[split:], "<f4").reshape(2, 4),
                                   expected_logits(IMAGE), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("headers", [
    {HEADER: str(len(infer_body()))}, {"Content-Type": "text/plain"},
    {"Content-Type": "application/x-www-form-urlencoded"},  # what curl -d sends
    {"Content-Type": "application/json; charset=utf-8"},
], ids=["header-length-on-json", "text-plain", "form-urlencoded", "json-charset"])
def test_a_json_body_is_decoded_whatever_its_content_type_says(
    server: Served, headers: dict[str, str]
) -> None:
    answer = exchange(server.port, request("POST", INFER, infer_body(), headers))
    assert_right_logits(answer.json()["outputs"], IMAGE)


def test_chunked_raw_and_binary_bodies_are_answered(server: Served) -> None:
    chunks = request("POST", INFER, chunked(infer_body()), {"Transfer-Encoding": "chunked"})
    raw = request("POST", INFER, IMAGE.tobytes(), {HEADER: "0"})
    for message in (chunks, raw, binary_request(IMAGE)):
        assert_right_logits(exchange(server.port, message).json()["outputs"], IMAGE)


def test_edge_values_are_answered(server: Served) -> None:
    empty = exchange(server.port, request("POST", INFER, infer_body(tensor(
        shape=[0, 3, 8, 8], data=[]))))
    assert empty.json()["outputs"][0] | {"data": None} == {
        "name": "logits", "datatype": "FP32", "shape": [0, 4], "data": None}
    nan = exchange(server.port, request("POST", INFER, infer_body(tensor(data=[None] * 192))))
    assert nan.json()["outputs"][0]["data"] == [None] * 4  # NaN in, NaN (null) out
    odd_id = exchange(server.port, request("POST", INFER, infer_body(id="\udc80 \u2603")))
    assert odd_id.json()["id"] == "\udc80 \u2603"
    shaped = IMAGE.tolist()  # nested as the shape says
    answer = exchange(server.port, request("POST", INFER, infer_body(tensor(
        shape=list(IMAGE.shape), data=shaped))))
    assert_right_logits(answer.json()["outputs"], IMAGE)


# ------------------------------------------------------- errors waitress answers itself
WAITRESS_CASES = [
    pytest.param(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{"
                 % INFER.encode(), 413, id="huge-content-length-tiny-body"),
    pytest.param(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{"
                 % (INFER.encode(), 3 * LIMIT), 413, id="content-length-3x-the-limit"),
    pytest.param(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{"
                 % INFER.encode(), 400, id="content-length-text"),
    pytest.param(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{"
                 % INFER.encode(), 400, id="content-length-negative"),
    pytest.param(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n"
                 b"\r\n{" % INFER.encode(), 400, id="content-length-twice"),
    pytest.param(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                 % INFER.encode(), 400, id="chunk-size-not-hex"),
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="start-line-garbage"),
    pytest.param(b"GET /v2/models/" + b"a" * 300_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431,
                 id="url-over-256-kib"),
]


@pytest.mark.parametrize(("raw", "status"), WAITRESS_CASES)
def test_requests_waitress_refuses_get_their_status_at_once_and_the_server_lives(
    server: Served, raw: bytes, status: int
) -> None:
    started = time.monotonic()
    answer = exchange(server.port, raw)
    assert answer.status == status, answer
    assert time.monotonic() - started < READ_TIMEOUT  # answered, not dropped at the timeout
    assert_alive(server.port)


@pytest.mark.parametrize(("raw", "status"), WAITRESS_CASES)
def test_requests_waitress_refuses_get_a_json_error(server: Served, raw: bytes,
                                                    status: int) -> None:
    message = exchange(server.port, raw).error()
    if status == 413:
        assert str(LIMIT) in message


def test_head_request_gets_no_body_and_the_connection_stays_usable(server: Served) -> None:
    raw = (request("HEAD", "/v2/health/live", headers={"Connection": "keep-alive"})
           + request("GET", "/v2/health/live"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        received = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 ") and rest.startswith(b"HTTP/1.1 200 "), received


def test_errors_leave_a_keep_alive_connection_usable(server: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for method, path, body, status in [
            ("POST", INFER, b"{", 400), ("POST", "/v2/models/nope/infer", b"{}", 404),
            ("GET", INFER, None, 405), ("POST", INFER, b" " * (LIMIT + 1), 413),
            ("POST", PREDICT, b"not an image", 400), ("POST", INFER, infer_body(), 200),
        ]:
            connection.request(method, path, body)
            answer = connection.getresponse()
            assert answer.status == status, answer.read()[:300]
            document = json.loads(answer.read())
        assert_right_logits(document["outputs"], IMAGE)
    finally:
        connection.close()


def test_pipelined_bad_and_good_requests_are_answered_in_order(server: Served) -> None:
    keep = {"Connection": "keep-alive"}
    raw = (request("POST", INFER, b"[]", keep) + request("POST", INFER, b"\xff", keep)
           + request("POST", INFER, infer_body()))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        received = b"".join(iter(lambda: sock.recv(65536), b""))
    stream = _Unclosable(received)
    answers = [read_answer(stream) for _ in range(3)]
    assert [a.status for a in answers] == [400, 400, 200]
    assert "JSON object" in answers[0].error() and "UTF-8" in answers[1].error()
    assert_right_logits(answers[2].json()["outputs"], IMAGE)


# ------------------------------------------------------------ slow and vanishing clients
def test_stalled_client_is_released_after_the_read_timeout_while_others_are_served(
    server: Served,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{"
                     % (INFER.encode(), LIMIT - 1))  # promises ~1 MiB, sends 1 byte
        started = time.monotonic()
        assert_alive(server.port)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # still held open while the others were served
            sock.recv(1024)
        sock.settimeout(20)
        assert sock.recv(1024) == b""  # then closed by the server, not answered
        waited = time.monotonic() - started
    assert READ_TIMEOUT * 0.75 < waited < READ_TIMEOUT * 3 + 1
    assert_alive(server.port)


def test_slow_client_that_keeps_sending_is_answered_and_blocks_no_one(server: Served) -> None:
    raw = request("POST", INFER, infer_body())
    pieces = [raw[i: i + len(raw) // 5 + 1] for i in range(0, len(raw), len(raw) // 5 + 1)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        for piece in pieces:
            sock.sendall(piece)
            live = exchange(server.port, request("GET", "/v2/health/live"))
            assert live.status == 200
            time.sleep(READ_TIMEOUT / 5)  # each pause well under the read timeout
        answer = read_answer(sock.makefile("rb"))
    assert_right_logits(answer.json()["outputs"], IMAGE)


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_client_disconnecting_mid_body_leaves_the_server_fine(server: Served,
                                                               reset: bool) -> None:
    for path in (INFER, PREDICT):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                     % path.encode() + b"[0.5, " * 200)
        sock.close()
    assert_alive(server.port)


def test_client_gone_before_the_answer_leaves_the_server_fine(server: Served) -> None:
    for raw in (request("POST", PREDICT, png_bytes()), request("POST", INFER, infer_body())):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(raw)
        sock.close()
    assert_alive(server.port)


def test_more_idle_connections_than_the_server_admits_are_all_released(server: Served) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=20)
            for _ in range(140)]  # waitress admits max(100, 8 * threads) = 128
    try:
        started = time.monotonic()
        assert exchange(server.port, request("GET", "/v2/health/live"), 20).status == 200
        assert time.monotonic() - started < 2 * READ_TIMEOUT + 2
        for sock in idle:
            assert sock.recv(1) == b""  # each one is closed by the server
        assert time.monotonic() - started < 4 * READ_TIMEOUT + 4
    finally:
        for sock in idle:
            sock.close()
    assert_alive(server.port)


def test_multipart_part_count_is_refused_before_the_parts_are_parsed(server: Served) -> None:
    body = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(10_000)) + b"--b--\r\n"
    started = time.monotonic()
    answer = exchange(server.port, request("POST", PREDICT, body, {
        "Content-Type": "multipart/form-data; boundary=b"}))
    assert answer.status == 413 and "parts" in answer.error()
    assert time.monotonic() - started < 0.15


def test_binary_tail_without_the_header_is_explained(server: Served) -> None:
    raw = request("POST", INFER, infer_body(tensor(parameters={"binary_data_size": 768}))
                  + ONE.tobytes())
    assert HEADER in exchange(server.port, raw).error()


# ------------------------------------------------------------------- faults under load
def test_bad_requests_among_good_ones_under_load_leave_every_good_answer_right(
    server: Served,
) -> None:
    bad = [p.values for p in HTTP_CASES[:12] + PROTOCOL_CASES[15:40] + BINARY_CASES[:10]]
    images = [np.random.default_rng(seed).random((1 + seed % 3, 3, 8, 8), dtype=np.float32)
              for seed in range(len(bad))]

    def good(image: np.ndarray) -> None:
        answer = exchange(server.port, request("POST", INFER, infer_body(tensor(
            shape=list(image.shape), data=image.ravel().tolist()))))
        assert_right_logits(answer.json()["outputs"], image)

    def wrong(raw: bytes, status: int, words: tuple[str, ...]) -> None:
        answer = exchange(server.port, raw)
        assert answer.status == status and words[0].lower() in answer.error().lower()

    with ThreadPoolExecutor(32) as pool:
        jobs = [pool.submit(good, image) for image in images]
        jobs += [pool.submit(wrong, *values) for values in bad]
        for job in jobs:
            job.result()
    assert_alive(server.port)


# ------------------------------------------------ models loading or failed: 503 (repository)
GATE = """
import time
from pathlib import Path

from tests.tiny_models import TinyNet


class Gated(TinyNet):
    \"\"\"Loading waits (at most 60 s) until the test creates the gate file.\"\"\"

    def __init__(self, **options):
        super().__init__(**options)
        deadline = time.monotonic() + 60
        while not Path(GATE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
"""


@dataclass
class Repository:
    root: Path
    port: int
    gate: Path


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    """``serve models/``: ``tiny`` loads, ``broken`` fails to load (its class file is
    missing); a test adds ``gated``, whose loading waits for ``gate``."""
    folder = tmp_path_factory.mktemp("repository")
    root, gate = folder / "models", folder / "gate"
    write_tiny_model(root / "tiny" / "1")
    broken = write_tiny_model(root / "broken" / "1")
    broken.write_text(broken.read_text().replace("tests.tiny_models:TinyNet",
                                                 "missing.py:Nope"))
    with serving(folder / "server.log", str(root), "--poll-interval", "0.2") as (_, port):
        try:
            yield Repository(root, port, gate)
        finally:
            gate.touch()  # a load still waiting ends now


def test_model_that_failed_to_load_is_503_naming_why_and_the_others_serve(
    repository: Repository,
) -> None:
    for path in ("/v2/models/broken/infer", "/v2/models/broken/versions/1/infer"):
        answer = exchange(repository.port, request("POST", path, infer_body()))
        message = answer.error()
        assert answer.status == 503 and "failed to load" in message, message
        assert "missing.py" in message
    ready = exchange(repository.port, request("GET", "/v2/models/broken/ready"))
    assert (ready.status, json.loads(ready.body)) == (503, {"name": "broken", "ready": False})
    assert_alive(repository.port)


def test_model_still_loading_is_503_then_serves_once_loaded(repository: Repository) -> None:
    staging = repository.root.parent / "staging"
    config = write_tiny_model(staging / "1")
    config.write_text(config.read_text().replace("tests.tiny_models:TinyNet", "gate.py:Gated"))
    (staging / "1" / "gate.py").write_text(f"GATE = {str(repository.gate)!r}\n{GATE}")
    staging.rename(repository.root / "gated")  # appears whole, as a deployment would
    infer = request("POST", "/v2/models/gated/infer", infer_body())
    answer = poll(repository.port, infer, lambda a: a.status != 404)
    assert answer.status == 503 and "loading" in answer.error(), answer
    assert_alive(repository.port)  # the other models serve while one loads
    repository.gate.touch()
    answer = poll(repository.port, infer, lambda a: a.status == 200)
    assert_right_logits(answer.json()["outputs"], IMAGE)


def poll(port: int, raw: bytes, done: Any, timeout: float = 20) -> Answer:
    """Send ``raw`` until ``done(answer)``; the last answer."""
    deadline = time.monotonic() + timeout
    while not done(answer := exchange(port, raw)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


# ------------------------------------------------------------ after every case (keep last)
def test_after_every_case_the_server_is_alive_with_its_warm_up_footprint(
    server: Served,
) -> None:
    assert server.process.poll() is None
    assert_alive(server.port)
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    base = server.baseline
    if not base:
        pytest.skip("threads, memory and files are read from Linux's /proc")
    deadline = time.monotonic() + 3 * READ_TIMEOUT + 2  # stalled sockets are being closed
    while True:
        now = process_stats(server.process.pid)
        settled = now["threads"] == base["threads"] and now["fds"] <= base["fds"]
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert now["threads"] == base["threads"], (now, base)
    assert now["fds"] <= base["fds"], (now, base)
    assert now["rss_kb"] < base["rss_kb"] * 1.2, (now, base)
