"""What the data plane takes and gives: an HTTP-shaped :class:`Request` and
:class:`Response`, and the :class:`Limits` on what one request may ask."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import protocol
from ..errors import ConfigError
from ..images import DEFAULT_MAX_PIXELS

__all__ = ["Limits", "Request", "Response"]


@dataclass
class Request:
    """An HTTP request as the data plane sees it; header names are case-insensitive."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The query string, without the ``?`` (``top_k=3``).
    query: str = ""

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
        body = protocol.dumps(document, default=_jsonable)
        return cls(status, body, {"Content-Type": "application/json"})

    @classmethod
    def error(cls, message: str, status: int) -> Response:
        return cls.json({"error": message}, status)


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
