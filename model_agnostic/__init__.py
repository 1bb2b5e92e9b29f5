"""model_agnostic: write a model once, run it on PyTorch, ONNX Runtime or a remote server.

Importing this package never imports torch; the PyTorch backend imports it when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from . import errors
from .errors import *  # noqa: F403 - the public errors, listed in errors.__all__
from .images import load_image
from .model import Model
from .tensors import TensorSpec

if TYPE_CHECKING:
    from .backends.onnx_runtime import OnnxModel
    from .backends.pytorch import PyTorchModel
    from .backends.remote import RemoteModel
    from .backends.tf_savedmodel import TensorFlowModel
    from .config import load_model
    from .export import export_onnx

__all__ = [
    "__version__",
    "Model",
    "PyTorchModel",
    "OnnxModel",
    "RemoteModel",
    "TensorFlowModel",
    "load_model",
    "load_image",
    "export_onnx",
    "TensorSpec",
    *errors.__all__,
]

_LAZY = {
    "load_model": ".config",
    "PyTorchModel": ".backends.pytorch",
    "OnnxModel": ".backends.onnx_runtime",
    "RemoteModel": ".backends.remote",
    "TensorFlowModel": ".backends.tf_savedmodel",
    "export_onnx": ".export",
}


def __getattr__(name: str) -> Any:
    """Import config, backends and export on first use (they pull in onnxruntime / onnx)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model_agnostic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
