"""Remote backend: the user's hooks run here, ``infer`` runs on an inference server over HTTP.

Two protocols: ``"v2"``, the Open Inference Protocol (KServe v2, Triton), with the binary
tensor extension by default; and ``"v1"``, TF-Serving / KServe v1 ``:predict``. Only the
standard library is used: :class:`~model_agnostic.backends.transport.HTTPTransport` pools
keep-alive ``http.client`` connections.
"""

from __future__ import annotations

import json
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
from ..tensors import TensorSpec, describe_spec, is_fixed
from .transport import HTTPTransport, MockTransport, Response, Transport

__all__ = ["RemoteModel", "PROTOCOLS", "Transport", "HTTPTransport", "MockTransport", "Response"]

#: The protocols :class:`RemoteModel` speaks.
PROTOCOLS = ("v2", "v1")

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class RemoteModel(Model):
    """Runs ``infer`` on a remote inference server; preprocessing and results stay local.

    Args:
        url: the server, ``http://host:port`` (an optional path prefix and https work).
        model_name: the model's name on the server.
        model_version: a version to pin; ``None`` lets the server choose.
        protocol: ``"v2"`` (Open Inference Protocol) or ``"v1"`` (TF-Serving ``:predict``).
        binary: v2 only: send and receive tensors with the binary tensor extension
            (default); ``False`` uses plain JSON.
        timeout_s: limit on one request, waiting for a pooled connection included.
        connect_timeout_s: limit on opening one connection.
        max_connections: connections kept open to the server at most.
        headers: extra HTTP headers on every request (e.g. ``Authorization``).
        transport: sends the requests; default an :class:`HTTPTransport` to ``url``.
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
        binary: bool = True,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
        transport: Transport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        _check_settings(url, model_name, protocol, timeout_s, headers)
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.model_version = model_version
        self.protocol = protocol
        self.binary = bool(binary)
        self.timeout_s = float(timeout_s)
        self.headers = dict(headers or {})
        self.transport: Transport = transport or HTTPTransport(
            url, max_connections=max_connections, connect_timeout_s=connect_timeout_s
        )
        self._local = threading.local()
        try:
            if protocol == "v2":
                self._load_v2_signature()
            else:
                self._load_v1_signature()
        except BaseException:
            if transport is None:
                self.transport.close()
            raise

    # ----------------------------------------------------------------- public
    def infer(self, inputs: Arrays) -> Arrays:
        if self.protocol == "v1":
            return self._infer_v1(inputs)
        return self._infer_v2(inputs)

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
            f"{self.url} model {self.model_name!r}{version}>"
        )

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
            version = f" version {self.model_version!r}" if self.model_version else ""
            raise ModelLoadError(
                f"the server at {self.url} does not serve model {self.model_name!r}{version} "
                f"(GET {path} answered 404: {_error_message(response)}); check model_name "
                "and model_version"
            )
        doc = _json_body(_ok(response, self.url + path), self.url + path)
        try:
            inputs, outputs = specs_from_metadata(doc)
        except ProtocolError as exc:
            raise RemoteResponseError(f"{self.url + path}: {exc}") from None
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
    def _infer_v2(self, inputs: Arrays) -> Arrays:
        body, headers = encode_infer_request(
            inputs,
            binary=self.binary,
            outputs=list(self.output_names),
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
        result = _check_outputs(outputs, self.outputs, rows.count(inputs), where)
        version = meta.get("model_version")
        self._local.model_version = None if version is None else str(version)
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
            return self.transport.request(
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


def _check_outputs(outputs: Arrays, specs: Sequence[TensorSpec], count: int, where: str) -> Arrays:
    """The outputs ``specs`` names, each with ``count`` rows and the spec's dtype and dims."""
    result = {}
    for spec in specs:
        if spec.name not in outputs:
            raise RemoteResponseError(
                f"{where}: the answer lacks output {spec.name!r}; it has {sorted(outputs)}"
            )
        array = outputs[spec.name]
        dims = spec.shape
        fits = dims is None or (
            array.ndim == len(dims)
            and all(not is_fixed(want) or want == got for want, got in zip(dims, array.shape))
        )
        if array.ndim == 0 or array.shape[0] != count or not fits or array.dtype != spec.dtype:
            raise RemoteResponseError(
                f"{where}: output {spec.name!r} came back as {list(array.shape)} "
                f"{array.dtype}, expected {describe_spec(spec)} with {count} rows (the batch)"
            )
        result[spec.name] = array
    return result


def _check_settings(
    url: str,
    model_name: str,
    protocol: str,
    timeout_s: float,
    headers: Mapping[str, str] | None,
) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"remote protocol {protocol!r} is not one of {list(PROTOCOLS)}")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"remote url must be a non-empty string, got {url!r}")
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"remote model_name must be a non-empty string, got {model_name!r}")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    bad = {
        k: v for k, v in (headers or {}).items() if not (isinstance(k, str) and isinstance(v, str))
    }
    if bad:
        raise ConfigError(f"remote headers must map strings to strings, got {bad!r}")


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
