"""HTTP transports for the remote backend: a pooled keep-alive client and a mock for tests.

A transport sends one request to the inference server and returns its :class:`Response`;
it raises only :class:`~model_agnostic.RemoteConnectionError`,
:class:`~model_agnostic.RemoteTimeoutError` or :class:`~model_agnostic.RemoteResponseError`
(a reply that is not HTTP). Paths are relative to the server URL.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..errors import (
    ConfigError,
    RemoteConnectionError,
    RemoteError,
    RemoteResponseError,
    RemoteTimeoutError,
)

__all__ = ["Response", "Transport", "Handler", "HTTPTransport", "MockTransport", "split_url"]

_CHUNK = 1 << 16
#: What a reused keep-alive connection raises when the server closed it while it sat idle.
_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers (keys lower-cased on creation) and the whole body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})


@runtime_checkable
class Transport(Protocol):
    """Sends requests to one inference server; see :class:`HTTPTransport`."""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        """Send ``method path`` and return the answer within ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Release pooled connections."""
        ...


#: ``handler(method, path, body, headers) -> Response`` for :class:`MockTransport`.
Handler = Callable[[str, str, "bytes | None", Mapping[str, str]], Response]


class MockTransport:
    """A transport that calls ``handler`` instead of the network (for tests and examples)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        return self.handler(method, path, body, dict(headers))

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MockTransport({self.handler!r})"


def split_url(url: str) -> tuple[str, str, int | None, str]:
    """``(scheme, host, port, path prefix)`` of an ``http(s)://`` URL, or a :class:`ConfigError`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"remote url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"remote url {url!r} must be an http:// or https:// URL with a host, "
            "e.g. 'http://127.0.0.1:8000'"
        )
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(
            f"remote url {url!r} must not carry a query, fragment or credentials; "
            "put credentials in [remote] headers"
        )
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


class HTTPTransport:
    """A thread-safe pool of keep-alive ``http.client`` connections to one server.

    At most ``max_connections`` are open at once; a caller that finds all of them busy
    waits for one within its timeout. Idle connections are reused last-in first-out.
    A reused connection that the server closed while idle is retried once on a fresh
    connection; nothing else is ever retried.

    Args:
        url: ``http://host:port[/prefix]`` or ``https://...`` (system CA certificates).
        max_connections: connections open at once.
        connect_timeout_s: limit on opening one connection (the request timeout also applies).
    """

    def __init__(self, url: str, max_connections: int = 8, connect_timeout_s: float = 5.0) -> None:
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise ConfigError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        if not connect_timeout_s > 0:
            raise ConfigError(f"connect_timeout_s must be > 0 seconds, got {connect_timeout_s!r}")
        self.scheme, self.host, self.port, self.prefix = split_url(url)
        self.url = url.rstrip("/")
        self.max_connections = max_connections
        self.connect_timeout_s = float(connect_timeout_s)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._ssl_context: Any = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        call = _Call(
            method,
            path,
            body,
            dict(headers),
            timeout,
            time.monotonic() + timeout,
            f"{method} {self.url}{path}",
        )
        if not self._slots.acquire(timeout=timeout):
            raise RemoteTimeoutError(
                f"all {self.max_connections} connections to {self.url} stayed busy for the "
                f"{timeout:g} s timeout; raise max_connections or timeout_s"
            )
        try:
            if self._closed:
                raise RemoteConnectionError(f"the transport to {self.url} was closed")
            conn = self._take_idle()
            if conn is not None:
                try:
                    return self._exchange(conn, True, call)
                except _StaleConnection:
                    pass  # closed by the server while idle: retry once on a fresh connection
            return self._exchange(self._connect(call), False, call)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close idle connections now and busy ones when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @property
    def idle_connections(self) -> int:
        """Open keep-alive connections waiting in the pool."""
        return len(self._idle)

    def __repr__(self) -> str:
        return f"HTTPTransport({self.url!r}, max_connections={self.max_connections})"

    # ----------------------------------------------------------------- internals
    def _take_idle(self) -> http.client.HTTPConnection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self, call: _Call) -> http.client.HTTPConnection:
        limit = min(self.connect_timeout_s, _remaining(call))
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=limit, context=self._context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=limit)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise RemoteTimeoutError(
                f"connecting to {self.url} took longer than {limit:g} s "
                f"(connect_timeout_s={self.connect_timeout_s:g}); is the server overloaded?"
            ) from None
        except socket.gaierror as exc:
            conn.close()
            raise RemoteConnectionError(
                f"cannot resolve host {self.host!r} of {self.url}: {exc}; check the url"
            ) from None
        except OSError as exc:  # refused, unreachable, TLS handshake failure
            conn.close()
            hint = "is the server running?"
            if self.scheme == "https" and "SSL" in type(exc).__name__:
                hint = "check the server's certificate, or whether it speaks https at all"
            raise RemoteConnectionError(f"cannot connect to {self.url}: {exc}; {hint}") from None
        return conn

    def _context(self) -> Any:
        import ssl

        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return self._ssl_context

    def _exchange(self, conn: http.client.HTTPConnection, reused: bool, call: _Call) -> Response:
        sock = conn.sock  # kept: http.client drops it from conn when the answer closes it
        try:
            _set_timeout(sock, call)
            conn.request(call.method, self.prefix + call.path, body=call.body, headers=call.headers)
            answer = conn.getresponse()
        except _STALE as exc:
            conn.close()
            if reused:
                raise _StaleConnection from exc
            raise _failure(exc, call) from None
        except (OSError, http.client.HTTPException, RemoteError) as exc:
            conn.close()
            raise _failure(exc, call) from None
        try:
            data = _read_body(answer, sock, call)
        except (OSError, http.client.HTTPException, RemoteError) as exc:
            answer.close()
            conn.close()
            raise _failure(exc, call) from None
        if answer.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return Response(answer.status, dict(answer.getheaders()), data)


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    timeout: float
    deadline: float
    where: str


class _StaleConnection(Exception):
    """A reused connection turned out closed before any byte of the answer arrived."""


def _remaining(call: _Call) -> float:
    left = call.deadline - time.monotonic()
    if left <= 0:
        raise _timeout(call)
    return left


def _timeout(call: _Call) -> RemoteTimeoutError:
    return RemoteTimeoutError(
        f"{call.where} gave no complete answer within the {call.timeout:g} s timeout "
        "(timeout_s); the server is slow or stuck"
    )


def _set_timeout(sock: Any, call: _Call) -> None:
    if sock is not None:
        sock.settimeout(_remaining(call))


def _read_body(answer: http.client.HTTPResponse, sock: Any, call: _Call) -> bytes:
    chunks: list[bytes] = []
    while True:
        _set_timeout(sock, call)
        chunk = answer.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _failure(exc: BaseException, call: _Call) -> RemoteError:
    """The typed error for what went wrong during one exchange."""
    where = call.where
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, TimeoutError):
        return _timeout(call)
    if isinstance(exc, http.client.IncompleteRead):
        return RemoteConnectionError(
            f"{where}: the server closed the connection mid-answer "
            f"({len(exc.partial)} bytes read, {exc.expected} more expected)"
        )
    if isinstance(exc, http.client.RemoteDisconnected):
        return RemoteConnectionError(
            f"{where}: the server closed the connection without answering; is it healthy?"
        )
    if isinstance(exc, OSError):
        return RemoteConnectionError(f"{where} failed: {exc}; is the server running?")
    return RemoteResponseError(f"{where}: the answer is not valid HTTP: {exc!r}")
