"""HTTP requests for a server serving the tiny model (``tests/serving_fixtures.py``) as
``tiny`` version 1, and the property every answer must keep.

Three generators: Open Inference Protocol infer requests (JSON, nested JSON, binary
tensors, a raw body) that are valid or broken by up to three mutations; image uploads to
``.../predict`` (every readable format and mode, raw or multipart, valid or mutated); and
arbitrary methods, paths and headers. A valid request must answer 200 with the right
values; any request must answer below 500, and every error must be JSON
``{"error": "<message>"}``. Shared by ``tests/test_fuzz_api.py`` and ``bench/fuzz.py``.
"""

from __future__ import annotations

import http.client
import io
import json
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from model_agnostic.errors import ProtocolError
from model_agnostic.protocol import DATATYPES, HEADER_LENGTH, decode_infer_response
from tests.serving_fixtures import expected_logits
from tests.tiny_models import TinyNet

__all__ = ["Answer", "Client", "HttpCase", "infer_cases", "predict_cases", "problem",
           "route_cases"]

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False) | st.text(max_size=6))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=24)
BAD_LENGTHS = st.sampled_from(["-1", "abc", "", " ", "1e3", "0x10", "+5", "\u0663",
                               "9" * 21, "18446744073709551616", "3.0"])


@dataclass(frozen=True)
class HttpCase:
    """One request; ``valid`` names what a 200 answer must hold ("" : nothing checked)."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    valid: str = ""
    image: np.ndarray | None = None  # the batch a valid infer request sent
    upload: bytes = b""  # the image file a valid predict request sent


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """Keep-alive ``http.client`` connection to ``url``; reconnects once when the server
    has closed an idle connection."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self._connection: http.client.HTTPConnection | None = None

    def send(self, case: HttpCase) -> Answer:
        headers = {name: value.encode() for name, value in case.headers}  # any bytes
        for attempt in (0, 1):
            fresh = self._connection is None
            connection = self._connection or http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout)
            self._connection = connection
            try:
                connection.request(case.method, case.path, case.body, headers)
                response = connection.getresponse()
                body = response.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if fresh or attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return Answer(response.status,
                          {k.lower(): v for k, v in response.getheaders()}, body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def problem(case: HttpCase, answer: Answer) -> str | None:
    """What is wrong with ``answer`` to ``case``, or None."""
    # 501 is a deliberate answer from /explain only (a model without heatmaps), checked as
    # an error document below; every other 5xx is the server failing
    explain_501 = answer.status == 501 and case.path.split("?")[0].endswith("/explain")
    if answer.status >= 500 and not explain_501:
        return f"server error {answer.status}: {answer.body[:300]!r}"
    if answer.status >= 400 and case.method != "HEAD":
        if not answer.headers.get("content-type", "").startswith("application/json"):
            return f"{answer.status} error is not JSON: {answer.body[:200]!r}"
        try:
            document = json.loads(answer.body)
        except ValueError:
            return f"{answer.status} error body does not parse: {answer.body[:200]!r}"
        if not (isinstance(document, dict) and isinstance(document.get("error"), str)
                and document["error"]):
            return f"{answer.status} error is not {{'error': message}}: {document!r:.200}"
    if case.valid and answer.status != 200:
        return f"valid {case.valid} request answered {answer.status}: {answer.body[:300]!r}"
    if case.valid == "infer":
        return _infer_problem(case, answer)
    if case.valid == "predict":
        try:
            answered = json.loads(answer.body)
        except ValueError:
            return f"predict answered 200 with {answer.body[:200]!r}"
        result = answered.get("result") if isinstance(answered, dict) else None
        want = _TinyPipeline().predict(case.upload)
        if not isinstance(result, dict) or result.get("label") != want["label"] or \
                not np.allclose(result.get("logits", []), want["logits"], rtol=1e-5, atol=1e-6):
            return f"predict answered {answered!r:.200} instead of {want!r:.200}"
    return None


class _TinyPipeline(TinyNet):
    """The served model's hooks with the tiny graph computed in numpy: what predict must
    answer for an upload."""

    backend_name = "expected"

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"logits": expected_logits(inputs["image"])}


def _infer_problem(case: HttpCase, answer: Answer) -> str | None:
    try:
        outputs, meta = decode_infer_response(answer.body, answer.headers.get(
            HEADER_LENGTH.lower()))
    except ProtocolError as error:
        return f"the answer to a valid request does not decode: {error}"
    assert case.image is not None
    want = expected_logits(case.image)
    got = outputs.get("logits")
    if meta["model_version"] != "1" or got is None or got.shape != want.shape or \
            not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        return f"wrong answer: {meta}, logits {got!r:.200} instead of {want!r:.200}"
    return None


# ------------------------------------------------------------------------- infer requests
_DOC_MUTATIONS = ["datatype", "shape", "count", "value", "name", "extra_input", "duplicate",
                  "outputs", "parameters", "id", "drop_field", "binary_size"]
_BYTE_MUTATIONS = ["header_length", "truncate", "append", "flip", "content_type", "replace"]


@st.composite
def infer_cases(draw: st.DrawFn) -> HttpCase:
    """A v2 infer request for ``tiny`` (image [batch, 3, 8, 8] FP32), valid when unmutated."""
    batch = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    image = np.random.default_rng(seed).random((batch, 3, 8, 8), dtype=np.float32)
    encoding = draw(st.sampled_from(["json", "nested", "binary", "raw"]))
    path = draw(st.sampled_from(["/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"]))
    mutations = draw(st.lists(st.sampled_from(_DOC_MUTATIONS + _BYTE_MUTATIONS), max_size=3))
    if encoding == "raw":
        body, headers = image.tobytes(), {HEADER_LENGTH: "0"}
    else:
        doc, tail = _infer_document(draw, image, encoding)
        for mutation in mutations:
            if mutation in _DOC_MUTATIONS:
                _mutate_document(draw, mutation, doc)
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        if tail or draw(st.booleans()):
            headers = {HEADER_LENGTH: str(len(body)), "Content-Type": "application/octet-stream"}
        body += tail
    for mutation in mutations:
        if mutation in _BYTE_MUTATIONS:
            body = _mutate_bytes(draw, mutation, body, headers)
    valid = not mutations and not (encoding == "raw" and batch == 0)
    return HttpCase("POST", path, body, tuple(headers.items()), "infer" if valid else "",
                    image)


def _infer_document(draw: st.DrawFn, image: np.ndarray,
                    encoding: str) -> tuple[dict[str, Any], bytes]:
    entry: dict[str, Any] = {"name": "image", "shape": list(image.shape), "datatype": "FP32"}
    tail = b""
    if encoding == "binary":
        entry["parameters"] = {"binary_data_size": image.nbytes}
        tail = image.tobytes()
    else:
        entry["data"] = image.tolist() if encoding == "nested" else image.ravel().tolist()
    doc: dict[str, Any] = {"inputs": [entry]}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=8))
    wanted = draw(st.sampled_from([None, [], [{"name": "logits"}],
                                   [{"name": "logits", "parameters": {"binary_data": True}}],
                                   [{"name": "logits", "parameters": {"binary_data": False}}]]))
    if wanted is not None:
        doc["outputs"] = wanted
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": draw(st.booleans())}
    return doc, tail


def _mutate_document(draw: st.DrawFn, mutation: str, doc: dict[str, Any]) -> None:
    if "inputs" not in doc:  # dropped by an earlier mutation
        return
    entry = doc["inputs"][0]
    if mutation == "extra_input":
        doc["inputs"].append({"name": draw(st.text(max_size=4)), "shape": [1],
                              "datatype": draw(st.sampled_from(list(DATATYPES))),
                              "data": [draw(JSON_SCALARS)]})
    elif mutation == "duplicate":
        doc["inputs"].append(dict(entry))
    elif mutation == "outputs":
        name = st.sampled_from(["logits", "image", ""]) | JSON_VALUES
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries(
            {"name": name}, optional={"parameters": JSON_VALUES}), max_size=3) | JSON_VALUES)
    elif mutation == "parameters":
        doc["parameters"] = draw(st.fixed_dictionaries(
            {}, optional={"binary_data_output": JSON_VALUES}) | JSON_VALUES)
    elif mutation == "id":
        doc["id"] = draw(JSON_VALUES)
    elif mutation == "drop_field":
        target = draw(st.sampled_from(["name", "shape", "datatype", "data", "parameters",
                                       "inputs"]))
        (doc if target == "inputs" else entry).pop(target, None)
    else:
        _mutate_input(draw, mutation, entry)


def _mutate_input(draw: st.DrawFn, mutation: str, entry: dict[str, Any]) -> None:
    data = entry.get("data")
    if mutation == "datatype":
        entry["datatype"] = draw(st.sampled_from([*DATATYPES, "fp32", "FP8", ""]) | JSON_VALUES)
    elif mutation == "shape":
        dims = st.integers(-3, 9) | st.sampled_from([2**31, 2**40, 2**63, 2**64, 1.0, True])
        entry["shape"] = draw(st.lists(dims, max_size=6) | JSON_VALUES)
    elif mutation == "count" and isinstance(data, list):
        flat = _flatten(data)
        cut = draw(st.integers(0, len(flat)))
        entry["data"] = flat[:cut] if draw(st.booleans()) else flat + flat[:cut + 1]
    elif mutation == "value" and data:
        flat = _flatten(data)
        flat[draw(st.integers(0, len(flat) - 1))] = draw(JSON_VALUES | st.just(1e400))
        entry["data"] = flat
    elif mutation == "name":
        entry["name"] = draw(st.sampled_from(["logits", "Image", ""]) | JSON_VALUES)
    elif mutation == "binary_size":
        size = st.integers(-5, 2**20) | st.sampled_from([2**64, 1.5, "768"]) | JSON_VALUES
        parameters = entry.setdefault("parameters", {})
        if isinstance(parameters, dict):
            parameters["binary_data_size"] = draw(size)


def _flatten(data: list[Any]) -> list[Any]:
    """The leaves of nested lists, in order (mutated data may be ragged)."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], stack)
        if item is stack:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def _mutate_bytes(draw: st.DrawFn, mutation: str, body: bytes, headers: dict[str, str]) -> bytes:
    if mutation == "header_length":
        offset = st.integers(-3, 3).map(lambda k: str(max(0, len(body) + k)))
        headers[HEADER_LENGTH] = draw(BAD_LENGTHS | offset | st.integers(0, 2**70).map(str))
    elif mutation == "truncate":
        return body[:draw(st.integers(0, max(0, len(body) - 1)))]
    elif mutation == "append":
        return body + draw(st.binary(min_size=1, max_size=32))
    elif mutation == "flip" and body:
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    elif mutation == "content_type":
        headers["Content-Type"] = draw(st.sampled_from(
            ["text/plain", "multipart/form-data; boundary=x", "application/json; charset=latin-1",
             "image/png", ""]) | HEADER_TEXT)
    elif mutation == "replace":
        deep = st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)
        return draw(st.binary(max_size=64) | deep
                    | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
    return body


# -------------------------------------------------------------------------- image uploads
IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"]
# Every format Pillow writes and reads back, but IM (Pillow 13 deprecates it).
IMAGE_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "ICO", "TGA", "PCX",
                 "SGI", "QOI", "DDS", "SPIDER", "JPEG2000", "XBM"]
_UPLOAD_MUTATIONS = ["flip", "truncate", "append", "bomb", "multipart", "content_type",
                     "empty"]


@lru_cache(maxsize=4096)
def encoded_image(mode: str, fmt: str, width: int, height: int, seed: int) -> tuple[bytes, bool]:
    """``(bytes, decodable)``: a random image saved as ``fmt`` (as RGB if ``fmt`` cannot
    hold ``mode``), and whether Pillow reads it back."""
    rng = np.random.default_rng(seed)
    rgba = Image.frombytes("RGBA", (width, height),
                           rng.integers(0, 256, (height, width, 4), dtype=np.uint8).tobytes())
    image = rgba.convert(mode) if mode != "I;16" else rgba.convert("L").convert("I;16")
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG" if fmt == "XBM" else fmt)
    data = buffer.getvalue()
    try:
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()  # a palette with transparency via RGBA: Pillow warns otherwise
            (decoded.convert("RGBA") if decoded.mode in ("P", "PA") else decoded).convert("RGB")
    except Exception:  # noqa: BLE001 - any failure: this encoding is not a valid upload
        return data, False
    return data, True


@st.composite
def predict_cases(draw: st.DrawFn) -> HttpCase:
    """An image upload to ``tiny``'s ``predict``: raw or multipart, valid when unmutated."""
    data, decodable = encoded_image(
        draw(st.sampled_from(IMAGE_MODES)), draw(st.sampled_from(IMAGE_FORMATS)),
        draw(st.integers(1, 24)), draw(st.integers(1, 24)), draw(st.integers(0, 3)))
    mutations = draw(st.lists(st.sampled_from(_UPLOAD_MUTATIONS), max_size=2))
    for mutation in mutations:
        if mutation in ("flip", "truncate", "append"):
            data = _mutate_bytes(draw, mutation, data, {})
        elif mutation == "bomb" and data.startswith(b"\x89PNG"):
            data = _png_with_size(data, draw(st.integers(1, 2**31 - 1)),
                                  draw(st.integers(1, 2**31 - 1)))
        elif mutation == "empty":
            data = b""
    headers: dict[str, str] = {}
    if draw(st.booleans()) or "multipart" in mutations:
        body, content_type = _multipart(draw, data, broken="multipart" in mutations)
        headers["Content-Type"] = content_type
    else:
        body = data
        raw_type = draw(st.sampled_from(
            [None, "image/png", "application/octet-stream", "text/plain", "image/jpeg"]))
        if raw_type:
            headers["Content-Type"] = raw_type
    if "content_type" in mutations:
        headers["Content-Type"] = draw(st.sampled_from(
            ["multipart/mixed; boundary=b", "multipart/form-data", "Multipart/Form-Data; x"])
            | HEADER_TEXT)
    path = draw(st.sampled_from(["/v2/models/tiny/predict",
                                 "/v2/models/tiny/versions/1/predict"]))
    valid = "predict" if decodable and not mutations else ""
    return HttpCase("POST", path, body, tuple(headers.items()), valid, upload=data)


def _png_with_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR declaring ``width`` x ``height`` (CRC fixed): a bomb header."""
    ihdr = bytearray(png[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return png[:12] + bytes(ihdr) + crc + png[33:]


def _multipart(draw: st.DrawFn, data: bytes, broken: bool) -> tuple[bytes, str]:
    boundary = "fuzzBoundary" + str(draw(st.integers(0, 999)))
    safe = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'),
                   max_size=12)
    parts: list[tuple[str, str | None, bytes]] = [
        (draw(safe), None, draw(safe).encode()) for _ in range(draw(st.integers(0, 2)))]
    files = 1 if not broken else draw(st.sampled_from([0, 2, 20]))
    parts += [("file", draw(safe) or "a.png", data)] * files
    chunks = []
    for name, filename, payload in draw(st.permutations(parts)):
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                      + payload + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    if broken and draw(st.booleans()):
        body = body.replace(b"--" + boundary.encode(), b"--other", draw(st.integers(1, 3)))
    return body, f"multipart/form-data; boundary={boundary}"


# ------------------------------------------------------------------ methods, paths, headers
_KNOWN_PATHS = ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/repository/index",
                "/v2/repository/models/tiny/load", "/v2/models/tiny", "/v2/models/tiny/ready",
                "/v2/models/tiny/versions/1", "/v2/models/tiny/infer", "/metrics",
                "/openapi.json", "/", "/ui", "/v2/models/tiny/versions/1/predict"]


@st.composite
def route_cases(draw: st.DrawFn) -> HttpCase:
    """Any method on known, near-known and arbitrary paths, with arbitrary headers."""
    segment = st.text(max_size=12).map(lambda s: quote(s, safe="")) | st.sampled_from(
        ["..", ".", "%2e%2e", "%2F", "tiny", "1", "0", "007", "-1", "a" * 5000, "%00"])
    near = st.lists(segment, min_size=1, max_size=5).map(
        lambda segments: "/v2/models/" + "/".join(segments))
    path = draw(st.sampled_from(_KNOWN_PATHS) | near | st.lists(segment, max_size=4).map(
        lambda segments: "/" + "/".join(segments)))
    if draw(st.booleans()):
        path += draw(st.sampled_from(["/", "//", "?x=1", "?" + "&" * 50, "#frag"]))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    names = st.sampled_from(["Authorization", "Content-Type", "Accept", HEADER_LENGTH,
                             "Transfer-Encoding-X", "X-Fuzz"])
    headers = draw(st.dictionaries(names, HEADER_TEXT, max_size=3))
    body = draw(st.binary(max_size=32)) if method not in ("GET", "HEAD") else b""
    return HttpCase(method, path, body, tuple(headers.items()))
