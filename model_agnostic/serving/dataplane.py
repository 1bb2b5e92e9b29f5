"""The I/O-free data plane: one HTTP-shaped request in, one response out.

Knows nothing about Flask, Django or sockets. The adapters and the WSGI server turn
their framework's request into a :class:`Request`, call :meth:`DataPlane.handle` and
send back the :class:`Response`. Every error becomes JSON ``{"error": "..."}`` with the
status the Open Inference Protocol peers use (see docs/serving.md).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__, protocol
from ..errors import ConfigError, ModelAgnosticError, ProtocolError, ServingError
from ..images import DEFAULT_MAX_PIXELS
from ..model import Arrays, Model
from ..tensors import TensorSpec, check_arrays
from .metrics import Metrics
from .repository import ModelRepository, ServedVersion
from .uploads import check_pixels, read_upload

__all__ = ["DataPlane", "Limits", "Request", "Response", "signature"]

log = logging.getLogger("model_agnostic.serving")

EXTENSIONS = ["binary_tensor_data", "model_repository"]
_NAME = r"(?P<name>[^/]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"


@dataclass
class Request:
    """An HTTP request as the data plane sees it; header names are case-insensitive."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class Response:
    """Status, body and headers to send back."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, document: Any, status: int = 200) -> Response:
        body = json.dumps(document, separators=(",", ":"), default=_jsonable).encode()
        return cls(status, body, {"Content-Type": "application/json"})

    @classmethod
    def error(cls, message: str, status: int) -> Response:
        return cls.json({"error": message}, status)


def signature(model: Model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's input and output specs: the graph's (ONNX Runtime, remote) when the
    backend knows them, else the names with FP32 and unknown shape (PyTorch)."""
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if isinstance(inputs, list) and isinstance(outputs, list):
        return inputs, outputs
    f32 = np.dtype(np.float32)
    return (
        [TensorSpec(n, f32, None) for n in model.input_names],
        [TensorSpec(n, f32, None) for n in model.output_names],
    )


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; each is a ``[server]`` key (docs/security.md)."""

    #: Request body size; larger bodies get 413 before they are parsed.
    max_request_bytes: int = 64 << 20
    #: JSON nesting depth; deeper bodies get 400 before they are parsed.
    max_json_depth: int = protocol.DEFAULT_MAX_DEPTH
    #: Elements in one tensor, from its declared shape, before anything is allocated.
    max_elements: int = protocol.DEFAULT_MAX_ELEMENTS
    #: Pixels of an uploaded image, read from its header before it is decoded (413).
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    #: Seconds a request may wait for its batch to start; then 503 (batched models).
    infer_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"[server] {name} must be a positive number, got {value!r}")


class DataPlane:
    """Routes Open Inference Protocol (v2) requests and the convenience endpoints.

    Args:
        repository: the served models.
        metrics: Prometheus metrics (None: ``/metrics`` answers 501).
        limits: what one request may ask for.
        ui: the web page's HTML, served at ``/`` and ``/ui`` (None: 404).
        auth_token: when set, inference and model control need
            ``Authorization: Bearer <token>`` (401 otherwise).
        model_control: serve ``POST /v2/repository/models/{name}/load|unload`` (403 if off).
    """

    def __init__(
        self,
        repository: ModelRepository,
        *,
        metrics: Metrics | None = None,
        limits: Limits | None = None,
        ui: bytes | None = None,
        auth_token: str | None = None,
        model_control: bool = False,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.limits = limits or Limits()
        self.ui = ui
        self.model_control = model_control
        self._token = auth_token.encode() if auth_token else None
        self._active = 0  # requests being answered, for draining on shutdown
        self._active_lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/v2/health/live"), self.live),
            ("GET", re.compile(r"/v2/health/ready"), self.ready),
            ("GET", re.compile(r"/v2"), self.server_metadata),
            ("POST", re.compile(r"/v2/repository/index"), self.index),
            (
                "POST",
                re.compile(rf"/v2/repository/models/{_NAME}/(?P<action>load|unload)"),
                self.control,
            ),
            ("GET", re.compile(rf"/v2/models/{_NAME}{_VERSION}"), self.model_metadata),
            ("GET", re.compile(rf"/v2/models/{_NAME}{_VERSION}/ready"), self.model_ready),
            ("POST", re.compile(rf"/v2/models/{_NAME}{_VERSION}/infer"), self.infer),
            ("POST", re.compile(rf"/v2/models/{_NAME}{_VERSION}/predict"), self.predict),
            ("GET", re.compile(r"/metrics"), self.prometheus),
            ("GET", re.compile(r"/openapi\.json"), self.openapi),
            ("GET", re.compile(r"/(?:ui/?)?"), self.page),
        ]

    @property
    def max_request_bytes(self) -> int:
        return self.limits.max_request_bytes

    @property
    def active(self) -> int:
        """Requests being answered right now."""
        with self._active_lock:
            return self._active

    def refuse_length(self, content_length: str | int | None) -> Response | None:
        """What a front end answers from the declared body size, before reading the body:
        400 if it is not a number, 413 if it is over the limit, None to go on."""
        if content_length is None or content_length == "":
            return None
        text = str(content_length).strip()
        if not text.isdigit():
            return Response.error(f"Content-Length {text[:40]!r} is not a number of bytes", 400)
        return self._too_large(int(text))

    def _too_large(self, length: int) -> Response | None:
        if length <= self.max_request_bytes:
            return None
        return Response.error(
            f"request body of {length} bytes is over the limit of {self.max_request_bytes} bytes",
            413,
        )

    # ----------------------------------------------------------------- routing
    def handle(self, request: Request) -> Response:
        """Answer one request; never raises."""
        with self._active_lock:
            self._active += 1
        try:
            return self._route(request)
        finally:
            with self._active_lock:
                self._active -= 1

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method != request.method.upper() and not (
                method == "GET" and request.method.upper() == "HEAD"
            ):
                allowed.append(method)
                continue
            return self._call(handler, request, match.groupdict())
        if allowed:
            return Response.error(
                f"{request.method} is not allowed on {path}; "
                f"use {' or '.join(sorted(set(allowed)))}",
                405,
            )
        return Response.error(
            f"no endpoint {path}; see /openapi.json for what this server serves", 404
        )

    def _call(
        self, handler: Callable[..., Response], request: Request, params: dict[str, str | None]
    ) -> Response:
        too_large = self._too_large(len(request.body))
        if too_large is not None:
            return too_large
        try:
            if self._token and handler in (self.infer, self.predict, self.control):
                self._authorize(request)
            return handler(request, **params)
        except ModelAgnosticError as exc:
            response = Response.error(str(exc), _status_of(exc))
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = 'Bearer realm="model_agnostic"'
            return response
        except Exception as exc:  # a bug or a backend crash: logged, reported, server alive
            log.exception("internal error answering %s %s", request.method, request.path)
            return Response.error(f"internal error: {type(exc).__name__}: {exc}", 500)

    def _authorize(self, request: Request) -> None:
        header = request.header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode(), self._token or b""):
            raise Unauthorized("the bearer token is not valid")

    # ------------------------------------------------------------------ health
    def live(self, request: Request) -> Response:
        return Response.json({"live": True})

    def ready(self, request: Request) -> Response:
        ready = self.repository.ready
        return Response.json({"ready": ready}, 200 if ready else 503)

    def server_metadata(self, request: Request) -> Response:
        return Response.json(
            {"name": "model_agnostic", "version": __version__, "extensions": EXTENSIONS}
        )

    def index(self, request: Request) -> Response:
        """Triton's repository index: every model with its served versions."""
        return Response.json(
            [  # one snapshot, so versions and state agree
                {
                    "name": name,
                    "versions": details["served"],
                    "state": "READY" if details["served"] else "UNAVAILABLE",
                    "details": details,
                }
                for name, details in self.repository.status().items()
            ]
        )

    def control(self, request: Request, name: str, action: str) -> Response:
        """Triton's model control: load (rescan now) or unload a model; off by default."""
        if not self.model_control:
            raise ServingError(
                "model control is off on this server; start it with "
                "[server] model_control = true (and an auth_token)",
                403,
            )
        if action == "load":
            self.repository.load(name)
        else:
            self.repository.unload(name)
        return Response.json(
            {"name": name, "action": action, "versions": self.repository.ready_versions(name)}
        )

    # ------------------------------------------------------------------ models
    def model_metadata(self, request: Request, name: str, version: str | None) -> Response:
        with self.repository.acquire(name, version) as served:
            inputs, outputs = signature(served.model)
            versions = [version] if version else self.repository.ready_versions(name)
            document = protocol.model_metadata(
                name, versions, _platform(served.model), inputs, outputs
            )
            document["parameters"] = _parity_parameters(served.model.artifact_parity)
            return Response.json(document)

    def model_ready(self, request: Request, name: str, version: str | None) -> Response:
        try:
            with self.repository.acquire(name, version):
                return Response.json({"name": name, "ready": True})
        except ServingError as exc:
            if exc.status == 404:
                raise
            return Response.json({"name": name, "ready": False}, 503)

    def infer(self, request: Request, name: str, version: str | None) -> Response:
        with self._serving(name, version, "infer") as served:
            inputs, _ = signature(served.model)
            decoded = protocol.decode_infer_request(
                request.body,
                request.header(protocol.HEADER_LENGTH),
                max_elements=self.limits.max_elements,
                max_depth=self.limits.max_json_depth,
                raw_input=inputs[0] if len(inputs) == 1 else None,
            )
            check_arrays(inputs, decoded.inputs, "the request", protocol.datatype_of)
            outputs = self._run(served, decoded.inputs)
            body, headers = protocol.encode_infer_response(name, served.version, decoded, outputs)
            return Response(200, body, headers)

    def predict(self, request: Request, name: str, version: str | None) -> Response:
        """Convenience: raw image bytes (or a multipart upload) -> the model's own result."""
        started = time.perf_counter()
        with self._serving(name, version, "predict") as served:
            raw = read_upload(request.body, request.header("Content-Type"))
            check_pixels(raw, self.limits.max_image_pixels)
            arrays = served.model.prepare(raw)
            served.model.check_inputs(arrays)
            result = served.model.process_result(self._run(served, arrays))
            return Response.json(
                {
                    "model_name": name,
                    "model_version": served.version,
                    "result": result,
                    "latency_ms": round((time.perf_counter() - started) * 1e3, 3),
                }
            )

    @contextmanager
    def _serving(self, name: str, version: str | None, endpoint: str) -> Iterator[ServedVersion]:
        """Pin a version for one request; count it in flight; record its status and time."""
        started = time.perf_counter()
        with self.repository.acquire(name, version) as served, self._inflight(served):
            status = 500
            try:
                yield served
                status = 200
            except ModelAgnosticError as exc:
                status = _status_of(exc)
                raise
            finally:
                if self.metrics is not None:
                    self.metrics.request(
                        served.name, served.version, endpoint, status, time.perf_counter() - started
                    )

    def _run(self, served: ServedVersion, arrays: Arrays) -> Arrays:
        runner = served.runner
        if runner is not None:
            return runner.infer(arrays, timeout=self.limits.infer_timeout_s)
        return served.model.infer(arrays)

    # ------------------------------------------------------------ observability
    def _inflight(self, served: ServedVersion) -> AbstractContextManager[None]:
        if self.metrics is None:
            return nullcontext()
        return self.metrics.inflight(served.name, served.version)

    def prometheus(self, request: Request) -> Response:
        if self.metrics is None:
            raise ServingError("metrics are off on this server", 501)
        body, content_type = self.metrics.exposition()
        return Response(200, body, {"Content-Type": content_type})

    def openapi(self, request: Request) -> Response:
        from .openapi import document

        return Response.json(document(self.repository.names()))

    def page(self, request: Request) -> Response:
        if self.ui is None:
            raise ServingError("the web page is off on this server", 404)
        return Response(200, self.ui, {"Content-Type": "text/html; charset=utf-8"})


def _status_of(error: ModelAgnosticError) -> int:
    """The HTTP status of an error raised on purpose: a serving or protocol error's own,
    else 400 (the client's input: a bad image, wrong arrays)."""
    return error.status if isinstance(error, (ServingError, ProtocolError)) else 400


class Unauthorized(ServingError):
    """No or a wrong bearer token (HTTP 401)."""

    status = 401


def _parity_parameters(parity: dict[str, Any] | None) -> dict[str, str]:
    """The verdict as Open Inference Protocol ``parameters`` (string values only)."""
    if parity is None:
        return {
            "parity": "unverified",
            "parity_note": "no parity report: served from a config, not an exported artifact",
        }
    parameters = {
        "parity": parity["verdict"],
        "parity_stages": ",".join(f"{k}={v}" for k, v in parity["stages"].items()),
    }
    if parity["unverified"]:
        parameters["parity_unverified"] = "; ".join(
            f"{u['stage']}: {u['reason']}" for u in parity["unverified"]
        )
    if parity["waivers"]:
        parameters["parity_waived"] = "; ".join(
            f"{w['stage']} by {w['flag']} ({w['source']}"
            + (f", user {w['user']}" if w.get("user") else "")
            + ")"
            for w in parity["waivers"]
        )
    if parity["referee_waivers"]:
        parameters["parity_referee_waivers"] = str(len(parity["referee_waivers"]))
    return parameters


def _platform(model: Model) -> str:
    return {
        "onnxruntime": "onnxruntime_onnx",
        "pytorch": "pytorch_libtorch",
        "remote": "remote",
    }.get(model.backend_name, model.backend_name or "unknown")


def _jsonable(value: Any) -> Any:
    """JSON for what ``process_result`` commonly returns: numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(
        f"process_result returned {type(value).__name__}, which is not JSON "
        "serialisable; return dicts, lists, str, numbers or numpy values"
    )
