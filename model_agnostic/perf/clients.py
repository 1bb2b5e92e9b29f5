"""Load-test clients over HTTP: one keep-alive connection each, pre-encoded requests.

A client's :meth:`HttpClient.send` makes one request, decodes the answer and returns it;
any failure is a :class:`RequestFailed` whose ``kind`` is how the report counts it:
``HTTP 404``, ``connection``, ``timeout`` or ``bad response`` (a 2xx answer that does not
decode). :func:`tensor_client` POSTs one v2 infer request (binary or JSON) to
``/v2/models/{name}/infer``; :func:`file_client` POSTs files to ``/v2/models/{name}/predict``
in turn. The gRPC client is in :mod:`.grpc_client`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np

from ..backends.remote import RemoteModel
from ..backends.transport import HTTPTransport, Response
from ..errors import (
    ProtocolError,
    RemoteConnectionError,
    RemoteError,
    RemoteTimeoutError,
)
from ..protocol import HEADER_LENGTH, decode_infer_response, encode_infer_request
from ..tensors import TensorSpec
from .workload import Upload

__all__ = [
    "Client",
    "HttpClient",
    "RequestFailed",
    "Target",
    "fetch_signature",
    "file_client",
    "tensor_client",
]

#: Error kinds that are not a status the server sent.
CONNECTION, TIMEOUT, BAD_RESPONSE = "connection", "timeout", "bad response"


class RequestFailed(Exception):
    """One request failed; ``kind`` groups it in the report (``HTTP 503``, ``timeout``...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Client(Protocol):
    """Sends one request at a time over its own connection."""

    def send(self) -> Any:
        """One request; the decoded answer, or :class:`RequestFailed`."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


@dataclass(frozen=True)
class Target:
    """Where requests go: server ``url``, model ``name`` and ``version`` (None: the server's
    choice), extra ``headers`` on every request, and the per-request ``timeout_s``."""

    url: str
    model: str
    version: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0

    def path(self, endpoint: str) -> str:
        """``/v2/models/{name}[/versions/{v}]/{endpoint}``, names URL-quoted."""
        path = f"/v2/models/{quote(self.model, safe='')}"
        if self.version:
            path += f"/versions/{quote(self.version, safe='')}"
        return f"{path}/{endpoint}"


class HttpClient:
    """POSTs ``bodies`` in turn (starting at ``start``) to ``path`` over one connection;
    ``decode`` turns a 2xx answer into the result (raising on a malformed one)."""

    def __init__(
        self,
        target: Target,
        path: str,
        bodies: Sequence[tuple[bytes, Mapping[str, str]]],
        decode: Callable[[Response], Any],
        start: int = 0,
    ) -> None:
        self.target, self.path, self.bodies, self.decode = target, path, bodies, decode
        self._next = start % len(bodies)
        self._transport = HTTPTransport(target.url, max_connections=1)

    def send(self) -> Any:
        body, headers = self.bodies[self._next]
        self._next = (self._next + 1) % len(self.bodies)
        try:
            answer = self._transport.request(
                "POST", self.path, body, {**self.target.headers, **headers}, self.target.timeout_s
            )
        except RemoteTimeoutError as exc:
            raise RequestFailed(TIMEOUT, str(exc)) from None
        except RemoteConnectionError as exc:
            raise RequestFailed(CONNECTION, str(exc)) from None
        except RemoteError as exc:
            raise RequestFailed(BAD_RESPONSE, str(exc)) from None
        if not 200 <= answer.status < 300:
            text = answer.body[:300].decode("utf-8", "replace").strip()
            raise RequestFailed(f"HTTP {answer.status}", f"POST {self.path}: {text}")
        try:
            return self.decode(answer)
        except (ProtocolError, ValueError) as exc:
            raise RequestFailed(BAD_RESPONSE, f"POST {self.path}: {exc}") from None

    def close(self) -> None:
        self._transport.close()


def tensor_client(
    target: Target,
    inputs: Mapping[str, np.ndarray],
    *,
    binary: bool = True,
    outputs: Sequence[str] | None = None,
) -> Callable[[int], HttpClient]:
    """A factory of clients that POST the same v2 infer request (encoded once)."""
    body = encode_infer_request(inputs, binary=binary, outputs=outputs, binary_outputs=binary)
    path = target.path("infer")
    return lambda index: HttpClient(target, path, [body], decode_tensors)


def file_client(target: Target, uploads: Sequence[Upload]) -> Callable[[int], HttpClient]:
    """A factory of clients that POST ``uploads`` in turn, client ``i`` starting at file ``i``."""
    bodies = [(upload.body, {"Content-Type": upload.content_type}) for upload in uploads]
    path = target.path("predict")
    return lambda index: HttpClient(target, path, bodies, decode_json, start=index)


def decode_tensors(answer: Response) -> dict[str, np.ndarray]:
    """The outputs of a v2 infer answer, JSON or binary."""
    return decode_infer_response(answer.body, answer.headers.get(HEADER_LENGTH.lower()))[0]


def decode_json(answer: Response) -> Any:
    """A JSON answer (``/predict``'s ``{"result": ...}``)."""
    return json.loads(answer.body)


def fetch_signature(target: Target, transport: str = "http") -> list[TensorSpec]:
    """The model's input specs from its v2 metadata, over ``"http"`` or ``"grpc"``.

    Raises the remote backend's errors, which say what is wrong: a
    :class:`~model_agnostic.errors.ModelLoadError` for a model the server does not have,
    a :class:`~model_agnostic.errors.RemoteConnectionError` for a server that is down.
    """
    model = RemoteModel(
        target.url,
        target.model,
        model_version=target.version,
        binary=True,  # read no /v2 extensions: only the model's metadata is wanted
        timeout_s=target.timeout_s,
        headers=dict(target.headers),
        transport=transport,
    )
    model.close()
    return list(model.inputs)
