"""Exceptions raised by model_agnostic.

Every error says what was wrong and what was expected. All of them derive from
:class:`ModelAgnosticError`, so one ``except`` clause catches everything the
library raises on purpose; each also derives from the closest built-in
(``ValueError``, ``RuntimeError``, ``ImportError``) so generic handlers work.
"""

from __future__ import annotations

__all__ = [
    "ModelAgnosticError",
    "ConfigError",
    "InputError",
    "ImageDecodeError",
    "TensorSpecError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "ModelLoadError",
    "ArtifactError",
    "InferenceError",
    "ExportError",
    "MissingDependencyError",
    "ServingError",
    "ProtocolError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "QueueFullError",
    "RemoteError",
    "RemoteConnectionError",
    "RemoteTimeoutError",
    "RemoteStatusError",
    "RemoteResponseError",
]


class ModelAgnosticError(Exception):
    """Base class of every error model_agnostic raises on purpose."""


class ConfigError(ModelAgnosticError, ValueError):
    """A config file or option is missing, malformed, or names an unknown key."""


class InputError(ModelAgnosticError, ValueError):
    """A raw input given to a model cannot be used."""


class ImageDecodeError(InputError):
    """An image is missing, empty, truncated, too large, or not an image at all."""


class TensorSpecError(InputError):
    """An array's name, shape or dtype does not match what the model expects."""


class CheckpointError(ModelAgnosticError, ValueError):
    """A checkpoint cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs full unpickling, which can run arbitrary code."""


class ModelLoadError(ModelAgnosticError, RuntimeError):
    """A model class, ONNX file or backend cannot be loaded."""


class ArtifactError(ModelLoadError):
    """A model artifact is incomplete, tampered with, or unsafe to unpack."""


class InferenceError(ModelAgnosticError, RuntimeError):
    """The backend failed while running the model."""


class ExportError(ModelAgnosticError, RuntimeError):
    """A model could not be exported."""


class MissingDependencyError(ModelAgnosticError, ImportError):
    """An optional dependency is not installed."""


class ServingError(ModelAgnosticError, RuntimeError):
    """A request to a served model cannot be answered; ``status`` is its HTTP status."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ProtocolError(ModelAgnosticError, ValueError):
    """A message breaks the Open Inference Protocol (or TF Serving's REST API).

    ``status`` is a hint for a server answering it: 400 when a request is malformed, 500
    when what we were asked to encode (the model's outputs) cannot be carried.
    """

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ModelNotFoundError(ServingError, LookupError):
    """No served model (or version) has that name (HTTP 404)."""

    status = 404


class ModelNotReadyError(ServingError):
    """The model exists but is still loading or failed to load (HTTP 503)."""

    status = 503


class QueueFullError(ServingError):
    """The model's request queue is full; retry later (HTTP 503)."""

    status = 503


class RemoteError(ModelAgnosticError, RuntimeError):
    """The remote backend could not get an answer from its inference server."""


class RemoteConnectionError(RemoteError, ConnectionError):
    """The inference server cannot be reached (refused, reset, DNS)."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """The inference server did not answer within the configured timeout."""


class RemoteStatusError(RemoteError):
    """The inference server answered with a non-2xx status; carries its message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RemoteResponseError(RemoteError, ValueError):
    """The inference server's answer is malformed or does not fit the model."""
