"""The ``[server]`` section as settings: where to listen (HTTP and gRPC), limits, access."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .dataplane import Limits

__all__ = ["TOKEN_ENV", "ServerOptions"]

#: Environment variable holding the bearer token (preferred to a file for containers).
TOKEN_ENV = "MODEL_AGNOSTIC_AUTH_TOKEN"


@dataclass
class ServerOptions:
    """The [server] section: where to listen, the limits, access control
    (``docs/serving.md``, ``docs/security.md``). ``grpc_port`` None: no gRPC service."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    threads: int = 16
    max_request_bytes: int = Limits.max_request_bytes
    max_json_depth: int = Limits.max_json_depth
    max_elements: int = Limits.max_elements
    max_image_pixels: int = Limits.max_image_pixels
    infer_timeout_s: float = Limits.infer_timeout_s
    read_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    version_policy: str = "latest"
    poll_interval_s: float = 1.0
    auth_token_file: str | None = None
    model_control: bool = False

    @classmethod
    def from_config(cls, section: dict[str, Any], **overrides: Any) -> ServerOptions:
        values = {**section, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    def limits(self) -> Limits:
        return Limits(
            self.max_request_bytes,
            self.max_json_depth,
            self.max_elements,
            self.max_image_pixels,
            self.infer_timeout_s,
        )

    def auth_token(self) -> str | None:
        """``$MODEL_AGNOSTIC_AUTH_TOKEN``, else the first non-blank line of ``auth_token_file``."""
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token and self.auth_token_file:
            try:
                text = Path(self.auth_token_file).read_text(encoding="utf-8")
                token = next((line.strip() for line in text.splitlines() if line.strip()), "")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read auth_token_file {self.auth_token_file!r}: {exc}"
                ) from None
            if not token:
                raise ConfigError(f"auth_token_file {self.auth_token_file!r} is empty")
        if token and len(token) < 16:
            raise ConfigError("the auth token must be at least 16 characters")
        return token or None
