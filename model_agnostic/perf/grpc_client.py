"""The load-test client over gRPC: ``ModelInfer`` on a channel (and connection) of its own.

The request is serialized once and sent as bytes; every answer is parsed and decoded.
Failures are :class:`~.clients.RequestFailed` with kind ``gRPC NOT_FOUND`` (the status
code's name), ``timeout`` (DEADLINE_EXCEEDED), ``connection`` (UNAVAILABLE because the
server cannot be reached) or ``bad response``. grpcio is imported when a client is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._deps import require
from ..backends.grpc_transport import grpc_target
from ..protocol.grpc import convert
from .clients import BAD_RESPONSE, CONNECTION, TIMEOUT, RequestFailed, Target

__all__ = ["GrpcClient", "grpc_client"]

_INFER = "/inference.GRPCInferenceService/ModelInfer"
# UNAVAILABLE also means "overloaded" or "not ready"; these details mean "never connected".
_UNREACHABLE = re.compile(
    r"failed to connect|connection refused|connection reset|socket closed|unreachable|"
    r"connections to all backends failing|dns resolution|errors resolving",
    re.IGNORECASE,
)


class GrpcClient:
    """Sends the serialized ``request`` over a channel that shares no connection."""

    def __init__(self, target: Target, request: bytes) -> None:
        grpc = require("grpc", "model-agnostic perf over gRPC")
        self._error_type = grpc.RpcError
        self._pb = convert.messages()
        self.target, self.request = target, request
        self.metadata = tuple((k.lower(), v) for k, v in target.headers.items())
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.use_local_subchannel_pool", 1),  # a connection of its own, not the process's
        ]
        self._channel = grpc.insecure_channel(grpc_target(target.url), options=options)
        self._infer = self._channel.unary_unary(_INFER)  # bytes in, bytes out

    def send(self) -> dict[str, np.ndarray]:
        try:
            raw = self._infer(self.request, timeout=self.target.timeout_s, metadata=self.metadata)
        except self._error_type as exc:
            raise _failure(exc) from None
        try:
            message = self._pb.ModelInferResponse.FromString(raw)
            return convert.decode_infer_response(message)[0]
        except Exception as exc:  # a ProtocolError, or protobuf's DecodeError
            raise RequestFailed(BAD_RESPONSE, f"ModelInfer: {exc}") from None

    def close(self) -> None:
        self._channel.close()


def grpc_client(
    target: Target, inputs: Mapping[str, np.ndarray], *, outputs: Sequence[str] | None = None
) -> Callable[[int], GrpcClient]:
    """A factory of clients that send the same ``ModelInfer`` request (encoded once)."""
    message = convert.encode_infer_request(
        target.model, inputs, model_version=target.version or "", outputs=outputs
    )
    request = message.SerializeToString()
    return lambda index: GrpcClient(target, request)


def _failure(exc: Any) -> RequestFailed:
    code = exc.code()
    name = getattr(code, "name", str(code))
    details = exc.details() or "(no details)"
    if name == "DEADLINE_EXCEEDED":
        return RequestFailed(TIMEOUT, f"ModelInfer: {details}")
    if name == "UNAVAILABLE" and _UNREACHABLE.search(details):
        return RequestFailed(CONNECTION, f"ModelInfer: {details}")
    return RequestFailed(f"gRPC {name}", f"ModelInfer: {details}")
