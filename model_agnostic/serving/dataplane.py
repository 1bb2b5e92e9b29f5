"""The I/O-free data plane: one HTTP-shaped request in, one response out.

Knows nothing about Flask, Django, gRPC or sockets. The adapters and the WSGI server turn
their framework's request into a :class:`Request`, call :meth:`DataPlane.handle` and
send back the :class:`Response`. Every error becomes JSON ``{"error": "..."}`` with the
status the Open Inference Protocol peers use (see docs/serving.md). The gRPC service
(``grpc_server.py``) calls the same transport-neutral operations as the HTTP handlers.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from .. import __version__, protocol
from ..errors import (
    InferenceError,
    MissingDependencyError,
    ModelAgnosticError,
    ModelLoadError,
    ProtocolError,
    RemoteError,
    RemoteTimeoutError,
    ServingError,
)
from ..model import Arrays, Model
from ..tensors import TensorSpec, check_arrays
from .explain import Answer, explain_answer, predict_answer, require_heatmaps
from .messages import Limits, Request, Response
from .metrics import Metrics
from .model_info import aligned, parity_parameters, platform, signature
from .repository import ModelRepository, ServedVersion
from .tfserving_routes import tfserving_routes
from .uploads import check_pixels, read_upload

__all__ = ["DataPlane", "Limits", "Request", "Response", "signature", "status_of"]

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "model_repository"]
_NAME = r"(?P<name>[^/]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"
_AUTH_HEADER = "'Authorization: Bearer <token>'"
_NEEDS_TOKEN = {"infer", "predict", "explain", "control", "tfserving_predict"}
_D = TypeVar("_D")
_R = TypeVar("_R")


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
            ("POST", re.compile(rf"/v2/models/{_NAME}{_VERSION}/explain"), self.explain),
            *tfserving_routes(self),
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

    # ------------------------------------------------ transport-neutral operations
    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Count one request as being answered while inside (draining waits for these)."""
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1

    def authorize(self, authorization: str | None, needed: str = _AUTH_HEADER) -> None:
        """With a token set, raise :class:`Unauthorized` unless ``authorization`` is
        ``Bearer <the token>``; ``needed`` says where it goes (HTTP header, gRPC metadata)."""
        if self._token is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(f"this endpoint needs {needed}")
        if not hmac.compare_digest(token.strip().encode(), self._token or b""):
            raise Unauthorized("the bearer token is not valid")

    def server_document(self) -> dict[str, Any]:
        return {"name": "model_agnostic", "version": __version__, "extensions": EXTENSIONS}

    def index_document(self) -> list[dict[str, Any]]:
        """Triton's repository index: every model with its served versions."""
        return [  # one snapshot, so versions and state agree
            {
                "name": name,
                "versions": details["served"],
                "state": "READY" if details["served"] else "UNAVAILABLE",
                "details": details,
            }
            for name, details in self.repository.status().items()
        ]

    def control_model(self, name: str, action: str) -> dict[str, Any]:
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
        return {"name": name, "action": action, "versions": self.repository.ready_versions(name)}

    def metadata_document(self, name: str, version: str | None) -> dict[str, Any]:
        """The model metadata document, with the parity verdict as ``parameters``."""
        with self.repository.acquire(name, version) as served:
            inputs, outputs = signature(served.model)
            versions = [version] if version else self.repository.ready_versions(name)
            document = protocol.model_metadata(
                name, versions, platform(served.model), inputs, outputs
            )
            document["parameters"] = parity_parameters(served.model.artifact_parity)
            if served.model.can_explain():  # POST .../explain answers (the web page asks)
                document["parameters"]["heatmaps"] = "class activation maps"
            return document

    def model_is_ready(self, name: str, version: str | None) -> bool:
        """Whether the model (version) answers now; raises 404 for one that does not exist."""
        try:
            with self.repository.acquire(name, version):
                return True
        except ServingError as exc:
            if exc.status == 404:
                raise
            return False

    def run_inference(
        self,
        name: str,
        version: str | None,
        endpoint: str,
        decode: Callable[[list[TensorSpec]], tuple[Arrays, _D]],
        encode: Callable[[ServedVersion, _D, Arrays], _R],
    ) -> _R:
        """One inference, whatever the transport: pin a version (counted in the metrics
        under ``endpoint``), ``decode(input specs)`` the request into arrays and what
        ``encode`` needs, check the arrays against the model, run them (:func:`aligned`)
        through the version's batcher, and ``encode(served, decoded, outputs)`` the answer."""
        with self._serving(name, version, endpoint) as served:
            inputs, _ = signature(served.model)
            arrays, decoded = decode(inputs)
            check_arrays(inputs, arrays, "the request", protocol.datatype_of)
            return encode(served, decoded, self._run(served, aligned(arrays)))

    # ----------------------------------------------------------------- routing
    def handle(self, request: Request) -> Response:
        """Answer one request; never raises."""
        with self.tracking():
            return self._route(request)

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
            if getattr(handler, "__name__", "") in _NEEDS_TOKEN:
                self.authorize(request.header("Authorization"))
            return handler(request, **params)
        except ModelAgnosticError as exc:
            response = Response.error(str(exc), status_of(exc))
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = 'Bearer realm="model_agnostic"'
            return response
        except Exception as exc:  # a bug or a backend crash: logged, reported, server alive
            log.exception("internal error answering %s %s", request.method, request.path)
            return Response.error(f"internal error: {type(exc).__name__}: {exc}", 500)

    # ----------------------------------------------------------- HTTP handlers
    def live(self, request: Request) -> Response:
        return Response.json({"live": True})

    def ready(self, request: Request) -> Response:
        ready = self.repository.ready
        return Response.json({"ready": ready}, 200 if ready else 503)

    def server_metadata(self, request: Request) -> Response:
        return Response.json(self.server_document())

    def index(self, request: Request) -> Response:
        return Response.json(self.index_document())

    def control(self, request: Request, name: str, action: str) -> Response:
        return Response.json(self.control_model(name, action))

    def model_metadata(self, request: Request, name: str, version: str | None) -> Response:
        return Response.json(self.metadata_document(name, version))

    def model_ready(self, request: Request, name: str, version: str | None) -> Response:
        ready = self.model_is_ready(name, version)
        return Response.json({"name": name, "ready": ready}, 200 if ready else 503)

    def infer(self, request: Request, name: str, version: str | None) -> Response:
        def decode(inputs: list[TensorSpec]) -> tuple[Arrays, protocol.InferRequest]:
            decoded = protocol.decode_infer_request(
                request.body,
                request.header(protocol.HEADER_LENGTH),
                max_elements=self.limits.max_elements,
                max_depth=self.limits.max_json_depth,
                raw_input=inputs[0] if len(inputs) == 1 else None,
            )
            return decoded.inputs, decoded

        def encode(
            served: ServedVersion, decoded: protocol.InferRequest, outputs: Arrays
        ) -> Response:
            body, headers = protocol.encode_infer_response(name, served.version, decoded, outputs)
            return Response(200, body, headers)

        return self.run_inference(name, version, "infer", decode, encode)

    def predict(self, request: Request, name: str, version: str | None) -> Response:
        """Convenience: raw image bytes (or a multipart upload) -> the model's own result."""
        return self.raw_inference(request, name, version, "predict", predict_answer)

    def explain(self, request: Request, name: str, version: str | None) -> Response:
        """The result and heatmaps (``?top_k=3``, ``?label=...``; :mod:`.explain`)."""
        answer = explain_answer(request.query)
        return self.raw_inference(request, name, version, "explain", answer, require_heatmaps)

    def raw_inference(
        self,
        request: Request,
        name: str,
        version: str | None,
        endpoint: str,
        answer: Answer,
        before: Callable[[Model], None] | None = None,
    ) -> Response:
        """A raw upload through the model's preprocessing and the version's batcher;
        ``answer(model, raw, outputs)`` makes the JSON document's fields; ``before(model)``
        may refuse the request before the upload is even read."""
        started = time.perf_counter()
        with self._serving(name, version, endpoint) as served:
            if before is not None:
                before(served.model)
            raw = read_upload(request.body, request.header("Content-Type"))
            check_pixels(raw, self.limits.max_image_pixels)
            arrays = served.model.prepare(raw)
            served.model.check_inputs(arrays)
            fields = answer(served.model, raw, self._run(served, arrays))
            latency = round((time.perf_counter() - started) * 1e3, 3)
            return Response.json(
                {
                    "model_name": name,
                    "model_version": served.version,
                    **fields,
                    "latency_ms": latency,
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
                status = status_of(exc)
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


def status_of(error: ModelAgnosticError) -> int:
    """The HTTP status of an error raised on purpose: a serving or protocol error's own;
    504/502 when a remote backend timed out or failed, 501 for a missing optional
    dependency, 500 when the model itself failed; else 400 (the client's input: a bad
    image, wrong arrays)."""
    if isinstance(error, (ServingError, ProtocolError)):
        return error.status
    if isinstance(error, RemoteTimeoutError):
        return 504
    if isinstance(error, RemoteError):
        return 502
    if isinstance(error, MissingDependencyError):
        return 501
    if isinstance(error, (InferenceError, ModelLoadError)):
        return 500
    return 400


class Unauthorized(ServingError):
    """No or a wrong bearer token (HTTP 401)."""

    status = 401
