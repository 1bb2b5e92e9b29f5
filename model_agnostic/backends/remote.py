"""Remote backend: the user's hooks run here, ``infer`` runs on an inference server.

Two protocols over HTTP: ``"v2"``, the Open Inference Protocol (KServe v2, Triton), with
the binary tensor extension when the server has it; and ``"v1"``, TF-Serving / KServe v1
``:predict``. Only the standard library is used there:
:class:`~model_agnostic.backends.transport.HTTPTransport` pools keep-alive ``http.client``
connections. ``transport="grpc"`` speaks v2 over gRPC instead
(:class:`~model_agnostic.backends.grpc_transport.GrpcTransport`, grpcio).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, cast
from urllib.parse import quote

import numpy as np

from .. import rows
from ..errors import (
    ConfigError,
    ModelLoadError,
    ProtocolError,
    RemoteConnectionError,
    RemoteError,
    RemoteResponseError,
    RemoteStatusError,
    RemoteTimeoutError,
)
from ..model import Arrays, Model
from ..protocol import (
    HEADER_LENGTH,
    decode_infer_response,
    decode_v1_response,
    encode_infer_request,
    encode_v1_request,
    specs_from_metadata,
)
from ..tensors import TensorSpec
from .grpc_transport import GrpcTransport
from .remote_checks import (
    PROTOCOLS,
    check_outputs,
    check_settings,
    check_transport,
    refuse_non_finite,
)
from .transport import HTTPTransport, MockTransport, Response, Transport

__all__ = ["RemoteModel", "PROTOCOLS", "Transport", "HTTPTransport", "MockTransport", "Response"]

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}
_GRPC_TRANSFER = "gRPC, raw tensor contents (raw_input_contents / raw_output_contents)"


class RemoteModel(Model):
    """Runs ``infer`` on a remote inference server; preprocessing and results stay local.

    Args:
        url: the server, ``http://host:port`` (an optional path prefix and https work);
            over gRPC ``host:port`` or ``grpc://host:port``.
        model_name: the model's name on the server.
        model_version: a version to pin; ``None`` lets the server choose.
        protocol: ``"v2"`` (Open Inference Protocol) or ``"v1"`` (TF-Serving ``:predict``).
        binary: v2 over HTTP: ``"auto"`` (default) reads the server's metadata once and
            uses the binary tensor extension only if it advertises ``binary_tensor_data``
            (MLServer does not, and answers binary requests with HTTP 500); ``True``
            forces binary tensors, ``False`` plain JSON. :attr:`transfer` says which was
            chosen and why. gRPC always sends raw bytes (``False`` is refused there).
        allow_non_finite: accept NaN or infinite values in outputs; by default they are a
            :class:`RemoteResponseError` naming the output (usually a broken model).
        timeout_s: limit on one request, waiting for a pooled connection included.
        connect_timeout_s: HTTP only: limit on opening one connection.
        max_connections: HTTP only: connections kept open to the server at most.
        headers: extra HTTP headers on every request (e.g. ``Authorization``); gRPC
            metadata over gRPC, names lower-cased.
        transport: ``"http"`` (default: an :class:`HTTPTransport` to ``url``), ``"grpc"``
            (v2 over gRPC, tensors as raw contents: a :class:`GrpcTransport`), or such
            an object, e.g. a :class:`MockTransport`.
        **options: the user class's options.

    With ``"v2"`` the model's signature (``inputs``, ``outputs``) is read from the server
    at construction. ``"v1"`` has no metadata: the specs carry names only (shape ``None``),
    outputs are float32 unless the class maps a name to a dtype in :attr:`v1_dtypes`.
    """

    backend_name: ClassVar[str] = "remote"
    #: v1 only: dtype of a tensor by name (default float32); v2 reads dtypes from the server.
    v1_dtypes: ClassVar[Mapping[str, str]] = {}

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        model_version: str | None = None,
        protocol: str = "v2",
        binary: bool | str = "auto",
        allow_non_finite: bool = False,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
        transport: str | Transport | GrpcTransport | None = "http",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        check_settings(url, model_name, protocol, timeout_s, headers)
        check_transport(transport, protocol, binary)
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.model_version = model_version
        self.protocol = protocol
        if not (isinstance(binary, bool) or binary == "auto"):
            raise ConfigError(f'remote binary must be true, false or "auto", got {binary!r}')
        self.binary = binary is True
        #: How tensors travel and why: ``"binary (...)"``, ``"JSON (...)"`` or ``"gRPC, ..."``.
        self.transfer = (
            "JSON (v1 has no binary form)"
            if protocol == "v1"
            else ("binary (forced: binary = true)" if binary is True else "JSON (binary = false)")
        )
        self.allow_non_finite = bool(allow_non_finite)
        self.timeout_s = float(timeout_s)
        self.headers = dict(headers or {})
        self.transport: Transport | GrpcTransport
        if isinstance(transport, GrpcTransport):
            self.transport = transport
        elif transport == "grpc":
            self.transport = GrpcTransport(url, headers=self.headers)
        elif transport in (None, "http"):
            self.transport = HTTPTransport(
                url, max_connections=max_connections, connect_timeout_s=connect_timeout_s
            )
        else:
            self.transport = cast(Transport, transport)
        if isinstance(self.transport, GrpcTransport):
            self.url, self.binary, self.transfer = self.transport.url, True, _GRPC_TRANSFER
        self._local = threading.local()
        try:
            if isinstance(self.transport, GrpcTransport):
                self._load_grpc_signature(self.transport)
            elif protocol == "v2":
                if binary == "auto":
                    self._negotiate()
                self._load_v2_signature()
            else:
                self._load_v1_signature()
        except BaseException:
            if isinstance(transport, str) or transport is None:
                self.transport.close()
            raise

    # ----------------------------------------------------------------- public
    def infer(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        """Send one inference request (v2: asking for ``outputs`` only, when given)."""
        if self.protocol == "v1":
            result = self._infer_v1(inputs)
            return result if outputs is None else {name: result[name] for name in outputs}
        wanted = list(self.output_names) if outputs is None else list(outputs)
        if isinstance(self.transport, GrpcTransport):
            arrays, version = self.transport.infer(
                self.model_name, self.model_version, inputs, wanted, self.timeout_s
            )
            where = self.transport.where("ModelInfer")
            return self._accept(arrays, wanted, rows.count(inputs), version, where)
        return self._infer_v2(inputs, wanted)

    def cam_weights(self) -> np.ndarray:
        base = "" if isinstance(self.transport, GrpcTransport) else self.url
        raise ConfigError(
            "heatmaps are computed where the model runs: ask the server, "
            f"POST {base}/v2/models/{self.model_name}/explain with the image (over HTTP)"
        )

    @property
    def last_model_version(self) -> str | None:
        """The version the server reported for this thread's last ``infer`` (v2), else ``None``."""
        return cast("str | None", getattr(self._local, "model_version", None))

    def close(self) -> None:
        """Close the pooled connections."""
        self.transport.close()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        version = f" version {self.model_version}" if self.model_version else ""
        return (
            f"<{type(self).__qualname__} on remote {self.protocol} "
            f"{self.url} model {self.model_name!r}{version}, {self.transfer}>"
        )

    # ------------------------------------------------------------- negotiation
    def _negotiate(self) -> None:
        """Binary tensors only if the server's metadata advertises ``binary_tensor_data``."""
        response = self._send("GET", "/v2", None, {"Accept": "application/json"})
        extensions: Any = None
        if 200 <= response.status < 300:
            doc = _json_body(response, self.url + "/v2")
            extensions = doc.get("extensions") if isinstance(doc, dict) else None
        if isinstance(extensions, list) and "binary_tensor_data" in extensions:
            self.binary, self.transfer = True, "binary (the server advertises binary_tensor_data)"
        elif isinstance(extensions, list):
            self.binary, self.transfer = (
                False,
                (
                    f"JSON (the server advertises {extensions or 'no extensions'}, "
                    "not binary_tensor_data)"
                ),
            )
        else:
            self.binary, self.transfer = (
                False,
                (f"JSON (no server metadata: GET /v2 answered {response.status})"),
            )
        log.info("%s at %s: tensors as %s", self.model_name, self.url, self.transfer)

    # ---------------------------------------------------------------- signature
    def _model_path(self) -> str:
        path = f"/v2/models/{quote(self.model_name, safe='')}"
        if self.model_version:
            path += f"/versions/{quote(self.model_version, safe='')}"
        return path

    def _load_v2_signature(self) -> None:
        path = self._model_path()
        response = self._send("GET", path, None, {"Accept": "application/json"})
        if response.status == 404:
            raise self._unknown_model(f"GET {path} answered 404: {_error_message(response)}")
        where = self.url + path
        self._adopt_metadata(_json_body(_ok(response, where), where), where)

    def _load_grpc_signature(self, grpc: GrpcTransport) -> None:
        try:
            doc = grpc.model_metadata(self.model_name, self.model_version, self.timeout_s)
        except RemoteStatusError as exc:
            if exc.status != 404:
                raise
            raise self._unknown_model(str(exc)) from None
        self._adopt_metadata(doc, grpc.where("ModelMetadata"))

    def _unknown_model(self, answer: str) -> ModelLoadError:
        version = f" version {self.model_version!r}" if self.model_version else ""
        return ModelLoadError(
            f"the server at {self.url} does not serve model {self.model_name!r}{version} "
            f"({answer}); check model_name and model_version"
        )

    def _adopt_metadata(self, doc: Any, where: str) -> None:
        try:
            inputs, outputs = specs_from_metadata(doc)
        except ProtocolError as exc:
            raise RemoteResponseError(f"{where}: {exc}") from None
        self.inputs, self.outputs = self._adopt_names(inputs, outputs)

    def _adopt_names(
        self, inputs: list[TensorSpec], outputs: list[TensorSpec]
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Check the class's names against the server's; the specs this model uses."""
        server_in = [spec.name for spec in inputs]
        server_out = [spec.name for spec in outputs]
        declared_in, declared_out = type(self).input_names, type(self).output_names
        if declared_in == Model.input_names:
            declared_in = tuple(server_in)
        if declared_out == Model.output_names:
            declared_out = tuple(server_out)
        if set(declared_in) != set(server_in) or not set(declared_out) <= set(server_out):
            raise ModelLoadError(
                f"{type(self).__name__} declares input_names {list(type(self).input_names)} "
                f"and output_names {list(type(self).output_names)}, but model "
                f"{self.model_name!r} at {self.url} has inputs {server_in} and outputs "
                f"{server_out}; the inputs must match and the outputs must be among the "
                "server's"
            )
        self.input_names, self.output_names = declared_in, declared_out
        by_name = {spec.name: spec for spec in [*inputs, *outputs]}
        return [by_name[n] for n in declared_in], [by_name[n] for n in declared_out]

    def _load_v1_signature(self) -> None:
        dtypes = type(self).v1_dtypes

        def spec(name: str) -> TensorSpec:
            try:
                dtype = np.dtype(dtypes.get(name, "float32"))
            except TypeError:
                raise ConfigError(
                    f"{type(self).__name__}.v1_dtypes[{name!r}] = {dtypes[name]!r} is not a "
                    "numpy dtype; use a name such as 'float32' or 'int64'"
                ) from None
            return TensorSpec(name, dtype, cast(Any, None))

        self.inputs = [spec(name) for name in self.input_names]
        self.outputs = [spec(name) for name in self.output_names]

    # ---------------------------------------------------------------------- v2
    def _infer_v2(self, inputs: Arrays, wanted: list[str]) -> Arrays:
        body, headers = encode_infer_request(
            inputs,
            binary=self.binary,
            outputs=wanted,
            binary_outputs=self.binary,
        )
        path = self._model_path() + "/infer"
        where = self.url + path
        response = _ok(self._send("POST", path, body, headers), where)
        try:
            outputs, meta = decode_infer_response(
                response.body, response.headers.get(HEADER_LENGTH.lower())
            )
        except ProtocolError as exc:
            raise RemoteResponseError(f"malformed inference response: {exc}") from None
        version = meta.get("model_version")
        version = None if version is None else str(version)
        return self._accept(outputs, wanted, rows.count(inputs), version, where)

    def _accept(
        self, outputs: Arrays, wanted: list[str], count: int, version: str | None, where: str
    ) -> Arrays:
        """The ``wanted`` outputs checked against the signature; the version remembered."""
        specs = [spec for spec in self.outputs if spec.name in wanted]
        result = check_outputs(outputs, specs, count, where)
        if not self.allow_non_finite:
            refuse_non_finite(result, where)
        self._local.model_version = version
        return result

    # ---------------------------------------------------------------------- v1
    def _infer_v1(self, inputs: Arrays) -> Arrays:
        body = encode_v1_request(inputs, self.input_names)
        count = rows.count(inputs)
        path = f"/v1/models/{quote(self.model_name, safe='')}"
        if self.model_version:
            path += f"/versions/{quote(self.model_version, safe='')}"
        path += ":predict"
        where = self.url + path
        response = _ok(self._send("POST", path, body, _JSON), where)
        try:
            return decode_v1_response(_json_body(response, where), self.outputs, count, where)
        except ProtocolError as exc:
            raise RemoteResponseError(str(exc)) from None

    # ----------------------------------------------------------------- sending
    def _send(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        """One request with the configured headers and timeout; always a typed error."""
        try:
            return cast(Transport, self.transport).request(
                method, path, body, {**self.headers, **headers}, self.timeout_s
            )
        except RemoteError:
            raise
        except TimeoutError as exc:  # from a custom transport
            raise RemoteTimeoutError(
                f"{method} {self.url}{path} gave no answer within timeout_s="
                f"{self.timeout_s:g}: {exc}"
            ) from exc
        except OSError as exc:
            raise RemoteConnectionError(
                f"{method} {self.url}{path} failed: {exc}; is the server running?"
            ) from exc


def _ok(response: Response, where: str) -> Response:
    if 200 <= response.status < 300:
        return response
    raise RemoteStatusError(
        f"{where} answered HTTP {response.status}: {_error_message(response)}", response.status
    )


def _error_message(response: Response) -> str:
    """The server's ``{"error": ...}`` message, else the start of its body."""
    try:
        doc = json.loads(response.body)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    text = response.body[:200].decode("utf-8", errors="replace").strip()
    return text or "(empty body)"


def _json_body(response: Response, where: str) -> Any:
    try:
        return json.loads(response.body)
    except (ValueError, RecursionError) as exc:
        raise RemoteResponseError(
            f"{where}: expected a JSON answer, got "
            f"{response.body[:100].decode('utf-8', 'replace')!r} ({exc})"
        ) from None
