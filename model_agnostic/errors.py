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


class CheckpointError(ModelAgnosticError):
    """A checkpoint cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs full unpickling, which can run arbitrary code."""


class ModelLoadError(ModelAgnosticError):
    """A model class, ONNX file or backend cannot be loaded."""


class ArtifactError(ModelLoadError):
    """A model artifact is incomplete, tampered with, or unsafe to unpack."""


class InferenceError(ModelAgnosticError, RuntimeError):
    """The backend failed while running the model."""


class ExportError(ModelAgnosticError):
    """A model could not be exported."""


class MissingDependencyError(ModelAgnosticError, ImportError):
    """An optional dependency is not installed."""
