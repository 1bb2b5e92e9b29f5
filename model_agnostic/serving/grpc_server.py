"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on the data plane.

Every RPC calls the same :class:`~model_agnostic.serving.dataplane.DataPlane` operations the
HTTP endpoints call: the same repository (hot swap), batcher, limits, token and metrics.
Errors map to gRPC status codes (:data:`CODES`) with the HTTP error's message; nothing a
client sends stops the server. The service is registered with
``grpc.method_handlers_generic_handler`` over the generated messages (no ``_pb2_grpc``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

from .._deps import require
from ..errors import ConfigError, ModelAgnosticError
from ..model import Arrays
from ..protocol.grpc import convert
from ..tensors import TensorSpec
from .dataplane import DataPlane, status_of
from .options import ServerOptions
from .repository import ServedVersion

__all__ = ["CODES", "ENDPOINT", "SERVICE", "GrpcServer", "InferenceServicer", "service_handler"]

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
#: The metrics' ``endpoint`` label of ModelInfer (HTTP's is ``infer``).
ENDPOINT = "grpc_infer"
#: HTTP status -> gRPC status code name; anything else is INTERNAL.
CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_AUTH_METADATA = "the gRPC metadata 'authorization: Bearer <token>'"


class InferenceServicer:
    """The RPCs; each takes the request message and the gRPC context."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.pb = convert.messages()

    def ServerLive(self, request: Any, context: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.dataplane.repository.ready)

    def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.dataplane.model_is_ready(request.name, request.version or None)
        return self.pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return self.pb.ServerMetadataResponse(**self.dataplane.server_document())

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        document = self.dataplane.metadata_document(request.name, request.version or None)
        return convert.metadata_message(document)

    def ModelInfer(self, request: Any, context: Any) -> Any:
        self.dataplane.authorize(_authorization(context), _AUTH_METADATA)
        limit = self.dataplane.limits.max_elements

        def decode(specs: list[TensorSpec]) -> tuple[Arrays, convert.DecodedRequest]:
            decoded = convert.decode_infer_request(request, max_elements=limit)
            return decoded.inputs, decoded

        def encode(served: ServedVersion, decoded: convert.DecodedRequest, outputs: Arrays) -> Any:
            return convert.encode_infer_response(
                request.model_name, served.version, decoded, outputs
            )

        return self.dataplane.run_inference(
            request.model_name, request.model_version or None, ENDPOINT, decode, encode
        )

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        """One entry per model version: READY (served), LOADING, or UNAVAILABLE with the
        load error; a model with no version at all is one UNAVAILABLE entry."""
        response = self.pb.RepositoryIndexResponse()
        for model in self.dataplane.index_document():
            details = model["details"]
            entries = [(v, "READY", "") for v in details["served"]]
            entries += [(v, "LOADING", "") for v in details["loading"]]
            entries += [(v, "UNAVAILABLE", f["error"]) for v, f in details["failed"].items()]
            if request.ready:
                entries = [entry for entry in entries if entry[1] == "READY"]
            elif not entries:
                entries = [("", "UNAVAILABLE", "no version is loaded")]
            for version, state, reason in entries:
                response.models.add(name=model["name"], version=version, state=state, reason=reason)
        return response

    def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        self.dataplane.authorize(_authorization(context), _AUTH_METADATA)
        self.dataplane.control_model(request.model_name, "load")
        return self.pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self.dataplane.authorize(_authorization(context), _AUTH_METADATA)
        self.dataplane.control_model(request.model_name, "unload")
        return self.pb.RepositoryModelUnloadResponse()


def _authorization(context: Any) -> str | None:
    """The ``authorization`` metadata value (gRPC metadata keys are lower case)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return str(value)
    return None


def service_handler(dataplane: DataPlane) -> Any:
    """The ``grpc.GenericRpcHandler`` serving :class:`InferenceServicer` over ``dataplane``."""
    grpc = require("grpc", "The gRPC server")
    servicer = InferenceServicer(dataplane)
    pb = servicer.pb
    handlers = {}
    for name in (
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _guarded(grpc, dataplane, name, getattr(servicer, name)),
            request_deserializer=getattr(pb, f"{name}Request").FromString,
            response_serializer=getattr(pb, f"{name}Response").SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _guarded(
    grpc: Any, dataplane: DataPlane, name: str, method: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    """``method`` counted as a request being answered, every error a gRPC status."""

    def call(request: Any, context: Any) -> Any:
        with dataplane.tracking():
            try:
                return method(request, context)
            except ModelAgnosticError as exc:
                status, message = status_of(exc), str(exc)
            except Exception as exc:  # a bug or a backend crash: logged, reported, server alive
                log.exception("internal error answering gRPC %s", name)
                status, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        context.abort(getattr(grpc.StatusCode, CODES.get(status, "INTERNAL")), message)

    return call


class GrpcServer:
    """The gRPC service of one data plane: ``start()``, ``drain()``, ``stop()``.

    Listens on ``options.host:options.grpc_port`` (0 picks a free port; :attr:`port` is the
    one bound), with ``options.threads`` worker threads, at most ``threads * 8`` (at least
    100) RPCs at once (more get RESOURCE_EXHAUSTED) and messages up to
    ``max_request_bytes`` (larger ones get RESOURCE_EXHAUSTED before they are parsed).
    """

    def __init__(self, dataplane: DataPlane, options: ServerOptions) -> None:
        self.dataplane = dataplane
        self.options = options
        self.port: int | None = None
        self._server: Any = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self._stopped: threading.Event | None = None

    @property
    def address(self) -> str:
        host = self.options.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> GrpcServer:
        grpc = require("grpc", "The gRPC server")
        wanted = self.options.grpc_port
        if type(wanted) is not int or not 0 <= wanted <= 65535:
            raise ConfigError(f"[server] grpc_port must be a port 0-65535, got {wanted!r}")
        threads = self.options.threads
        self._pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="model_agnostic-grpc")
        self._server = grpc.server(
            self._pool,
            handlers=[service_handler(self.dataplane)],
            options=[
                ("grpc.max_receive_message_length", self.options.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ],
            maximum_concurrent_rpcs=max(100, threads * 8),
        )
        host = self.options.host
        target = f"[{host}]:{wanted}" if ":" in host else f"{host}:{wanted}"
        try:
            self.port = self._server.add_insecure_port(target)
        except RuntimeError as exc:
            self.port = 0
            reason = f": {exc}"
        else:
            reason = ""
        if not self.port:
            self._pool.shutdown(wait=False)
            raise ConfigError(f"cannot listen for gRPC on {target} (in use?){reason}")
        self._server.start()
        return self

    def drain(self, timeout: float) -> threading.Event:
        """Refuse new RPCs now; the event is set once every accepted RPC is answered
        (those still running ``timeout`` + 5 s from now are cancelled)."""
        if self._stopped is None:
            self._stopped = self._server.stop(grace=timeout + 5.0)
        return self._stopped

    def stop(self) -> None:
        """Cancel whatever is still running and close the port."""
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
