"""gRPC transport for the remote backend: one channel to an Open Inference Protocol server.

:class:`GrpcTransport` calls ``inference.GRPCInferenceService`` with the messages of
:mod:`model_agnostic.protocol.grpc` (tensors as ``raw_input_contents`` /
``raw_output_contents``) and turns every failure into the remote backend's typed errors:
a server that cannot be reached is a :class:`~model_agnostic.RemoteConnectionError` naming
the address, a call past its deadline a :class:`~model_agnostic.RemoteTimeoutError`, a
status the server sent a :class:`~model_agnostic.RemoteStatusError` whose ``status`` is the
HTTP equivalent (NOT_FOUND is 404), a malformed answer a
:class:`~model_agnostic.RemoteResponseError`. grpcio is imported when a transport is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._deps import require
from ..errors import (
    ConfigError,
    ProtocolError,
    RemoteConnectionError,
    RemoteResponseError,
    RemoteStatusError,
    RemoteTimeoutError,
)
from ..model import Arrays
from ..protocol.grpc import convert

__all__ = ["HTTP_STATUS", "TRANSPORTS", "GrpcTransport", "grpc_target"]

#: The ways :class:`~model_agnostic.backends.remote.RemoteModel` reaches a server.
TRANSPORTS = ("http", "grpc")
#: gRPC status code name -> the HTTP status a :class:`RemoteStatusError` carries.
HTTP_STATUS = {
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}
_METHODS = ("ModelMetadata", "ModelInfer")
# UNAVAILABLE says both "no connection" and "the server is overloaded"; grpc's own
# connection failures read like these.
_UNREACHABLE = re.compile(
    r"failed to connect|errors resolving|connection refused|connection reset|socket closed|"
    r"unreachable|dns resolution|connections to all backends failing|http1\.x server",
    re.IGNORECASE,
)
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")


def grpc_target(url: str) -> str:
    """``host:port`` of ``host:port`` or ``grpc://host:port``, or a :class:`ConfigError`."""
    if not isinstance(url, str):
        raise ConfigError(f"remote url must be a string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    target = (rest if sep else url).rstrip("/")
    if sep and scheme != "grpc":
        hint = (
            "TLS over gRPC is not supported: use grpc:// on a trusted network, or "
            'transport = "http" with an https:// url'
            if scheme == "grpcs"
            else 'point it at the server\'s gRPC port, or use transport = "http" for it'
        )
        raise ConfigError(
            f"remote url {url!r} is not a gRPC address; transport 'grpc' takes host:port or "
            f"grpc://host:port ({hint})"
        )
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in target:
        raise ConfigError(
            f"remote url {url!r} must be host:port or grpc://host:port with a port and no "
            "path, e.g. '127.0.0.1:8001' ([::1]:8001 for IPv6)"
        )
    return target


class GrpcTransport:
    """``inference.GRPCInferenceService`` calls on one channel; thread-safe.

    Args:
        url: ``host:port`` or ``grpc://host:port`` (plaintext; TLS is not supported).
        headers: sent as gRPC metadata with every call, names lower-cased
            (``{"Authorization": "Bearer ..."}`` becomes ``authorization``).

    Every call multiplexes over the one HTTP/2 channel, which connects on the first call
    and reconnects by itself; messages of any size are allowed both ways.
    """

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        self.target = grpc_target(url)
        self.url = f"grpc://{self.target}"
        self.metadata = _metadata(headers or {})
        self._grpc = require("grpc", "RemoteModel over gRPC")
        self._pb = convert.messages()
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = self._grpc.insecure_channel(self.target, options=options)
        self._calls = {
            name: self._channel.unary_unary(
                f"/inference.GRPCInferenceService/{name}",
                request_serializer=getattr(self._pb, f"{name}Request").SerializeToString,
                response_deserializer=getattr(self._pb, f"{name}Response").FromString,
            )
            for name in _METHODS
        }

    def call(self, method: str, request: Any, timeout: float) -> Any:
        """One RPC within ``timeout`` seconds; its response, or a typed remote error."""
        try:
            return self._calls[method](request, timeout=timeout, metadata=self.metadata)
        except self._grpc.RpcError as exc:
            raise self._error(method, exc, timeout) from None

    def model_metadata(self, name: str, version: str | None, timeout: float) -> dict[str, Any]:
        """The model's metadata as the HTTP document (``specs_from_metadata`` reads it)."""
        request = self._pb.ModelMetadataRequest(name=name, version=version or "")
        return convert.metadata_document(self.call("ModelMetadata", request, timeout))

    def infer(
        self,
        name: str,
        version: str | None,
        inputs: Arrays,
        outputs: Sequence[str],
        timeout: float,
    ) -> tuple[Arrays, str | None]:
        """``outputs`` of one ModelInfer, and the version the server reported (or None)."""
        request = convert.encode_infer_request(
            name, inputs, model_version=version or "", outputs=outputs
        )
        answer = self.call("ModelInfer", request, timeout)
        try:
            arrays, meta = convert.decode_infer_response(answer)
        except ProtocolError as exc:
            raise RemoteResponseError(
                f"{self.where('ModelInfer')}: malformed inference response: {exc}"
            ) from None
        return arrays, meta["model_version"] or None

    def where(self, method: str) -> str:
        """How errors name a call: ``grpc://host:port ModelInfer``."""
        return f"{self.url} {method}"

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _error(self, method: str, exc: Any, timeout: float) -> Exception:
        code = exc.code()
        name = getattr(code, "name", str(code))
        details = exc.details() or "(no details)"
        where = self.where(method)
        if name == "DEADLINE_EXCEEDED":
            return RemoteTimeoutError(f"{where} gave no answer within timeout_s={timeout:g}")
        if name == "UNAVAILABLE" and _UNREACHABLE.search(details):
            hint = (
                f"{self.target} answers HTTP/1, not gRPC: use the server's gRPC port"
                if "http1.x" in details
                else "is the server running, and is this its gRPC port?"
            )
            return RemoteConnectionError(f"{where} failed: {details}; {hint}")
        status = HTTP_STATUS.get(name, 500)
        if name == "RESOURCE_EXHAUSTED" and not re.search(r"larger than max|limit", details):
            status = 503  # a full queue or a quota, not a message over a size limit
        return RemoteStatusError(f"{where} answered gRPC {name}: {details}", status)


def _metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Headers as gRPC metadata: lower-case names, which gRPC requires."""
    pairs = []
    for key, value in headers.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise ConfigError(f"remote headers must map strings to strings, got {key!r}: {value!r}")
        name = key.lower()
        if not _METADATA_KEY.fullmatch(name) or name.startswith("grpc-") or name.endswith("-bin"):
            raise ConfigError(
                f"remote header {key!r} cannot be gRPC metadata: names are letters, digits, "
                "'-', '_' and '.', not starting with 'grpc-' nor ending in '-bin'"
            )
        pairs.append((name, value))
    return tuple(pairs)
